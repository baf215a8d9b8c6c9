"""The tiny random-weight Idefics3 model through the real TransformersBackend and VLMEngine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipelines.config import VLMConfig
from pipelines.vlm.backends import TransformersBackend, VLMEngine
from pipelines.vlm.parsing import MAX_DESCRIPTION_CHARS
from pipelines.vlm.tiny import build_tiny_vlm
from pipelines.vlm.types import VLMRequest, VLMResult
from tests.support.media import jpeg


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> VLMEngine:
    eng = VLMEngine.from_config(VLMConfig(model=str(tiny_model), max_new_tokens=16))
    asyncio.run(eng.start())
    return eng


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def assert_sane(result: VLMResult, tiny_model: Path) -> None:
    assert isinstance(result.confidence, int) and 0 <= result.confidence <= 100
    assert isinstance(result.description, str) and len(result.description) <= MAX_DESCRIPTION_CHARS
    assert "<end_of_utterance>" not in result.description
    assert all(isinstance(o, str) and o == o.lower() for o in result.objects)
    assert result.provider_used == f"transformers:{tiny_model.name}"  # never a path
    assert result.ai_confidence is None or 0 <= result.ai_confidence <= 100
    assert result.latency_ms > 0


def test_build_is_idempotent_and_loads(tiny_model: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    stamp = (tiny_model / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_vlm(tiny_model) == tiny_model
    assert (tiny_model / "model.safetensors").stat().st_mtime_ns == stamp
    processor = AutoProcessor.from_pretrained(tiny_model)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"
    assert processor.image_seq_len == 4
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 2_000_000


def test_single_frame(engine: VLMEngine, tiny_model: Path) -> None:
    request = VLMRequest("front_door", "Front Door", (jpeg((200, 30, 30)),), request_id="one")
    result = run(engine.describe(request))
    assert result.request_id == "one"
    assert result.analysis_mode == "single_frame"
    assert_sane(result, tiny_model)


def test_multi_frame(engine: VLMEngine, tiny_model: Path) -> None:
    frames = (jpeg((10, 10, 200)), jpeg((10, 200, 10)), jpeg((200, 200, 10), size=(64, 96)))
    request = VLMRequest("yard", "Yard", frames, prompt="Mention any dogs.", request_id="multi")
    result = run(engine.describe(request))
    assert result.request_id == "multi"
    assert result.analysis_mode == "multi_frame"
    assert_sane(result, tiny_model)


def test_mixed_batch_maps_back_to_requests(engine: VLMEngine, tiny_model: Path) -> None:
    requests = [
        VLMRequest(
            f"cam{i}",
            f"Camera {i}",
            tuple(
                jpeg(((37 * i + 11 * k) % 256, (91 * i) % 256, (53 * k) % 256)) for k in range(n)
            ),
            prompt="Watch the gate." if i % 2 else None,
            request_id=f"req-{i}",
        )
        for i, n in enumerate([1, 3, 2, 1, 1, 2])
    ]
    before = engine.stats()
    batched = run(engine.describe_batch(requests))
    after = engine.stats()
    assert after["batches"] == before["batches"] + 1
    assert after["images"] - before["images"] == 10
    assert [r.request_id for r in batched] == [r.request_id for r in requests]
    for request, result in zip(requests, batched, strict=True):
        assert result.analysis_mode == request.analysis_mode
        assert_sane(result, tiny_model)
    # each batched answer is the one that request gets on its own (greedy decoding)
    alone = [run(engine.describe(r)) for r in reversed(requests)][::-1]
    assert [r.description for r in batched] == [r.description for r in alone]
    assert len({r.description for r in batched}) > 1


def test_bad_frame_and_no_frames_fall_back_without_failing_backend(
    engine: VLMEngine, tiny_model: Path
) -> None:
    requests = [
        VLMRequest("a", "Garage", (b"not a jpeg",), request_id="bad"),
        VLMRequest("b", "Porch", (), request_id="empty"),
        VLMRequest("c", "Drive", (jpeg((1, 2, 3)),), request_id="good"),
    ]
    bad, empty, good = run(engine.describe_batch(requests))
    assert (bad.description, bad.provider_used, bad.confidence) == (
        "Motion detected on Garage",
        None,
        0,
    )
    assert (empty.request_id, empty.description) == ("empty", "Motion detected on Porch")
    assert good.provider_used == f"transformers:{tiny_model.name}"
    assert engine.stats()["backends"][f"transformers:{tiny_model.name}"]["state"] == "ok"


def test_missing_model_fails_over_to_fallback_result(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    eng = VLMEngine.from_config(VLMConfig(model=missing, max_new_tokens=4))
    result = run(eng.describe(VLMRequest("c", "Back Yard", (jpeg((9, 9, 9)),), request_id="x")))
    assert result.description == "Motion detected on Back Yard"
    assert result.provider_used is None and result.request_id == "x"
    state = eng.stats()["backends"]["transformers:no-such-model"]
    assert state["state"] == "failed" and state["failures"] == 1
    assert "no-such-model" in state["last_error"]
    assert "no-such-model" in eng.load_errors()["transformers:no-such-model"]


def test_build_tiny_if_missing_substitutes_tiny_model(
    tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = VLMConfig(model="/no/such/model", build_tiny_if_missing=True, max_new_tokens=4)
    eng = VLMEngine.from_config(config, tiny_dir=tiny_model)
    result = run(eng.describe(VLMRequest("c", "Side", (jpeg((5, 99, 5)),), request_id="t")))
    assert result.provider_used == f"transformers:{tiny_model.name}"
    assert any("GIBBERISH" in rec.getMessage() for rec in caplog.records)
    backend = eng.backends[0]
    assert isinstance(backend, TransformersBackend) and backend.device == "cpu"
