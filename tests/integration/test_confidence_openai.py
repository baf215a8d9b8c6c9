"""Confidence from `logprobs` with a local server speaking the OpenAI chat completions API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from pipelines.config import VLMConfig
from pipelines.vlm.engine import VLMEngine
from pipelines.vlm.types import VLMRequest
from tests.support.openai_server import ChatRequest, FakeOpenAI, Reply, serve_fake

ANSWER = {"description": "A person at the door", "objects": ["person"], "confidence": 95}
TOKEN_PROBS = [0.9, 0.6, 0.3, 0.8]  # mean 0.65


def logprob_models(request: ChatRequest) -> Reply:
    """Models: `lp` returns logprobs when asked, `plain` never does, `strict` answers 400 to a
    request that asks for them (as some servers do)."""
    if request.model == "strict" and "logprobs" in request.body:
        return Reply("unknown field logprobs", status=400)
    probs = TOKEN_PROBS if request.model == "lp" else None
    return Reply(json.dumps(ANSWER), token_probs=probs)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    yield from serve_fake(logprob_models)


def bodies(server: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.body for r in server.requests]


def describe(server: FakeOpenAI, model: str, times: int = 1) -> list[Any]:
    engine = VLMEngine.from_config(
        VLMConfig(backend="openai", model=model, base_url=server.base_url, max_new_tokens=40)
    )
    request = VLMRequest("door", "Door", (b"\xff\xd8fake\xff\xd9",), request_id="r")

    async def run() -> list[Any]:
        try:
            return [await engine.describe(request) for _ in range(times)]
        finally:
            await engine.close()

    return asyncio.run(run())


def test_confidence_comes_from_returned_logprobs(server: FakeOpenAI) -> None:
    (result,) = describe(server, "lp")
    assert bodies(server)[0]["logprobs"] is True
    assert result.provider_used == "openai:lp"
    assert result.confidence == 65 and result.confidence_source == "logprobs"
    assert result.ai_confidence == 95  # the model's own statement, kept apart


def test_without_logprobs_the_stated_value_is_used_and_labelled(server: FakeOpenAI) -> None:
    (result,) = describe(server, "plain")
    assert bodies(server)[0]["logprobs"] is True  # asked, but the server did not return them
    assert (result.confidence, result.ai_confidence, result.confidence_source) == (
        95,
        95,
        "stated",
    )


def test_a_server_refusing_logprobs_is_asked_without_them(server: FakeOpenAI) -> None:
    first, second = describe(server, "strict", times=2)
    assert [("logprobs" in b) for b in bodies(server)] == [True, False, False]
    for result in (first, second):
        assert result.provider_used == "openai:strict"
        assert (result.confidence, result.confidence_source) == (95, "stated")
