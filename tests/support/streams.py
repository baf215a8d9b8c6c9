"""A live camera stand-in for tests: a looping real-time MPEG-TS/UDP sender process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).with_name("ts_server.py")  # run as its own process


class TSServer:
    """Runs tests/support/ts_server.py; kill() stops it like a camera losing power."""

    def __init__(self, clip: Path, port: int, codec: str = "mpeg2video") -> None:
        self.clip, self.port, self.codec = clip, port, codec
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), str(self.clip), str(self.port), "", self.codec],
            stdout=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
