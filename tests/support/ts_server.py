"""A tiny live-stream server for tests: loops a video file as MPEG-TS over UDP, in real time.

Usage: python ts_server.py VIDEO PORT [FPS [CODEC]]. Runs until killed. Re-encodes (mpeg2video, or
CODEC: libx264 for H.264 as cameras send) with a short GOP so a receiver that joins mid-stream
gets a key frame within a second.
"""

from __future__ import annotations

import sys
import time
from fractions import Fraction

import av


def main() -> None:
    video, port = sys.argv[1], int(sys.argv[2])
    with av.open(video) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
        rate = src.streams.video[0].average_rate
    fps = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else float(rate or 10)
    codec = sys.argv[4] if len(sys.argv) > 4 else "mpeg2video"
    height, width = frames[0].shape[:2]
    out = av.open(f"udp://127.0.0.1:{port}?pkt_size=1316", mode="w", format="mpegts")
    options = {"preset": "ultrafast", "tune": "zerolatency"} if codec == "libx264" else {}
    stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000), options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.gop_size = max(1, int(fps // 2))
    stream.bit_rate = 1_500_000
    t0 = time.monotonic()
    pts = 0
    while True:
        for rgb in frames:
            due = t0 + pts / fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = pts
            for packet in stream.encode(frame):
                out.mux(packet)
            pts += 1


if __name__ == "__main__":
    main()
