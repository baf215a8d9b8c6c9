"""Ingest benchmark: decode + motion throughput and CPU cost per camera-minute.

Measures, on generated clips decoded in the same run:
- frames/s of raw decord, raw PyAV, and FileSource(decord) + MotionDetector at the native rate
  (the ratio shows what sampling, copying and motion detection add over raw decoding);
- CPU-seconds per camera-minute (resource.getrusage, user+sys of this process, all threads) of
  FileSource + MotionDetector + EventSegmenter at detect_fps 5, for 720p and 1080p.

Usage: python benchmarks/bench_ingest.py [--seconds 10] [--fps 25] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import decord

from pipelines.config import MotionConfig
from pipelines.motion import MotionDetector
from pipelines.samples import generate_sample_video
from pipelines.segment import EventSegmenter
from pipelines.sources import FileSource

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(fn: Callable[[], int], repeats: int) -> dict[str, float]:
    """Median over repeats (by wall time) of frames, wall, CPU and frames/s."""
    runs = []
    for _ in range(repeats):
        cpu0, t0 = _cpu_s(), time.perf_counter()
        frames = fn()
        runs.append((time.perf_counter() - t0, _cpu_s() - cpu0, frames))
    wall, cpu, frames = sorted(runs)[len(runs) // 2]
    return {
        "frames": frames,
        "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 4),
        "fps": round(frames / wall, 2),
        "repeats": repeats,
    }


def raw_decord(path: Path) -> int:
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    n = len(reader)
    for start in range(0, n, 16):
        reader.get_batch(list(range(start, min(n, start + 16)))).asnumpy()
    return n


def raw_pyav(path: Path) -> int:
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            n += 1
    return n


def pipeline(path: Path, detect_fps: float, segment: bool) -> int:
    settings = MotionConfig()
    detector = MotionDetector(settings)
    segmenter = EventSegmenter(settings, detect_fps)
    n = 0
    events = 0
    with FileSource(path, detect_fps) as source:
        for frame in source.frames():
            result = detector.update(frame.image)
            if segment:
                events += len(segmenter.feed(frame, result))
            n += 1
    events += len(segmenter.flush())
    return n


def main() -> None:
    """Run the benchmark and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--detect-fps", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest.json"))
    args = parser.parse_args()

    report: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "decord": decord.__version__,
            "codec": "libx264" if "libx264" in av.codecs_available else "mpeg4",
            "av": av.__version__,
        },
        "clip": {"seconds": args.seconds, "fps": args.fps},
        "detect_fps": args.detect_fps,
        "results": {},
    }
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in SIZES.items():
            path = generate_sample_video(
                Path(tmp) / f"{name}.mp4",
                seconds=args.seconds,
                fps=args.fps,
                size=size,
                objects=2,
                motion_windows=[(1.0, 3.0), (args.seconds * 0.6, args.seconds * 0.8)],
            )
            raw_pyav(path)  # warm the page cache and both decoders
            raw_decord(path)
            r = args.repeats
            dec = _measure(lambda p=path: raw_decord(p), r)
            pav = _measure(lambda p=path: raw_pyav(p), r)
            native = _measure(lambda p=path: pipeline(p, float(args.fps), segment=False), r)
            sampled = _measure(lambda p=path: pipeline(p, args.detect_fps, segment=True), r)
            minutes = args.seconds / 60.0
            entry = {
                "raw_decord": dec,
                "raw_pyav": pav,
                "filesource_motion_native": native,
                "ratio_pipeline_vs_decord": round(native["fps"] / dec["fps"], 3),
                "ratio_pyav_vs_decord": round(pav["fps"] / dec["fps"], 3),
                f"pipeline_detect_fps_{args.detect_fps:g}": sampled,
                "cpu_s_per_camera_minute": round(sampled["cpu_s"] / minutes, 3),
                "realtime_factor": round(args.seconds / sampled["wall_s"], 2),
            }
            results[name] = entry
            print(name, json.dumps(entry))
    report["results"] = results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
