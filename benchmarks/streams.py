"""Live camera stand-ins for benchmarks: one process serving many MPEG-TS streams over HTTP.

tests/support/ts_server.py re-encodes every frame in real time, which is right for one test
stream but would spend the CPU being measured when a benchmark needs twenty. Here the clip is
encoded once (H.264, like a real camera), remuxed to MPEG-TS in memory, and every client of
`GET /cam/<name>` gets those bytes paced in real time by the packets' timestamps, looping
forever. Each connection's start (wall clock) is logged as a JSON line, so a benchmark knows
when each frame of each stream was sent: the media time of a motion window plus that start
(plus the loop's offset) is when the camera showed it.

    python benchmarks/streams.py CLIP.mp4 PORT LOG.jsonl      (runs until killed)
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av


def remux_ts(clip: Path) -> tuple[bytes, list[tuple[int, float]], float]:
    """The clip as MPEG-TS bytes (no re-encode), (byte end, send time) per packet, duration."""
    buf = io.BytesIO()
    schedule: list[tuple[int, float]] = []
    with av.open(str(clip)) as src:
        stream = src.streams.video[0]
        rate = float(stream.average_rate or 25)
        frames = stream.frames or 0
        with av.open(buf, mode="w", format="mpegts") as out:
            out_stream = out.add_stream_from_template(stream)
            for packet in src.demux(stream):
                if packet.dts is None:
                    continue
                when = float(packet.dts * stream.time_base) if stream.time_base else 0.0
                packet.stream = out_stream
                out.mux(packet)
                schedule.append((buf.tell(), max(0.0, when)))
    data = buf.getvalue()
    schedule.append((len(data), schedule[-1][1] if schedule else 0.0))
    duration = frames / rate if frames else schedule[-1][1] + 1.0 / rate
    return data, schedule, duration


class _Handler(BaseHTTPRequestHandler):
    server_version = "bench-streams/1"
    data: bytes = b""
    schedule: list[tuple[int, float]] = []
    duration = 10.0
    log_lock = threading.Lock()
    log_path = Path("streams.jsonl")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: connections are logged as JSON lines instead."""

    def do_GET(self) -> None:
        """Stream the clip to this client in real time, looping, until it disconnects."""
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        t0 = time.time()
        with self.log_lock, self.log_path.open("a") as log:
            log.write(json.dumps({"path": self.path, "t0": t0, "duration": self.duration}) + "\n")
        loop = 0
        try:
            while True:
                sent = 0
                base = t0 + loop * self.duration
                for end, when in self.schedule:
                    delay = base + when - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    if end > sent:
                        self.wfile.write(self.data[sent:end])
                        sent = end
                loop += 1
        except (BrokenPipeError, ConnectionResetError, OSError):
            return  # the camera went away


def serve(clip: Path, port: int, log_path: Path) -> None:
    """Serve `clip` on 127.0.0.1:port until killed."""
    data, schedule, duration = remux_ts(clip)
    _Handler.data, _Handler.schedule, _Handler.duration = data, schedule, duration
    _Handler.log_path = log_path
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    server.serve_forever()


def window_start_sent(
    stamp: float, t0: float, duration: float, windows: Sequence[tuple[float, float]]
) -> float | None:
    """When the stream that started at t0 sent the first frame of the latest motion window
    that began at or before `stamp` (wall clock); None before the first one."""
    loop = int((stamp - t0) // duration)
    sent = [
        t0 + k * duration + start
        for k in (loop - 1, loop)
        for start, _end in windows
        if k >= 0 and t0 + k * duration + start <= stamp
    ]
    return max(sent) if sent else None


class StreamServer:
    """This module run as a subprocess; `stop()` ends it by its pid."""

    def __init__(self, clip: Path, log_path: Path, port: int) -> None:
        self.port = port
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(clip), str(port), str(log_path)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("stream server exited") from None
                time.sleep(0.1)
        self.stop()
        raise TimeoutError("stream server did not start")

    def url(self, name: str) -> str:
        """The stream URL a camera config uses."""
        return f"http://127.0.0.1:{self.port}/cam/{name}"

    def starts(self) -> dict[str, tuple[float, float]]:
        """Connection start and clip duration per path, from the log (last connection wins)."""
        out: dict[str, tuple[float, float]] = {}
        if self.log_path.exists():
            for line in self.log_path.read_text().splitlines():
                item = json.loads(line)
                out[item["path"]] = (float(item["t0"]), float(item["duration"]))
        return out

    def stop(self) -> None:
        """Terminate the server process."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
