"""An embedded MQTT broker for the offline demo, started only when none answers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


def broker_reachable(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedBroker:
    """A broker child process this program started; stop() ends it by process id."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    kind: str

    def stop(self) -> None:
        """Terminate the broker process (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_embedded_broker(host: str, port: int, timeout_s: float = 15.0) -> EmbeddedBroker:
    """Start mosquitto if installed, else the pure-Python amqtt broker, on host:port.

    It lets anonymous clients in, so it listens on loopback only: a host that is not loopback
    is refused (a ValueError that says so)."""
    if host not in ("localhost", "127.0.0.1", "::1", ""):
        raise ValueError(
            f"mqtt.embedded_broker listens on loopback only (anonymous clients), not {host!r}: "
            "set mqtt.host to localhost, or run a broker with users"
        )
    bind = "127.0.0.1" if host != "::1" else host
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if mosquitto:
        conf = Path(tempfile.mkdtemp(prefix="liveobject-broker-")) / "mosquitto.conf"
        conf.write_text(f"listener {port} {bind}\nallow_anonymous true\npersistence false\n")
        cmd = [mosquitto, "-c", str(conf)]
        kind = "mosquitto"
    else:
        cmd = [sys.executable, "-m", "pipelines.broker", "--host", bind, "--port", str(port)]
        kind = "amqtt"
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker_reachable(bind, port, 0.2):
            logger.info(
                "embedded %s broker listening on %s:%d (pid %d)", kind, bind, port, process.pid
            )
            return EmbeddedBroker(process, bind, port, kind)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    EmbeddedBroker(process, bind, port, kind).stop()
    raise RuntimeError(f"embedded {kind} broker did not start on {bind}:{port}")


async def _serve_amqtt(host: str, port: int) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True},
        "topic-check": {"enabled": False},
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def main(argv: list[str] | None = None) -> None:
    """Run the amqtt broker in the foreground (used as a child process)."""
    parser = argparse.ArgumentParser(description="liveobject embedded MQTT broker (amqtt)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    asyncio.run(_serve_amqtt(args.host, args.port))


if __name__ == "__main__":
    main()
