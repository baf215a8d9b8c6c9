"""Confidence from `logprobs` with a local server speaking the OpenAI chat completions API."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipelines.config import VLMConfig
from pipelines.vlm.engine import VLMEngine
from pipelines.vlm.types import VLMRequest

ANSWER = {"description": "A person at the door", "objects": ["person"], "confidence": 95}
TOKEN_PROBS = [0.9, 0.6, 0.3, 0.8]  # mean 0.65


class LogprobServer:
    """Models: `lp` returns logprobs when asked, `plain` never does, `strict` answers 400 to a
    request that asks for them (as some servers do)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                if body["model"] == "strict" and "logprobs" in body:
                    return self.reply(400, {"error": {"message": "unknown field logprobs"}})
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": {"role": "assistant", "content": json.dumps(ANSWER)},
                }
                if body["model"] == "lp" and body.get("logprobs"):
                    choice["logprobs"] = {
                        "content": [
                            {"token": f"t{i}", "logprob": math.log(p), "top_logprobs": []}
                            for i, p in enumerate(TOKEN_PROBS)
                        ]
                    }
                self.reply(200, {"choices": [choice]})

            def reply(self, status: int, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[LogprobServer]:
    srv = LogprobServer()
    try:
        yield srv
    finally:
        srv.close()


def describe(server: LogprobServer, model: str, times: int = 1) -> list[Any]:
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


def test_confidence_comes_from_returned_logprobs(server: LogprobServer) -> None:
    (result,) = describe(server, "lp")
    assert server.bodies[0]["logprobs"] is True
    assert result.provider_used == "openai:lp"
    assert result.confidence == 65 and result.confidence_source == "logprobs"
    assert result.ai_confidence == 95  # the model's own statement, kept apart


def test_without_logprobs_the_stated_value_is_used_and_labelled(server: LogprobServer) -> None:
    (result,) = describe(server, "plain")
    assert server.bodies[0]["logprobs"] is True  # asked, but the server did not return them
    assert (result.confidence, result.ai_confidence, result.confidence_source) == (
        95,
        95,
        "stated",
    )


def test_a_server_refusing_logprobs_is_asked_without_them(server: LogprobServer) -> None:
    first, second = describe(server, "strict", times=2)
    assert [("logprobs" in b) for b in server.bodies] == [True, False, False]
    for result in (first, second):
        assert result.provider_used == "openai:strict"
        assert (result.confidence, result.confidence_source) == (95, "stated")
