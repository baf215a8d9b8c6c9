"""A py-spy profile of one process, reduced to where its CPU time goes, in words.

`record()` runs `py-spy record --native --format raw` on a pid; `summarize()` reads the
collapsed stacks and attributes each sample to the first category (from the leaf up) whose
pattern matches a frame: decoding, colour conversion, motion detection, JPEG, model, storage,
MQTT; the rest is Python and Ray. py-spy sees Python threads (with their native frames: the
sources decode on their own Python threads) but no native threads: Ray's, and FFmpeg's decoder
threads where a decoder has them (named `av:<codec>:…`), are accounted from /proc by
`thread_cpu()`.
`paragraph()` turns both into the results' paragraph.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# (category, substrings of a frame, what would move it)
CATEGORIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "video decoding (FFmpeg via PyAV/decord)",
        ("libavcodec", "avcodec", "ff_h264", "libdecord", "decord/", "container.decode"),
        "decoding every frame of every stream is the floor of a camera's cost: hardware "
        "decoding (NVDEC/VAAPI through FFmpeg's hwaccel), or the camera's low-resolution "
        "substream for motion, would move it; skipping non-key frames is not an option for "
        "H.264 inter frames",
    ),
    (
        "pixel conversion to RGB (swscale)",
        ("libswscale", "sws_", "to_ndarray", "reformat"),
        "converting straight to the motion frame's size and grey (one sws_scale call) instead "
        "of full-resolution RGB then resizing would cut it",
    ),
    (
        "motion detection and resizing (OpenCV, NumPy)",
        ("libopencv", "cv2", "motion.py", "numpy", "multiarray", "imaging.py"),
        "motion already runs on a downscaled grey frame; a smaller `motion.frame_height` or a "
        "lower `detect_fps` trades sensitivity for CPU",
    ),
    (
        "JPEG encoding and decoding",
        ("libjpeg", "imencode", "encode_jpeg", "PIL/", "ImageFile", "libturbojpeg"),
        "fewer or smaller key frames (`motion.max_frames`, `vlm.image_size`) would cut it",
    ),
    (
        "VLM model (PyTorch)",
        ("libtorch", "torch/", "transformers/", "generate", "libgomp", "mkl"),
        "a GPU replica (`vlm.num_gpus`) and larger batches move this; on CPU, more replicas "
        "only split the same cores",
    ),
    ("storage (DuckDB)", ("duckdb",), "group commits already batch writes"),
    ("MQTT (paho)", ("paho/",), "publishing is batched per group commit"),
)
OTHER = "Python, asyncio and Ray runtime"
# Innermost Python functions whose cost has a known lever.
LEAF_ADVICE = {
    "resize_long_side": "`EventSegmenter` resizes every pooled motion frame to the key-frame "
    "size (cv2 INTER_AREA) while an event is open; keeping the frames and resizing only the "
    "≤ `motion.max_frames` chosen when it closes would cut that",
    "grey_small": "motion's own downscale to `motion.frame_height` grey of an RGB array "
    "(decord's file frames); PyAV frames get it from FFmpeg's scaler (`Frame.grey`)",
}
# With --native, py-spy samples threads blocked in these too: such a sample is idle, not work.
IDLE = (
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "epoll_wait",
    "epoll_pwait",
    "sem_wait",
    "sem_timedwait",
    "PyThread_acquire_lock_timed",
    "Condition.wait",
    "Event.wait",
    "select (",
    "poll (",
    "nanosleep",
    "time_sleep",
    "_queue_SimpleQueue_get",
    "suspend_until",
)


def record(pid: int, seconds: float, out: Path, rate: int = 250) -> Path | None:
    """py-spy `pid` for `seconds` into `out` (collapsed stacks); None when py-spy failed."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [binary, "record", "--native", "-p", str(pid)]
    command += ["-d", str(max(1, round(seconds))), "-r", str(rate), "--format", "raw"]
    command += ["-o", str(out)]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=seconds + 60)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"py-spy failed: {exc}", file=sys.stderr)
        return None
    return out if out.exists() else None


def thread_cpu(pid: int) -> dict[str, int]:
    """CPU clock ticks so far per thread group of a process (thread name, digits dropped)."""
    out: collections.Counter[str] = collections.Counter()
    task = Path(f"/proc/{pid}/task")
    for tid in task.iterdir() if task.exists() else []:
        try:
            name = (tid / "comm").read_text().strip()
            fields = (tid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        out[re.sub(r"\d+$", "", name) or "?"] += int(fields[11]) + int(fields[12])
    return dict(out)


def thread_shares(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Percent of the process's CPU per thread group between two thread_cpu() readings."""
    used = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    total = sum(v for v in used.values() if v > 0)
    if not total:
        return {}
    ordered = sorted(used.items(), key=lambda kv: -kv[1])
    return {k: round(100 * v / total, 1) for k, v in ordered if v > 0}


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):  # from the leaf up: the innermost recognisable work
        for name, patterns, _advice in CATEGORIES:
            if any(p in frame for p in patterns):
                return name
    return OTHER


def summarize(path: Path) -> dict[str, Any]:
    """Shares of busy samples per category and the hottest innermost Python functions (idle
    samples dropped)."""
    categories: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        if any(p in frame for frame in frames[-5:] for p in IDLE):
            idle += n  # a thread waiting, not working
            continue
        total += n
        categories[_category(frames)] += n
        python = [f for f in frames if ".py:" in f]  # the innermost Python frame: actionable
        leaves[(python[-1] if python else frames[-1]).split(" (")[0].strip() or "?"] += n
    share = {k: round(100 * v / total, 1) for k, v in categories.most_common()} if total else {}
    top = [(k, round(100 * v / total, 1)) for k, v in leaves.most_common(6)] if total else []
    return {"samples": total, "idle_samples": idle, "categories": share, "top_leaves": top}


def paragraph(
    stage: str,
    process: str,
    seconds: float,
    summary: dict[str, Any],
    why: str,
    threads: dict[str, float] | None = None,
) -> str:
    """One paragraph: why this stage, where its time goes, what would move it."""
    text = why
    top: list[str] = []
    ray_native = 0.0
    if threads:
        # Python threads carry the process title Ray gave the worker (`ray::…`); FFmpeg names
        # its decoder threads `av:<codec>:…`; the rest are Ray's own (gRPC, event loops).
        ffmpeg = sum(v for k, v in threads.items() if k.startswith("av:"))
        python = sum(v for k, v in threads.items() if k.startswith(("ray::", "python")))
        text += (
            f" Of the {stage} process's CPU over {seconds:.0f} s ({process}, per-thread times "
            f"from /proc), {ffmpeg:.0f}% ran in FFmpeg's own decoder threads (`av:…`, native, "
            f"unseen by py-spy), {python:.0f}% in Python threads and "
            f"{max(0.0, 100 - ffmpeg - python):.0f}% in Ray's native threads (gRPC, event loops)."
        )
        if ffmpeg >= 30:
            top.append(CATEGORIES[0][0])
        ray_native = max(0.0, 100 - ffmpeg - python)
    if summary.get("samples"):
        parts = ", ".join(f"{name} {pct}%" for name, pct in summary["categories"].items())
        leaves = ", ".join(f"`{name}` {pct}%" for name, pct in summary["top_leaves"][:4])
        text += (
            f" `py-spy record --native` of its Python threads ({summary['samples']} busy "
            f"samples): {parts}; innermost Python functions: {leaves}."
        )
        top += [n for n in list(summary["categories"])[:2] if n not in top]
    else:
        text += f" py-spy collected no busy samples of {process}'s Python threads."
    advice = [a for n, _p, a in CATEGORIES if n in top[:1]]
    leaf = summary["top_leaves"][0][0] if summary.get("top_leaves") else ""
    if leaf in LEAF_ADVICE:
        advice.append(LEAF_ADVICE[leaf])
    elif len(top) > 1:
        advice += [a for n, _p, a in CATEGORIES if n == top[1]]
    if threads and ray_native >= 25:
        advice.append(
            f"Ray's own native threads took {ray_native:.0f}% of this actor's CPU; hosting "
            "several cameras per actor process would share that per-process cost"
        )
    if advice:
        text += " What would move it: " + "; ".join(advice) + "."
    return text
