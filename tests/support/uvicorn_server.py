"""An ASGI app (the API app) under a real uvicorn in a thread of the test process."""

from __future__ import annotations

import threading
from typing import Any

import uvicorn

from tests.support.network import free_port, wait_port


class Uvicorn:
    """The app on a loopback port (free, or the one given), stopped by stop()."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.app = app
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_port(self.port)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
