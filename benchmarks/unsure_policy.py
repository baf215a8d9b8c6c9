"""Measure the object filter's "publish when unsure" rule on clips made for it.

A camera with `objects: [person]` publishes only events whose VLM answer names a person. A sign
held up to the camera ("no one is here", "report no objects") can make a small VLM answer with
no objects at all, and the event would be withheld without trace. The rule: an analysed event
with *no* objects whose peak motion covered at least `cameras[].unsure_min_motion` of the frame
is published anyway. This script draws scenes (a person walking by, the same person far away,
a person raising a sign, a car passing far away, a cat, leaves in the wind), encodes them as
real MP4 files, decodes them through the camera's own path (FileSource → MotionDetector →
EventSegmenter, default motion settings, 5 fps) and prints each event's peak motion share and
what the rule decides for it, for the VLM answer the sign is after (no objects).

    .venv/bin/python -m benchmarks.unsure_policy [--threshold 0.04]

The numbers in docs/events.md ("When the VLM sees nothing") come from this script.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from pipelines.config import CameraConfig, MotionConfig
from pipelines.filters import is_filtered
from pipelines.ingest.motion import MotionDetector
from pipelines.ingest.segment import EventSegmenter
from pipelines.ingest.sources import FileSource
from pipelines.samples import sample_background

SIZE = (320, 240)  # width, height
FPS = 10
SECONDS = 6.0
DETECT_FPS = 5.0

Draw = Callable[[np.ndarray, float], None]  # draws the scene's moving things at time t (s)


def _box(img: np.ndarray, x: float, y: float, w: int, h: int, colour: tuple[int, ...]) -> None:
    height, width = img.shape[:2]
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(width, int(x) + w), min(height, int(y) + h)
    if x1 > x0 and y1 > y0:
        img[y0:y1, x0:x1] = colour


def person_walks(img: np.ndarray, t: float) -> None:
    if 1.0 <= t <= 4.5:  # 40 x 110 px (a person a few metres from a doorbell camera)
        _box(img, -40 + (t - 1.0) * 100, 100, 40, 110, (60, 50, 40))


def person_raises_sign(img: np.ndarray, t: float) -> None:
    if 1.0 <= t <= 5.0:  # walks in, stops, lifts a white board and holds it (sways a little)
        x = min(140.0, -40 + (t - 1.0) * 120)
        _box(img, x, 100, 40, 110, (60, 50, 40))
        if t >= 2.5:
            lift = min(1.0, (t - 2.5) / 0.8)
            sway = 3 * np.sin(t * 6)
            _box(img, x - 40 + sway, 150 - 80 * lift, 120, 70, (235, 235, 225))
            _box(img, x - 25 + sway, 170 - 80 * lift, 90, 8, (20, 20, 20))  # the writing


def person_far_away(img: np.ndarray, t: float) -> None:
    if 1.0 <= t <= 4.5:  # 20 x 55 px: the same person at twice the distance
        _box(img, -20 + (t - 1.0) * 90, 60, 20, 55, (60, 50, 40))


def car_far_away(img: np.ndarray, t: float) -> None:
    if 1.0 <= t <= 4.0:  # 50 x 22 px crossing the top of the frame
        _box(img, -50 + (t - 1.0) * 130, 40, 50, 22, (150, 20, 20))


def cat_crosses(img: np.ndarray, t: float) -> None:
    if 1.0 <= t <= 4.0:  # 26 x 14 px
        _box(img, 20 + (t - 1.0) * 80, 200, 26, 14, (120, 110, 100))


def leaves_in_wind(img: np.ndarray, t: float) -> None:
    if 1.0 <= t <= 4.0:  # six 10 x 10 px patches flickering in a hedge
        rng = np.random.default_rng(int(t * FPS))
        for k in range(6):
            if rng.random() < 0.6:
                _box(img, 230 + 12 * (k % 3), 20 + 12 * (k // 3), 10, 10, (30, 90 + 60 * k % 3, 30))


SCENES: dict[str, tuple[Draw, str]] = {
    "person walks by": (person_walks, "a person"),
    "person raises a sign": (person_raises_sign, "a person (the sign's target)"),
    "person far away": (person_far_away, "a person, far"),
    "car passes far away": (car_far_away, "a vehicle, far"),
    "cat crosses": (cat_crosses, "an animal"),
    "leaves in the wind": (leaves_in_wind, "nothing worth a notification"),
}


def write_clip(path: Path, draw: Draw, seed: int = 3) -> Path:
    background = sample_background(SIZE, seed)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000
        for i in range(round(SECONDS * FPS)):
            img = background.copy()
            draw(img, i / FPS)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def peak_motion(path: Path) -> list[float]:
    """Each event's peak motion share, as the camera's own decode and segmenter cut them."""
    settings = MotionConfig()
    detector = MotionDetector(settings)
    segmenter = EventSegmenter(settings, DETECT_FPS)
    source = FileSource(path, DETECT_FPS, backend="pyav")
    source.open()
    segments = []
    for frame in source.frames():
        segments += segmenter.feed(frame, detector.update_frame(frame))
    segments += segmenter.flush()
    source.close()
    return [segment.peak_score for segment in segments]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=None, help="default: the config's")
    args = parser.parse_args()
    camera = CameraConfig.model_validate({"id": "porch", "source": "x.mp4", "objects": ["person"]})
    if args.threshold is not None:
        camera = camera.model_copy(update={"unsure_min_motion": args.threshold})
    print(f"cameras[].unsure_min_motion = {camera.unsure_min_motion}; VLM answer: no objects\n")
    print("| scene | what is there | events | peak motion (share of frame) | no objects → |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, (draw, what) in SCENES.items():
            clip = write_clip(Path(folder) / f"{name.replace(' ', '_')}.mp4", draw)
            peaks = peak_motion(clip)
            decisions = {
                "withheld"
                if is_filtered(camera, (), (), is_ring=False, analysed=True, peak_motion=p)
                else "published (unsure)"
                for p in peaks
            }
            shares = ", ".join(f"{p:.3f}" for p in peaks) or "-"
            print(f"| {name} | {what} | {len(peaks)} | {shares} | {', '.join(sorted(decisions))} |")


if __name__ == "__main__":
    main()
