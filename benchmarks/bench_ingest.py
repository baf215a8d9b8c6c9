"""Ingest sources against raw decoding of the same file: CPU per minute of video.

On generated H.264 clips (720p and 1080p, 25 fps, 2 s GOP, sensor grain for a camera-like
bitrate), at the product's settings (`detect_fps` 5: every frame is decoded — H.264 needs it —
and five a second are converted to RGB and checked for motion):
- `FileSource` (decord, the file cameras' path) + `MotionDetector` + `EventSegmenter` vs raw
  decord returning the same sampled frames as RGB, asked for as the source asks (a
  `get_batch` of one frame each);
- `FileSource(backend="pyav")` + motion + segments vs raw PyAV decoding every frame and
  scaling the same sampled frames to motion's small grey picture (FFmpeg's scaler, as the
  source's frames do; the product makes RGB arrays only of the frames an event keeps);
- `StreamSource` (the live cameras' path: a decode thread and a latest-frame slot) + motion +
  segments on the same clip served as a real-time MPEG-TS/HTTP stream (benchmarks/streams.py),
  vs raw PyAV reading the same live stream (its own connection, the source's options, every
  frame decoded, motion's grey `detect_fps` times a second), per video-second.
Each baseline does the decoding its row's product path needs (the same frames, the same
output: RGB from decord, motion's grey from PyAV), so a ratio below 1 is what motion,
segmenting (with the RGB of event frames) and the source's own work cost. OpenCV runs on one
thread, as in an ingest process (`IngestActor`).
Each is CPU-seconds of this process (all its threads) per minute of video, every decoder on one
thread as the sources decode; the ratio is raw ÷ ours (1.0: the product adds nothing to
decoding). CPU time, not wall time: it is what a camera costs the machine, and it drifts far
less on a shared machine. The file runs alternate (raw, ours, raw, ours …) for --repeats
rounds; the least CPU of each counts.

    .venv/bin/python benchmarks/bench_ingest.py [--quick] [--seconds 10] [--repeats 9]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` when run as a script

import av
import decord

from benchmarks.harness import (
    Row,
    Target,
    cpu_seconds,
    exit_on_sigterm,
    free_port,
    quick_requested,
    ratio,
    write_results,
)
from benchmarks.streams import StreamServer
from pipelines.config import MotionConfig
from pipelines.imaging import one_thread
from pipelines.ingest.motion import MotionDetector
from pipelines.ingest.segment import EventSegmenter
from pipelines.ingest.sources import (
    DECORD_THREADS,
    FileSource,
    FrameSource,
    StreamSource,
    _next_sample,
    _probe_file,
    one_decoder_thread,
    sample_indices,
)
from pipelines.samples import generate_sample_video

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
DETECT_FPS = 5.0
TARGET = Target("ratio", ">=", 0.85)
STREAM_ROUNDS = 2  # live runs of each side (real time: each costs its length)
MOTION_HEIGHT = int(MotionConfig().frame_height)  # the product's default, as `analyse` uses


def raw_decord(path: Path) -> int:
    """The frames the decord `FileSource` returns, as it asks for them: the `detect_fps`
    samples, one `get_batch` each, as RGB arrays (decord decodes the others internally, as
    H.264 needs) on one decoder thread, as the source; frames returned."""
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=DECORD_THREADS)
    indices = sample_indices(len(reader), float(reader.get_avg_fps()), DETECT_FPS)
    for i in indices:
        reader.get_batch([i]).asnumpy()
    return len(indices)


def motion_grey(frame: av.VideoFrame) -> None:
    """What motion reads of a sampled frame: grey, `motion.frame_height` high, by FFmpeg's
    scaler."""
    width = max(1, round(frame.width * MOTION_HEIGHT / frame.height))
    frame.reformat(width=width, height=MOTION_HEIGHT, format="gray").to_ndarray()


def raw_pyav(path: Path) -> int:
    """What the PyAV paths decode: every frame (H.264 needs them; on one decoder thread, as
    the sources decode), and the `detect_fps` samples scaled to the motion picture (grey,
    `motion.frame_height` high) by FFmpeg's scaler, as motion reads them; frames converted.
    (The product also makes RGB arrays of the frames that start or extend an event: its own
    work.)"""
    fps, _frames = _probe_file(path)  # the rate the source samples by
    step = fps / DETECT_FPS if DETECT_FPS < fps else 1.0
    converted, k, target = 0, 0, 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        one_decoder_thread(stream)  # as the sources decode
        for i, frame in enumerate(container.decode(stream)):
            if i < target:
                continue
            motion_grey(frame)
            converted += 1
            while target <= i:
                k += 1
                target = _next_sample(k, step)
    return converted


def analyse(source: FrameSource, stop_after_s: float | None = None) -> int:
    """Motion + segmentation on every frame the source yields; frames analysed."""
    settings = MotionConfig()
    detector = MotionDetector(settings)
    segmenter = EventSegmenter(settings, DETECT_FPS)
    n = 0
    started = time.monotonic()
    with source:
        for frame in source.frames():
            segmenter.feed(frame, detector.update_frame(frame))
            n += 1
            if stop_after_s is not None and time.monotonic() - started >= stop_after_s:
                break
    segmenter.flush()
    return n


def least_cpu(fns: dict[str, Callable[[], int]], repeats: int) -> dict[str, dict[str, Any]]:
    """Each function once per round, rounds alternating; the least CPU (and its wall time)."""
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            frames = fn()
            runs[name].append((cpu_seconds() - cpu0, time.perf_counter() - t0, frames))
    return {
        name: dict(zip(("cpu_s", "wall_s", "frames"), min(items), strict=True))
        | {"repeats": repeats}
        for name, items in runs.items()
    }


def live_frames(url: str) -> Iterator[tuple[float, bool]]:
    """Raw PyAV on a live stream, opened with the stream source's options (low delay), every
    frame decoded on this thread alone, the newest scaled to motion's grey `detect_fps` times a
    second (as the source paces its consumer: no catching up): after each frame, the
    monotonic time and whether it was scaled. The stream is closed with the generator."""
    options = StreamSource(url, DETECT_FPS).options
    with av.open(url, mode="r", options=options, timeout=(10.0, 10.0)) as container:
        stream = container.streams.video[0]
        one_decoder_thread(stream)  # as the sources decode
        next_due = 0.0
        for frame in container.decode(stream):
            now = time.monotonic()
            scaled = now >= next_due
            if scaled:
                motion_grey(frame)
                next_due = max(next_due + 1.0 / DETECT_FPS, now)
            yield now, scaled


def raw_stream(url: str, seconds: float) -> dict[str, Any]:
    """`live_frames` for `seconds`: this process's CPU over them, after one second of warm-up
    from the first frame (past the probe, as the source's side is timed)."""
    converted = decoded = 0
    started = cpu0 = t0 = None
    with contextlib.closing(live_frames(url)) as frames:
        for now, scaled in frames:
            started = now if started is None else started
            if cpu0 is None:
                if now - started < 1.0:
                    continue
                cpu0, t0 = cpu_seconds(), now
            decoded += 1
            converted += scaled
            if now - t0 >= seconds:
                break
    assert cpu0 is not None and t0 is not None
    return {
        "cpu_s": cpu_seconds() - cpu0,
        "wall_s": time.monotonic() - t0,
        "frames": converted,
        "decoded": decoded,
    }


def stream_cpu(clip: Path, seconds: float, tmp: Path, rounds: int) -> dict[str, Any]:
    """StreamSource + motion on the clip served in real time, and raw PyAV on its own
    connection, `rounds` alternating runs of `seconds` each: the run of least CPU per
    stream-second of each (a live run cannot be repeated exactly; the least is the one the
    shared machine disturbed least)."""
    server = StreamServer(clip, tmp / f"{clip.stem}.jsonl", free_port())
    best: dict[str, dict[str, Any]] = {}

    def keep(name: str, run: dict[str, Any]) -> None:
        if name not in best or run["cpu_s"] / run["wall_s"] < (
            best[name]["cpu_s"] / best[name]["wall_s"]
        ):
            best[name] = run

    try:
        warm = StreamSource(server.url(f"{clip.stem}-warm"), DETECT_FPS)
        analyse(warm, stop_after_s=2.0)  # imports, first connection
        for k in range(rounds):
            source = StreamSource(server.url(f"{clip.stem}-{k}"), DETECT_FPS)
            source.open()
            time.sleep(1.0)  # past the probe: only the steady state is measured
            cpu0, t0 = cpu_seconds(), time.monotonic()
            decoded0 = source.decoded
            frames = analyse(source, stop_after_s=seconds)
            ours = {
                "cpu_s": cpu_seconds() - cpu0,
                "wall_s": time.monotonic() - t0,
                "frames": frames,
                "decoded": source.decoded - decoded0,
            }
            keep("ours", ours)
            keep("raw", raw_stream(server.url(f"{clip.stem}-raw-{k}"), seconds))
        return best
    finally:
        server.stop()


def _row(
    what: str, size: str, ours: dict, raw: dict, baseline: str, media_s: float, how: str
) -> Row:
    per_minute = 60.0 / media_s
    ours_cpu, raw_cpu = ours["cpu_s"] * per_minute, raw["cpu_s"] * per_minute
    return Row(
        "Ingest",
        f"{what}, {size}, detect_fps {DETECT_FPS:g}: CPU-s per video-minute",
        "CPU-s",
        round(ours_cpu, 2),
        round(raw_cpu, 2),
        baseline,
        ratio(raw_cpu, ours_cpu),
        TARGET,
        detail={"ours": ours, "raw": raw, "media_s": media_s},
        note=f"{size}: ours {ours['frames']} frames analysed of {media_s:.1f} s of video, raw "
        f"{raw['frames']} frames returned (RGB from decord, motion's grey from PyAV); {how}",
    )


def measure(clip: Path, size: str, seconds: float, repeats: int, tmp: Path, out: dict) -> list:
    """The three rows of one clip."""
    raw_pyav(clip)  # warm the page cache and both decoders
    raw_decord(clip)
    runs = least_cpu(
        {
            "raw_decord": lambda: raw_decord(clip),
            "file_decord": lambda: analyse(FileSource(clip, DETECT_FPS, backend="decord")),
            "raw_pyav": lambda: raw_pyav(clip),
            "file_pyav": lambda: analyse(FileSource(clip, DETECT_FPS, backend="pyav")),
        },
        repeats,
    )
    live_runs = stream_cpu(clip, seconds, tmp, min(repeats, STREAM_ROUNDS))
    runs["stream"], runs["raw_stream"] = live_runs["ours"], live_runs["raw"]
    out[size] = runs
    alternating = f"least CPU of {repeats} alternating runs each"
    live = (
        f"{runs['stream']['decoded']} frames decoded by the source, "
        f"{runs['raw_stream']['decoded']} by raw PyAV on its own connection to the same "
        f"stream; least CPU per video-second of {min(repeats, STREAM_ROUNDS)} alternating "
        "runs each"
    )
    return [
        _row(
            "`FileSource` (decord) + motion",
            size,
            runs["file_decord"],
            runs["raw_decord"],
            f"raw decord, the same {DETECT_FPS:g} fps frames as RGB",
            seconds,
            alternating,
        ),
        _row(
            '`FileSource(backend="pyav")` + motion',
            size,
            runs["file_pyav"],
            runs["raw_pyav"],
            f"raw PyAV, every frame decoded, the same {DETECT_FPS:g} fps as motion's grey",
            seconds,
            alternating,
        ),
        _row(
            "`StreamSource` + motion on the clip as a live MPEG-TS/HTTP stream",
            size,
            runs["stream"],
            runs["raw_stream"]
            | {
                "cpu_s": runs["raw_stream"]["cpu_s"]
                * runs["stream"]["wall_s"]
                / runs["raw_stream"]["wall_s"]
            },
            f"raw PyAV on the same live stream, every frame decoded, {DETECT_FPS:g} fps as "
            "motion's grey",
            runs["stream"]["wall_s"],
            live,
        ),
    ]


def main() -> None:
    """Generate the clips, run every pair, write results/ingest.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    exit_on_sigterm()
    one_thread()  # OpenCV as an ingest process runs it (`IngestActor`); the baselines use none
    quick = quick_requested(args.quick)
    seconds = 4.0 if quick else args.seconds
    repeats = 1 if quick else args.repeats
    started = time.time()
    rows: list[Row] = []
    raw: dict[str, Any] = {"clip_seconds": seconds, "fps": 25, "detect_fps": DETECT_FPS}
    with tempfile.TemporaryDirectory() as tmp:
        for size, dims in SIZES.items():
            clip = generate_sample_video(
                Path(tmp) / f"{size}.mp4",
                seconds=seconds,
                fps=25,
                size=dims,
                objects=2,
                motion_windows=[(0.5, seconds * 0.4), (seconds * 0.6, seconds * 0.8)],
                gop=50,
                grain=2.0,
            )
            rows += measure(clip, size, seconds, repeats, Path(tmp), raw)
    write_results("ingest", rows, quick=quick, started=started, raw=raw)


if __name__ == "__main__":
    main()
