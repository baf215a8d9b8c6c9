"""Motion detection and event segmentation on generated frames and videos."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import MotionConfig
from pipelines.imaging import encode_jpeg, resize_long_side
from pipelines.ingest.motion import MotionDetector, MotionResult
from pipelines.ingest.segment import EventSegmenter, Segment
from pipelines.ingest.sources import FileSource, Frame
from pipelines.samples import generate_sample_video, render_sample_frame, sample_background

FPS = 5.0
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _frame(i: int, image: np.ndarray, fps: float = FPS) -> Frame:
    return Frame(index=i, pts_s=i / fps, wall=T0 + timedelta(seconds=i / fps), image=image)


def _run(images: Iterable[np.ndarray], settings: MotionConfig, fps: float = FPS) -> list[Segment]:
    detector = MotionDetector(settings)
    segmenter = EventSegmenter(settings, fps)
    segments: list[Segment] = []
    for i, image in enumerate(images):
        frame = _frame(i, image, fps)
        segments += segmenter.feed(frame, detector.update(image))
    return segments + segmenter.flush()


def _scene(seed: int = 0, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    return sample_background(size, seed)


def _moving(n: int, windows: list[tuple[float, float]], fps: float = FPS) -> list[np.ndarray]:
    bg = _scene()
    return [render_sample_frame(bg, i / fps, objects=1, motion_windows=windows) for i in range(n)]


def test_fresh_noise_every_frame_is_not_motion() -> None:
    rng = np.random.default_rng(1)
    bg = _scene().astype(np.int16)
    images = [np.clip(bg + rng.normal(0, 6, bg.shape), 0, 255).astype(np.uint8) for _ in range(50)]
    detector = MotionDetector(MotionConfig())
    results = [detector.update(im) for im in images]
    assert not any(r.motion for r in results)
    assert _run(images, MotionConfig()) == []


def test_one_moving_object_is_one_event() -> None:
    window = (2.0, 4.0)
    segments = _run(_moving(40, [window]), MotionConfig())
    assert len(segments) == 1
    seg = segments[0]
    assert abs(seg.start_pts - window[0]) <= 1.0
    assert abs(seg.end_pts - window[1]) <= 1.0
    assert seg.start_wall == T0 + timedelta(seconds=seg.start_pts)
    assert 1 <= len(seg.key_frames) <= 3 and seg.merged_motion == 0
    assert seg.frame_count >= 5


def test_global_brightness_jump_is_not_an_event() -> None:
    bg = _scene()
    bright = np.clip(bg.astype(np.int16) + 70, 0, 255).astype(np.uint8)
    images = [bg] * 10 + [bright] * 15 + [bg] * 15
    detector = MotionDetector(MotionConfig())
    results = [detector.update(im) for im in images]
    assert not any(r.motion for r in results)
    assert detector.recalibrations == 2
    assert _run(images, MotionConfig()) == []
    # the same scene without recalibration would be motion: the test can fail
    loose = MotionDetector(MotionConfig(recalibrate_ratio=1.0))
    assert any(loose.update(im).motion for im in images)


def test_motion_inside_mask_is_ignored() -> None:
    images = _moving(30, [(1.0, 4.0)])
    # motion frame is 180 px high: the whole 320x240 input scales to 240x180
    full = [[(0, 0), (239, 0), (239, 179), (0, 179)]]
    assert _run(images, MotionConfig(mask=full)) == []
    top = [[(0, 0), (239, 0), (239, 40), (0, 40)]]  # the object runs across the middle
    assert len(_run(images, MotionConfig(mask=top))) == 1


def test_boxes_are_in_input_pixels() -> None:
    bg = _scene()
    detector = MotionDetector(MotionConfig())
    detector.update(bg)
    moved = bg.copy()
    moved[100:140, 200:260] = 255
    result = detector.update(moved)
    assert result.motion and 0 < result.score < 0.2
    x1, y1, x2, y2 = max(result.boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    assert abs(x1 - 200) <= 8 and abs(y1 - 100) <= 8 and abs(x2 - 260) <= 8 and abs(y2 - 140) <= 8


@pytest.fixture(scope="module")
def two_window_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "two.mp4"
    return generate_sample_video(
        path, seconds=10, fps=10, objects=2, seed=3, motion_windows=[(1.0, 3.0), (6.0, 8.0)]
    )


def test_generated_two_window_video_gives_two_events(two_window_clip: Path) -> None:
    settings = MotionConfig()
    detector = MotionDetector(settings)
    segmenter = EventSegmenter(settings, 5)
    segments: list[Segment] = []
    activity = []
    with FileSource(two_window_clip, 5) as source:
        for frame in source.frames():
            segments += segmenter.feed(frame, detector.update(frame.image))
            activity.append(segmenter.active)
    segments += segmenter.flush()
    assert len(segments) == 2
    for seg, (start, end) in zip(segments, [(1.0, 3.0), (6.0, 8.0)], strict=True):
        assert abs(seg.start_pts - start) <= 1.0 and abs(seg.end_pts - end) <= 1.0
        assert len(seg.key_frames) == 3
        assert all(k.dtype == np.uint8 and k.flags["C_CONTIGUOUS"] for k in seg.key_frames)
        assert max(seg.key_frames[0].shape[:2]) <= 384
        assert 0 <= seg.peak_index < 3
        assert seg.best_frame.shape == (240, 320, 3)
    assert activity[0] is False and any(activity) and activity[-1] is False


# --- segmentation rules on synthetic motion results -------------------------------------------


def _feed(pattern: str, settings: MotionConfig, fps: float = 10.0, side: int = 64) -> list[Segment]:
    """pattern: one char per frame, 'M' motion (score by position), '.' still."""
    segmenter = EventSegmenter(settings, fps, key_frame_side=side)
    segments: list[Segment] = []
    for i, ch in enumerate(pattern):
        image = np.full((48, 64, 3), i % 256, dtype=np.uint8)
        score = 0.1 + (0.5 if i == pattern.find("MMMMP") + 4 else 0.0) if ch in "MP" else 0.0
        if ch == "P":
            score = 0.9
        result = MotionResult(
            score=score, boxes=((0, 0, 1, 1),) if ch in "MP" else (), motion=ch in "MP"
        )
        segments += segmenter.feed(_frame(i, image, fps), result)
    return segments + segmenter.flush()


def test_min_motion_frames() -> None:
    settings = MotionConfig(min_motion_frames=3, end_after_s=1.0)
    # isolated pairs never reach 3 consecutive frames
    assert _feed("..MM..MM...MM.....", settings) == []
    segs = _feed("..MMM" + "." * 20, settings)
    assert len(segs) == 1 and segs[0].start_pts == pytest.approx(0.2)
    assert segs[0].end_pts == pytest.approx(0.4) and segs[0].frame_count == 3


def test_end_after_s_merges_short_pauses() -> None:
    settings = MotionConfig(min_motion_frames=1, end_after_s=1.0)
    # a 0.5 s pause is merged, a 1.5 s pause splits
    merged = _feed("MMM" + "." * 5 + "MMM" + "." * 15 + "MM" + "." * 15, settings)
    assert len(merged) == 2
    assert merged[0].merged_motion == 1 and merged[1].merged_motion == 0
    assert merged[0].start_pts == 0.0 and merged[0].end_pts == pytest.approx(1.0)
    assert merged[0].frame_count == 11


def test_max_event_s_cuts_long_motion() -> None:
    settings = MotionConfig(min_motion_frames=1, end_after_s=1.0, max_event_s=2.0)
    segs = _feed("M" * 50 + "." * 20, settings)  # 5 s of motion at 10 fps
    assert len(segs) == 3
    assert [round(s.start_pts, 1) for s in segs] == [0.0, 2.1, 4.2]
    assert all(s.duration_s <= 2.0 + 1e-6 for s in segs)
    assert sum(s.frame_count for s in segs) == 50


def test_cooldown_between_events() -> None:
    # events at 0.0, 1.7 (inside a 3 s cooldown from 0.1) and 3.4 (after it)
    pattern = "MM" + "." * 15 + "MM" + "." * 15 + "MM" + "." * 15
    no_cool = _feed(pattern, MotionConfig(min_motion_frames=2, end_after_s=1.0))
    assert len(no_cool) == 3
    cool = _feed(pattern, MotionConfig(min_motion_frames=2, end_after_s=1.0, cooldown_s=3.0))
    assert [round(s.start_pts, 1) for s in cool] == [0.0, 3.4]


def test_key_frames_first_peak_last_spread() -> None:
    pattern = "MMMMMMMMMMMMMMMMPMMMMMMMMMMMMMMMMMMMM" + "." * 15
    segs = _feed(pattern, MotionConfig(min_motion_frames=1, end_after_s=1.0, max_frames=5))
    assert len(segs) == 1
    seg = segs[0]
    values = [int(k[0, 0, 0]) for k in seg.key_frames]  # frame index encoded in the pixels
    assert len(values) == 5 and values == sorted(values)
    assert values[0] == 0 and values[-1] == pattern.rfind("M")
    assert values[seg.peak_index] == pattern.find("P")
    assert int(seg.best_frame[0, 0, 0]) == pattern.find("P")
    one = _feed(pattern, MotionConfig(min_motion_frames=1, end_after_s=1.0, max_frames=1))[0]
    assert len(one.key_frames) == 1 and int(one.key_frames[0][0, 0, 0]) == pattern.find("P")


def test_key_frames_are_downscaled_and_memory_bounded() -> None:
    settings = MotionConfig(min_motion_frames=1, end_after_s=1.0, max_event_s=600, max_frames=16)
    segmenter = EventSegmenter(settings, 10.0, key_frame_side=32, pool_size=8)
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    result = MotionResult(score=0.1, boxes=((0, 0, 1, 1),), motion=True)
    for i in range(500):
        segmenter.feed(_frame(i, image, 10.0), result)
        event = segmenter._event
        assert event is not None and len(event.pool) <= 8
    (seg,) = segmenter.flush()
    # peak (= first), last, and the at most 8 pooled frames spread over the 50 s
    assert 3 <= len(seg.key_frames) <= 10
    assert seg.frame_count == 500 and seg.duration_s == pytest.approx(49.9)
    assert all(k.shape == (24, 32, 3) for k in seg.key_frames)


def test_jpeg_and_resize() -> None:
    import cv2

    image = _scene(size=(640, 480))
    small = resize_long_side(image, 100)
    assert small.shape == (75, 100, 3) and small.flags["C_CONTIGUOUS"]
    assert resize_long_side(small, 1000).shape == small.shape  # never upscales
    data = encode_jpeg(image, quality=80, max_side=200)
    assert data[:2] == b"\xff\xd8"
    decoded = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    assert decoded.shape == (150, 200, 3)
    # RGB order is kept: the green-tinted background stays greener than red
    assert decoded[..., 1].mean() > decoded[..., 0].mean()
    with pytest.raises(ValueError):
        encode_jpeg(image.astype(np.float32))


@pytest.mark.parametrize(
    ("size", "side", "halvings"),
    [
        ((1280, 720), 384, 1),
        ((1920, 1080), 384, 2),
        ((1920, 1080), 1280, 0),
        ((1281, 721), 384, 0),  # odd sides: no exact halving
        ((768, 432), 384, 1),  # the halving lands on the size: nothing more
    ],
)
def test_resize_long_side_halves_then_averages_the_rest(
    size: tuple[int, int], side: int, halvings: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact halvings while the picture is twice the size or more (even sides only), then one
    INTER_AREA step: the size asked for, and one INTER_AREA step's picture to within rounding."""
    import cv2

    image = _scene(size=size)
    width, height = size
    factor = side / max(size)
    wanted = (round(width * factor), round(height * factor))
    one_step = cv2.resize(image, wanted, interpolation=cv2.INTER_AREA)
    resize, calls = cv2.resize, []

    def counting(src: np.ndarray, dsize: tuple[int, int], *, interpolation: int) -> np.ndarray:
        assert interpolation == cv2.INTER_AREA
        calls.append(dsize)
        return resize(src, dsize, interpolation=interpolation)

    monkeypatch.setattr(cv2, "resize", counting)
    small = resize_long_side(image, side)
    assert small.shape == (wanted[1], wanted[0], 3) and small.flags["C_CONTIGUOUS"]
    halved = [(width >> k, height >> k) for k in range(1, halvings + 1)]
    assert calls == halved + ([wanted] if halved[-1:] != [wanted] else [])
    assert np.abs(small.astype(np.int16) - one_step).mean() < 1.0
