"""A VLM backend that runs past the deadline: one generate at a time, breaker, shared deadline.

The backend is the real `TransformersBackend` on the tiny model; a transformers streamer that
sleeps on every token makes each generate take seconds (a slow GPU, a long prompt), far past
the engine's deadline. Nothing of ours is patched: the lock, the breaker and the deadline are
exercised as they run in a replica.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from transformers.generation.streamers import BaseStreamer

from pipelines.config import BackendConfig, VLMConfig
from pipelines.vlm.engine import VLMEngine
from pipelines.vlm.registry import model_label
from pipelines.vlm.transformers_backend import TransformersBackend
from pipelines.vlm.types import VLMRequest
from tests.support.media import jpeg

TOKENS = 8  # new tokens per generate (min_new_tokens forces the full length)
SLOW_S = 0.4  # per streamed step: a generate takes about (TOKENS + 1) * SLOW_S
DEADLINE_S = 0.8  # the camera's deadline of a request that must be late
RELAXED_S = 60.0  # of a request that must not be (a busy machine may be slow)


class SlowStreamer(BaseStreamer):
    """Sleeps on every step transformers streams (the prompt, then each new token)."""

    def __init__(self) -> None:
        self.delay = SLOW_S

    def put(self, value: Any) -> None:
        time.sleep(self.delay)

    def end(self) -> None:
        pass


def _jpeg() -> bytes:
    return jpeg((120, 80, 40), (64, 48), stripe=False, quality=75)


def request(rid: str, deadline_s: float = RELAXED_S) -> VLMRequest:
    """A request whose deadline (set by the camera) is RELAXED_S away unless given."""
    return VLMRequest.expiring(
        deadline_s, camera_id="door", camera_name="Door", frames=(_jpeg(),), request_id=rid
    )


def late(rid: str) -> VLMRequest:
    """A request that the slow backend cannot answer by its deadline."""
    return request(rid, DEADLINE_S)


def slow_backend(model: Path, streamer: SlowStreamer) -> TransformersBackend:
    config = BackendConfig(backend="transformers", model=str(model))
    kwargs = {"streamer": streamer, "min_new_tokens": TOKENS}
    return TransformersBackend(config, max_new_tokens=TOKENS, device="cpu", generate_kwargs=kwargs)


async def _until_idle(backend: TransformersBackend, streamer: SlowStreamer | None = None) -> None:
    """Wait for the abandoned generate to end; with `streamer`, its remaining steps run at
    once (what a test checks has happened by then, and each step would be SLOW_S more)."""
    delay = streamer.delay if streamer is not None else 0.0
    if streamer is not None:
        streamer.delay = 0.0
    while backend.busy:
        await asyncio.sleep(0.05)
    if streamer is not None:
        streamer.delay = delay


def test_late_twice_never_two_generates_at_once_and_not_benched(tiny_model: Path) -> None:
    streamer = SlowStreamer()
    backend = slow_backend(tiny_model, streamer)
    engine = VLMEngine([backend], deadline_s=2 * RELAXED_S, bench_after=3)

    async def scenario() -> dict[str, Any]:
        await engine.start()
        first = await engine.describe(late("a"))  # late: its generate runs on
        after_first = engine.stats()["backends"][backend.name]
        second = await engine.describe(late("b"))  # waits for that generate: late too
        after_second = engine.stats()["backends"][backend.name]
        await _until_idle(backend, streamer)
        streamer.delay = 0.0
        third = await engine.describe(request("c"))
        return {
            "results": (first, second, third),
            "after_first": after_first,
            "after_second": after_second,
            "end": engine.stats(),
        }

    out = asyncio.run(scenario())
    first, second, third = out["results"]
    assert first.provider_used is None and second.provider_used is None  # fallback text
    # one slow batch does not bench the primary; neither do two
    assert out["after_first"]["state"] == "ok" and out["after_first"]["consecutive_failures"] == 1
    assert out["after_second"]["state"] == "ok"
    assert out["after_second"]["consecutive_failures"] == 2
    assert third.provider_used == backend.name  # the primary answers again ...
    end = out["end"]
    assert end["deadline_exceeded"] == 2
    counters = end["backends"][backend.name]
    assert counters["consecutive_failures"] == 0 and counters["benched"] == 0  # ... and resets
    # the second batch waited for the abandoned generate instead of starting its own
    assert counters["max_generates_running"] == 1
    assert counters["generates"] == 2 and counters["generates_abandoned"] == 1


def test_busy_primary_is_skipped_for_a_fallback_then_benched_after_three(
    tiny_model: Path, tmp_path: Path
) -> None:
    streamer = SlowStreamer()
    primary = slow_backend(tiny_model, streamer)
    other = tmp_path / "tiny-fallback"  # the same weights under another name
    other.symlink_to(tiny_model, target_is_directory=True)
    fallback = TransformersBackend(
        BackendConfig(backend="transformers", model=str(other)), max_new_tokens=4
    )
    assert fallback.name != primary.name
    engine = VLMEngine([primary, fallback], deadline_s=2 * RELAXED_S, bench_after=3)

    async def scenario() -> list[Any]:
        await primary.start()
        await fallback.start()
        seen = []
        for rid in ("a", "b", "c"):
            missed = await engine.describe(late(rid))  # the primary is late ...
            served = await engine.describe(request(rid + "2"))  # ... and busy: fallback serves
            seen.append((missed, served, engine.stats()["backends"][primary.name]))
            await _until_idle(primary, streamer)
        return seen

    rounds = asyncio.run(scenario())
    for i, (missed, served, stats) in enumerate(rounds, start=1):
        assert missed.provider_used is None
        assert served.provider_used == fallback.name
        assert stats["consecutive_failures"] == i
        assert stats["max_generates_running"] == 1
        assert stats["state"] == ("failed" if i == 3 else "ok")  # benched at the third
    assert engine.stats()["skipped_busy"] == 2  # the third time it was benched, not busy


def test_engine_stops_at_the_request_deadline(tiny_model: Path) -> None:
    """The camera's deadline (carried by the request) ends the engine's wait too."""
    streamer = SlowStreamer()
    backend = slow_backend(tiny_model, streamer)
    engine = VLMEngine([backend], deadline_s=600)  # the engine's own cap is far away

    async def scenario() -> Any:
        await engine.start()
        result = await engine.describe(late("a"))
        expired = await engine.describe(request("b", deadline_s=-1))
        await _until_idle(backend, streamer)
        return result, expired

    result, expired = asyncio.run(scenario())
    # answered with the fallback text: the engine did not wait for the generate to finish
    assert result.provider_used is None and expired.provider_used is None
    stats = engine.stats()
    assert stats["deadline_exceeded"] == 2
    # a request already past its deadline never reaches the model
    assert stats["backends"][backend.name]["generates"] == 1


def test_provider_used_holds_no_filesystem_path(tiny_model: Path) -> None:
    backend = TransformersBackend(
        BackendConfig(backend="transformers", model=str(tiny_model)), max_new_tokens=4
    )
    engine = VLMEngine([backend])
    result = asyncio.run(engine.describe(request("a")))
    assert result.provider_used == "transformers:tiny-vlm"
    assert str(tiny_model.parent) not in result.provider_used
    assert os.sep not in result.provider_used.split(":", 1)[1]


@pytest.mark.parametrize(
    ("model", "label"),
    [
        ("HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceTB/SmolVLM-256M-Instruct"),
        ("llava:7b", "llava:7b"),
        ("/tmp/models/smolvlm/", "smolvlm"),
        ("~/models/my-vlm", "my-vlm"),
        ("./models/my-vlm", "my-vlm"),
        ("C:\\models\\vlm", "vlm"),
        ("/", "local-model"),
    ],
)
def test_model_label(model: str, label: str) -> None:
    assert model_label(model) == label


def test_model_label_of_an_existing_relative_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models" / "vlm-q4").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert model_label("models/vlm-q4") == "vlm-q4"


def test_bench_after_failures_is_configurable() -> None:
    config = VLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m")
    assert config.bench_after_failures == 3
    engine = VLMEngine.from_config(config.model_copy(update={"bench_after_failures": 5}))
    assert engine.bench_after == 5
