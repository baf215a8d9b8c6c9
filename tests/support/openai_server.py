"""A local server speaking OpenAI's /v1/chat/completions, the one fake of a remote VLM provider.

The protocol is real HTTP; only the model behind it is the test's: a canned `Reply`, or a
function of each request that picks status, content, delay and logprobs (often by the request's
`model`, so one server plays several backends). Every request is recorded, with how many were
open at once; `release()` cuts every delay short (a "hung" backend answers at once).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What the `slow`/`hang` models of `paced()` answer: real JSON, so events carry VLM text.
DESCRIPTION = "A person walks across the yard"
PACED_ANSWER = json.dumps({"description": DESCRIPTION, "objects": ["person"], "confidence": 80})


@dataclass(frozen=True)
class ChatRequest:
    """One POST the server received: its path, Authorization header, JSON body and 1-based order."""

    path: str
    auth: str | None
    body: dict[str, Any]
    number: int

    @property
    def model(self) -> str:
        """The `model` the client asked for."""
        return str(self.body.get("model"))


@dataclass(frozen=True)
class Reply:
    """How to answer: HTTP status, the assistant's content (the error message when not 200)."""

    content: str = ""
    status: int = 200
    delay_s: float = 0.0  # wait this long first (`release()` ends the wait)
    headers: Mapping[str, str] = field(default_factory=dict)
    token_probs: Sequence[float] | None = None  # answered as `logprobs` when the client asks


Answer = Callable[[ChatRequest], Reply]


class FakeOpenAI:
    """Answers each chat completion with `answer` (a Reply, or a function of the request)."""

    def __init__(self, answer: Reply | Answer = Reply("ok")) -> None:
        self.answer: Answer = (lambda _r: answer) if isinstance(answer, Reply) else answer
        self.requests: list[ChatRequest] = []
        self.open = 0
        self.max_open = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = server._enter(self.path, self.headers.get("Authorization"), body)
                try:
                    reply = server.answer(request)
                    if reply.delay_s > 0:
                        server._released.wait(reply.delay_s)
                    self._send(reply.status, _payload(reply, body), reply.headers)
                finally:
                    server._leave()

            def _send(self, status: int, data: dict[str, Any], headers: Mapping[str, str]) -> None:
                raw = json.dumps(data).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up (its timeout or deadline) and went away

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def _enter(self, path: str, auth: str | None, body: dict[str, Any]) -> ChatRequest:
        with self._lock:
            request = ChatRequest(path, auth, body, len(self.requests) + 1)
            self.requests.append(request)
            self.open += 1
            self.max_open = max(self.max_open, self.open)
            return request

    def _leave(self) -> None:
        with self._lock:
            self.open -= 1

    def models_called(self) -> list[str]:
        """The `model` of every request so far, in order."""
        with self._lock:
            return [r.model for r in self.requests]

    def release(self) -> None:
        """Let every waiting (and future) delayed request answer at once."""
        self._released.set()

    def close(self) -> None:
        """Release the waiting requests, stop serving and close the socket."""
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


def _payload(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    if reply.status != 200:
        return {"error": {"message": reply.content}}
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": reply.content},
    }
    if reply.token_probs is not None and body.get("logprobs"):
        choice["logprobs"] = {
            "content": [
                {"token": f"t{i}", "logprob": math.log(p), "top_logprobs": []}
                for i, p in enumerate(reply.token_probs)
            ]
        }
    # token counts as a real server reports them (whitespace words stand in for tokens)
    completion = len(reply.content.split())
    usage = {"prompt_tokens": 1, "completion_tokens": completion, "total_tokens": completion + 1}
    return {"choices": [choice], "usage": usage}


def paced(delay_s: float = 3.0, *, free_requests: int = 0) -> Answer:
    """Speed by model: `fast` at once, `slow` after delay_s, `hang` only after release() (or
    300 s); the first `free_requests` answer at once whatever the model (a VLM replica's
    warm-up request comes first). Every answer is PACED_ANSWER."""

    def answer(request: ChatRequest) -> Reply:
        delay = {"slow": delay_s, "hang": 300.0}.get(request.model, 0.0)
        return Reply(PACED_ANSWER, delay_s=0.0 if request.number <= free_requests else delay)

    return answer


def serve_fake(answer: Reply | Answer = Reply("ok")) -> Iterator[FakeOpenAI]:
    """Generator for a fixture: a FakeOpenAI, closed afterwards."""
    server = FakeOpenAI(answer)
    try:
        yield server
    finally:
        server.close()
