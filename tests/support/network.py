"""Loopback ports for tests: a free TCP or UDP port, and waiting until one listens.

A port is picked at random below the kernel's ephemeral range (and above Ray's worker ports,
10002-19999), then checked by binding it. Between the check and the server's own bind (seconds,
for a Home Assistant or a `liveobject run`), a port from `bind(0)` could be handed to any other
process's `bind(0)` or outgoing connection, the other pytest worker's Ray included; a port
below the ephemeral range is only taken by a process that names it.
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

LOWEST = 20000  # above Ray's default worker port range (min/max_worker_port 10002-19999)
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
TRIES = 200
_PICK = random.SystemRandom()  # apart from any test's random.seed, in each worker


def _below_ephemeral() -> range | None:
    """The ports between LOWEST and the start of the ephemeral range (None: no such range)."""
    try:
        start = int(EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return range(LOWEST, start) if start - LOWEST >= 1000 else None


def _free(kind: socket.SocketKind) -> int:
    candidates = _below_ephemeral()
    if candidates is not None:
        for _ in range(TRIES):
            port = _PICK.choice(candidates)
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, kind) as sock:  # no such range here: the kernel's pick
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    return _free(socket.SOCK_STREAM)


def free_udp_port() -> int:
    """A UDP port on loopback that nothing is bound to right now."""
    return _free(socket.SOCK_DGRAM)


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
