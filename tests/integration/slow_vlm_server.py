"""A local OpenAI-compatible /v1/chat/completions server whose speed the test chooses.

(Issue 10's drain, restart and ring-flood tests.) The model name picks the behaviour: `fast`
answers at once, `slow` after `delay_s`, `hang` only once the test calls `release()` (or after
300 s). The first `free_requests` answer at once whatever the model (a VLM replica's warm-up
request comes first). It counts requests and the most open at once, and answers with a real
JSON description, so events carry VLM text.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = {"description": "A person walks across the yard", "objects": ["person"], "confidence": 80}
DESCRIPTION = ANSWER["description"]


class OpenAIServer:
    """Speaks enough of the OpenAI chat API for the `openai` VLM backend."""

    def __init__(self, delay_s: float = 3.0, *, free_requests: int = 0) -> None:
        self.delay_s = delay_s
        self.free_requests = free_requests
        self.requests = 0
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
                number = server._enter()
                try:
                    if number > server.free_requests:
                        server._wait(str(body.get("model")))
                    content = json.dumps(ANSWER)
                    self._reply(
                        {"choices": [{"message": {"role": "assistant", "content": content}}]}
                    )
                finally:
                    server._leave()

            def _reply(self, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up and went away

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def _enter(self) -> int:
        with self._lock:
            self.requests += 1
            self.open += 1
            self.max_open = max(self.max_open, self.open)
            return self.requests

    def _leave(self) -> None:
        with self._lock:
            self.open -= 1

    def _wait(self, model: str) -> None:
        if model == "slow":
            self._released.wait(self.delay_s)
        elif model == "hang":
            self._released.wait(300)

    def release(self) -> None:
        """Let every waiting (and future) `slow`/`hang` request answer at once."""
        self._released.set()

    def close(self) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll check() until truthy; fail naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
