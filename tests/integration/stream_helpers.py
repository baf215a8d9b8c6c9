"""A live camera stand-in for tests: a looping real-time MPEG-TS/UDP sender process."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).with_name("ts_server.py")


def free_udp_port() -> int:
    """A UDP port on loopback that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TSServer:
    """Runs tests/integration/ts_server.py; kill() stops it like a camera losing power."""

    def __init__(self, clip: Path, port: int) -> None:
        self.clip, self.port = clip, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), str(self.clip), str(self.port)],
            stdout=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
