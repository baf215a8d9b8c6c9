"""Deterministic sample videos for demos and tests.

A sample video is a textured static background (fixed low-amplitude noise and a few shapes) with
moving objects -- a filled rectangle ("vehicle") and an ellipse ("person") -- that are visible and
move only inside the given motion windows, so motion segmentation yields one event per window.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "generate_sample_video",
    "generate_scene_video",
    "render_sample_frame",
    "sample_background",
]


def _pick_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A static textured background: gradient + fixed noise + a few static shapes."""
    ys = np.linspace(70, 130, height, dtype=np.float32)[:, None]
    xs = np.linspace(-15, 15, width, dtype=np.float32)[None, :]
    base = ys + xs
    noise = rng.normal(0.0, 4.0, size=(height, width)).astype(np.float32)
    grey = np.clip(base + noise, 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(np.stack([grey, grey, grey], axis=-1))
    img[..., 1] = np.clip(img[..., 1].astype(np.int16) + 10, 0, 255).astype(np.uint8)
    for _ in range(4):
        x0 = int(rng.integers(0, max(1, width - width // 6)))
        y0 = int(rng.integers(height // 2, max(height // 2 + 1, height - height // 6)))
        w = int(rng.integers(width // 20 + 1, width // 6 + 2))
        h = int(rng.integers(height // 20 + 1, height // 6 + 2))
        colour = tuple(int(c) for c in rng.integers(40, 200, size=3))
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), colour, thickness=-1)
    cv2.circle(img, (width // 5, height // 5), max(2, height // 12), (200, 200, 120), -1)
    return img


def sample_background(size: tuple[int, int] = (320, 240), seed: int = 0) -> np.ndarray:
    """The static RGB background of a sample video of this size and seed."""
    return _background(size[0], size[1], np.random.default_rng(seed))


def _draw_object(img: np.ndarray, kind: int, cx: float, cy: float, scale: int) -> None:
    if kind % 2 == 0:  # "vehicle": a wide filled rectangle with a darker window strip
        w, h = int(scale * 1.6), int(scale * 0.8)
        x0, y0 = int(cx - w / 2), int(cy - h / 2)
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), (200, 30, 30), -1)
        cv2.rectangle(img, (x0 + w // 5, y0 + 2), (x0 + 4 * w // 5, y0 + h // 3), (30, 30, 60), -1)
    else:  # "person": a tall ellipse with a head
        axes = (max(2, scale // 4), max(3, scale // 2))
        cv2.ellipse(img, (int(cx), int(cy)), axes, 0, 0, 360, (240, 220, 40), -1)
        cv2.circle(
            img, (int(cx), int(cy - axes[1] - scale // 6)), max(2, scale // 6), (250, 200, 170), -1
        )


def render_sample_frame(
    background: np.ndarray,
    t: float,
    *,
    objects: int,
    motion_windows: Sequence[tuple[float, float]],
) -> np.ndarray:
    """The RGB frame of a sample video at time t (objects drawn only inside motion windows)."""
    img = background.copy()
    height, width = img.shape[:2]
    scale = max(8, height // 5)
    for start, end in motion_windows:
        if not start <= t < end:
            continue
        progress = (t - start) / max(end - start, 1e-6)
        for k in range(objects):
            # objects enter at one edge and leave at the other, so they move only in the window
            direction = 1 if k % 2 == 0 else -1
            span = width + 1.2 * scale
            cx = -0.6 * scale + progress * span
            if direction < 0:
                cx = width - cx
            cy = height * (0.35 + 0.3 * (k % 3) / 2)
            _draw_object(img, k, cx, cy, scale)
    return img


def _grain_fields(
    rng: np.random.Generator, width: int, height: int, grain: float
) -> list[np.ndarray]:
    """17 fixed noise fields to cycle (more than any encoder reference window); none if 0."""
    if grain <= 0:
        return []
    return [rng.normal(0.0, grain, size=(height, width, 1)).astype(np.int16) for _ in range(17)]


def _add_video_stream(
    container: av.container.OutputContainer,
    codec: str,
    fps: int,
    size: tuple[int, int],
    gop: int | None,
) -> av.VideoStream:
    """A yuv420p stream of this codec for a sample video."""
    rate = Fraction(fps).limit_denominator(1000)
    stream = cast("av.VideoStream", container.add_stream(codec, rate=rate))
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.gop_size = gop if gop is not None else max(1, int(fps * 2))
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "crf": "20", "threads": "1"}
    else:
        stream.bit_rate = 2_000_000
    return stream


def generate_sample_video(
    path: str | Path,
    *,
    seconds: float = 6,
    fps: int = 10,
    size: tuple[int, int] = (320, 240),
    objects: int = 1,
    seed: int = 0,
    motion_windows: Sequence[tuple[float, float]] = ((1.0, 3.0),),
    gop: int | None = None,
    grain: float = 0.0,
) -> Path:
    """Write a deterministic H.264 (or MPEG-4) yuv420p MP4 with motion only in the windows.

    `grain` > 0 adds per-frame sensor-like noise of that standard deviation (grey levels), which
    makes the bitrate and decode cost closer to a real camera's (benchmarks use it).
    """
    path = Path(path)
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"size must be even for yuv420p, got {size!r}")
    if objects < 1:
        raise ValueError("objects must be >= 1")
    rng = np.random.default_rng(seed)
    background = _background(width, height, rng)
    codec = _pick_codec()
    path.parent.mkdir(parents=True, exist_ok=True)
    n_frames = round(seconds * fps)
    grains = _grain_fields(rng, width, height, grain)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = _add_video_stream(container, codec, fps, size, gop)
        for i in range(n_frames):
            rgb = render_sample_frame(
                background, i / fps, objects=objects, motion_windows=motion_windows
            )
            if grains:
                rgb = np.clip(rgb.astype(np.int16) + grains[i % len(grains)], 0, 255).astype(
                    np.uint8
                )
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    logger.debug("wrote sample video %s (%d frames, %s)", path, n_frames, codec)
    return path


def generate_scene_video(
    path: str | Path,
    windows: Sequence[tuple[float, float, int]],
    *,
    seconds: float,
    fps: int = 10,
    size: tuple[int, int] = (320, 240),
    seed: int = 0,
) -> Path:
    """A sample video whose motion windows each show their own number of objects:
    `(start, end, objects)`. Equal windows repeat a scene; a window with more objects is a
    changed one (near-duplicate tests and benchmarks)."""
    path = Path(path)
    background = _background(size[0], size[1], np.random.default_rng(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = _add_video_stream(container, _pick_codec(), fps, size, None)
        for i in range(round(seconds * fps)):
            t = i / fps
            rgb = background
            for start, end, objects in windows:
                if start <= t < end:
                    rgb = render_sample_frame(
                        background, t, objects=objects, motion_windows=[(start, end)]
                    )
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
