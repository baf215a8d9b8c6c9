"""OpenAIBackend and VLMEngine fail-over against a local server speaking /v1/chat/completions."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pipelines.config import VLMConfig
from pipelines.vlm.backends import VLMEngine
from pipelines.vlm.types import VLMRequest
from tests.support.network import free_port
from tests.support.openai_server import Answer, ChatRequest, FakeOpenAI, Reply, serve_fake

ANSWER = {"description": "A person at the door", "objects": ["woman"], "confidence": 0.9}


def by_model() -> Answer:
    """Behaviour chosen by the request's `model`: ok, fail-500, hang (3 s), flaky-429 (once)."""
    seen: Counter[str] = Counter()

    def answer(request: ChatRequest) -> Reply:
        seen[request.model] += 1
        if request.model == "fail-500":
            return Reply("boom", status=500)
        if request.model == "flaky-429" and seen[request.model] == 1:
            return Reply("slow down", status=429, headers={"Retry-After": "0.1"})
        content = "```json\n" + json.dumps(ANSWER) + "\n```"
        return Reply(content, delay_s=3 if request.model == "hang" else 0)

    return answer


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    yield from serve_fake(by_model())


FRAME = b"\xff\xd8\xff\xe0fake-jpeg-bytes\xff\xd9"


def request(rid: str = "r1", frames: int = 1) -> VLMRequest:
    return VLMRequest("front_door", "Front Door", (FRAME,) * frames, request_id=rid)


def engine(
    primary: dict[str, Any], *fallbacks: dict[str, Any], cooldown_s: float = 30
) -> VLMEngine:
    config = VLMConfig(backend="openai", **primary, fallback=list(fallbacks), max_new_tokens=50)
    return VLMEngine.from_config(config, cooldown_s=cooldown_s)


def test_success_sends_openai_request(fake_openai: FakeOpenAI) -> None:
    eng = engine({"model": "ok", "base_url": fake_openai.base_url, "api_key": "sk-test-123"})
    result = asyncio.run(eng.describe(request(frames=2)))
    assert result.provider_used == "openai:ok"
    assert (result.description, result.objects) == ("A person at the door", ("person",))
    assert (result.confidence, result.ai_confidence) == (90, 90)
    assert result.analysis_mode == "multi_frame" and result.request_id == "r1"
    (call,) = fake_openai.requests
    assert call.path == "/v1/chat/completions"
    assert call.auth == "Bearer sk-test-123"
    body = call.body
    assert body["response_format"] == {"type": "json_object"}
    assert body["max_tokens"] == 50
    parts = body["messages"][0]["content"]
    assert "Front Door" in parts[0]["text"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert urls == ["data:image/jpeg;base64," + base64.b64encode(FRAME).decode()] * 2


def test_429_is_retried_then_succeeds(fake_openai: FakeOpenAI) -> None:
    eng = engine({"model": "flaky-429", "base_url": fake_openai.base_url})
    result = asyncio.run(eng.describe(request()))
    assert result.provider_used == "openai:flaky-429"
    assert fake_openai.models_called() == ["flaky-429", "flaky-429"]
    assert fake_openai.requests[0].auth is None
    assert eng.stats()["backends"]["openai:flaky-429"]["state"] == "ok"


def test_500_falls_back_to_next_backend(fake_openai: FakeOpenAI) -> None:
    eng = engine(  # benched at the first failed batch (the breaker's smallest setting)
        {"model": "fail-500", "base_url": fake_openai.base_url, "bench_after_failures": 1},
        {"backend": "openai", "model": "ok", "base_url": fake_openai.base_url},
    )
    first, second = asyncio.run(eng.describe_batch([request("a"), request("b")]))
    assert (first.request_id, second.request_id) == ("a", "b")
    assert first.provider_used == second.provider_used == "openai:ok"
    # three attempts per request on the failing backend, then one call each on the fallback
    assert fake_openai.models_called().count("fail-500") == 6
    assert fake_openai.models_called().count("ok") == 2
    stats = eng.stats()
    assert stats["backends"]["openai:fail-500"]["state"] == "failed"
    assert "500" in stats["backends"]["openai:fail-500"]["last_error"]
    # while cooling down the failed primary is skipped outright
    third = asyncio.run(eng.describe(request("c")))
    assert third.provider_used == "openai:ok"
    assert fake_openai.models_called().count("fail-500") == 6


def test_hang_times_out_and_falls_back(fake_openai: FakeOpenAI) -> None:
    eng = engine(
        {"model": "hang", "base_url": fake_openai.base_url, "timeout_s": 0.5},
        {"backend": "openai", "model": "ok", "base_url": fake_openai.base_url},
    )
    started = time.monotonic()
    result = asyncio.run(eng.describe(request()))
    assert time.monotonic() - started < 2.5
    assert result.provider_used == "openai:ok"
    assert "timeout" in eng.stats()["backends"]["openai:hang"]["last_error"]


def test_all_backends_down_gives_fallback_result_then_retries_lazily(
    fake_openai: FakeOpenAI,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    eng = engine(
        {"model": "fail-500", "base_url": fake_openai.base_url, "bench_after_failures": 1},
        {"backend": "openai", "model": "gone", "base_url": dead},
        cooldown_s=1.0,
    )
    for backend in eng.backends:  # keep the retry pauses short here
        backend.backoff_base_s = 0.02  # type: ignore[attr-defined]
    result = asyncio.run(eng.describe(request("x", frames=3)))
    assert result.description == "Motion detected on Front Door"
    assert (result.objects, result.confidence, result.ai_confidence) == ((), 0, None)
    assert result.provider_used is None and result.request_id == "x"
    assert result.analysis_mode == "multi_frame"
    stats = eng.stats()
    assert stats["fallbacks"] == 1
    assert {b["state"] for b in stats["backends"].values()} == {"failed"}
    time.sleep(1.05)  # cool-down over: the primary is tried again by the next request
    calls = len(fake_openai.requests)
    asyncio.run(eng.describe(request("y")))
    assert len(fake_openai.requests) == calls + 3


def test_deadline_bounds_a_hung_primary_and_benches_it(fake_openai: FakeOpenAI) -> None:
    config = VLMConfig(
        backend="openai",
        model="hang",  # answers after 3 s, long before its 30 s timeout but after the deadline
        base_url=fake_openai.base_url,
        timeout_s=30,
        deadline_s=1.0,
        bench_after_failures=1,  # one late batch benches it (the default waits for three)
        fallback=[{"backend": "openai", "model": "ok", "base_url": fake_openai.base_url}],
    )
    eng = VLMEngine.from_config(config)
    started = time.monotonic()
    first = asyncio.run(eng.describe(request("a")))
    assert time.monotonic() - started < 1.8
    assert first.provider_used is None and first.description == "Motion detected on Front Door"
    stats = eng.stats()
    assert stats["deadline_exceeded"] == 1 and stats["fallbacks"] == 1
    assert stats["backends"]["openai:hang"]["state"] == "failed"
    assert "deadline" in stats["backends"]["openai:hang"]["last_error"]
    # benched: the next event goes straight to the fallback, well within the deadline
    started = time.monotonic()
    second = asyncio.run(eng.describe(request("b")))
    assert time.monotonic() - started < 1.0
    assert second.provider_used == "openai:ok"
    assert fake_openai.models_called().count("hang") == 1
