"""Frame sources: decord vs PyAV agree on files; bad files and dead streams raise SourceError."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import CameraConfig
from pipelines.ingest.opening import open_source
from pipelines.ingest.sources import FileSource, SourceError, StreamSource, sample_indices
from pipelines.samples import generate_sample_video
from tests.support.media import ffmpeg_threads


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    return generate_sample_video(path, seconds=4, fps=10, motion_windows=[(1.0, 2.5)])


def _camera(source: str | Path, detect_fps: float = 5) -> CameraConfig:
    return CameraConfig(id="cam", source=str(source), detect_fps=detect_fps)


@pytest.mark.parametrize("detect_fps", [5, 3, 10, 30])
def test_decord_and_pyav_sources_agree(clip: Path, detect_fps: float) -> None:
    decord_src = open_source(_camera(clip, detect_fps))
    pyav_src = open_source(_camera(clip, detect_fps), force_pyav=True)
    assert isinstance(decord_src, FileSource) and decord_src.backend == "decord"
    assert isinstance(pyav_src, FileSource) and pyav_src.backend == "pyav"
    with decord_src, pyav_src:
        a = list(decord_src.frames())
        b = list(pyav_src.frames())
    expected = 40 if detect_fps >= 10 else len(sample_indices(40, 10.0, detect_fps))
    assert len(a) == len(b) == expected
    assert [f.index for f in a] == [f.index for f in b]
    for fa, fb in zip(a, b, strict=True):
        assert abs(fa.pts_s - fb.pts_s) < 1e-3
        assert fa.image.shape == (240, 320, 3) and fa.image.dtype == np.uint8
        assert fa.image.flags["C_CONTIGUOUS"] and fb.image.flags["C_CONTIGUOUS"]
        # same decoder underneath: pixels match up to colour-conversion rounding
        assert np.abs(fa.image.astype(np.int16) - fb.image).mean() < 2.0
    # sampled by time: the k-th frame is the native frame nearest to k / detect_fps
    step = 1 / min(detect_fps, 10)
    for k, frame in enumerate(a):
        assert abs(frame.pts_s - k * step) <= 0.5 / 10 + 1e-3
    # wall = processing start + pts offset
    assert (a[-1].wall - a[0].wall).total_seconds() == pytest.approx(a[-1].pts_s - a[0].pts_s)


def test_pyav_decodes_on_the_callers_thread_alone(clip: Path) -> None:
    """No FFmpeg worker threads: an ingest process's cameras are its parallelism."""
    source = FileSource(clip, detect_fps=5, backend="pyav")
    with source:
        frames = source.frames()
        next(frames)
        assert ffmpeg_threads() == []
        assert len([next(frames), *frames]) == len(sample_indices(40, 10.0, 5)) - 1


def test_pyav_frames_become_rgb_only_where_an_event_needs_it(clip: Path) -> None:
    """A PyAV frame keeps the decoder's picture: motion reads its small grey picture and an
    event's key frames are scaled from it, so the only full-size RGB arrays made are the
    events' best frames (one each); the events cut are those of the RGB path (decord)."""
    from pipelines.config import MotionConfig
    from pipelines.imaging import grey_small, resize_long_side
    from pipelines.ingest.motion import MotionDetector
    from pipelines.ingest.segment import EventSegmenter

    def cut(frames: list, lazy: bool) -> list:
        detector = MotionDetector(MotionConfig())
        segmenter = EventSegmenter(MotionConfig(), 5.0, key_frame_side=160)
        segments = []
        for frame in frames:
            result = detector.update_frame(frame) if lazy else detector.update(frame.image)
            segments += segmenter.feed(frame, result)
        return segments + segmenter.flush()

    with open_source(_camera(clip), force_pyav=True) as source:
        lazy_frames = list(source.frames())
    assert not any(f.converted for f in lazy_frames), "nothing converted while decoding"
    lazy = cut(lazy_frames, lazy=True)
    with open_source(_camera(clip)) as source:  # decord: RGB arrays from the start
        rgb_frames = list(source.frames())
    assert all(f.converted for f in rgb_frames)
    eager = cut(rgb_frames, lazy=False)
    assert lazy and len(lazy) == len(eager)
    for a, b in zip(lazy, eager, strict=True):
        assert abs(a.start_pts - b.start_pts) <= 0.2 and abs(a.end_pts - b.end_pts) <= 0.2
        assert all(k.shape == (120, 160, 3) for k in a.key_frames)  # scaled, not RGB first
        assert a.best_frame.shape == (240, 320, 3)
    assert sum(f.converted for f in lazy_frames) == len(lazy)  # the best frames, nothing else

    frame = lazy_frames[0] if not lazy_frames[0].converted else lazy_frames[-1]
    grey = frame.grey(160, 120)
    key_frame = frame.fitted(200)
    assert grey.shape == (120, 160) and key_frame.shape == (150, 200, 3)
    assert not frame.converted
    rgb = frame.image  # converted now, once
    assert rgb.shape == (240, 320, 3) and rgb.flags["C_CONTIGUOUS"] and frame.image is rgb
    # the scaler's pictures and OpenCV's of the RGB differ by rounding, not by content
    assert np.abs(grey.astype(np.int16) - grey_small(rgb, 160, 120)).mean() < 4.0
    assert np.abs(key_frame.astype(np.int16) - resize_long_side(rgb, 200)).mean() < 4.0
    assert frame.fitted(400) is rgb  # not smaller: the RGB image itself
    assert frame.at(frame.wall).image is rgb  # a copy shares the picture


def _held_bytes(array: np.ndarray) -> int:
    """The bytes an array keeps alive: those of the array that owns its memory."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return int(array.nbytes)


def test_an_events_pooled_frames_are_scaled_only_when_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long event pools many frames but sends `max_frames`: a frame is scaled to a key
    frame only once it is chosen (each scaling costs more than decoding the frame), the pool
    holds at most LAZY_MAX_FRAMES unscaled frames, and an RGB frame (decord) keeps only its own
    picture's memory alive, never a decode batch of several frames."""
    from pipelines.config import MotionConfig
    from pipelines.ingest.motion import MotionDetector
    from pipelines.ingest.segment import LAZY_MAX_FRAMES, EventSegmenter
    from pipelines.ingest.sources import Frame

    clip = generate_sample_video(
        tmp_path / "long.mp4", seconds=8, fps=10, motion_windows=[(0.5, 7.5)]
    )
    scaled: list[int] = []
    fitted = Frame.fitted

    def counting(frame: Frame, side: int) -> np.ndarray:
        scaled.append(side)
        return fitted(frame, side)

    monkeypatch.setattr(Frame, "fitted", counting)
    settings = MotionConfig(max_event_s=600)
    for force_pyav in (True, False):
        scaled.clear()
        detector = MotionDetector(settings)
        segmenter = EventSegmenter(settings, 5.0, key_frame_side=160)
        segments, pooled = [], 0
        with open_source(_camera(clip), force_pyav=force_pyav) as source:
            for frame in source.frames():
                segments += segmenter.feed(frame, detector.update_frame(frame))
                event = segmenter._event
                if event is not None:
                    assert len(event.pool) <= 2 * settings.max_frames
                    pooled = max(pooled, event.frame_count)
                    if not force_pyav:  # RGB frames: unscaled, each array its own
                        for kept in event.pool:
                            assert kept.lazy and kept._frame is not None
                            assert _held_bytes(kept._frame.image) == 320 * 240 * 3
                            assert kept._frame.image.shape == (240, 320, 3)
        segments += segmenter.flush()
        (segment,) = segments
        assert pooled >= 30 and len(segment.key_frames) == settings.max_frames
        assert force_pyav or _held_bytes(segment.best_frame) == 320 * 240 * 3  # its own
        assert all(k.shape == (120, 160, 3) for k in segment.key_frames)
        # the key frames chosen (first, peak and last at most), scaled when the event closed
        assert len([side for side in scaled if side == 160]) <= settings.max_frames
    # more key frames wanted: a bigger pool, but at most LAZY_MAX_FRAMES unscaled frames
    many = MotionConfig(max_event_s=600, max_frames=16)
    for force_pyav in (False, True):
        detector = MotionDetector(many)
        segmenter = EventSegmenter(many, 5.0, key_frame_side=160)
        with open_source(_camera(clip), force_pyav=force_pyav) as source:
            frames = list(source.frames())
        most = 0
        for frame in frames:
            segmenter.feed(frame, detector.update_frame(frame))
            if segmenter._event is not None:
                most = max(most, sum(k.lazy for k in segmenter._event.pool))
        (segment,) = segmenter.flush()
        assert most == LAZY_MAX_FRAMES and len(segment.key_frames) == 16
    # a main stream's picture (often 4K) is scaled as it is pooled, never held
    plain, main = [f for f in frames if not f.converted][:2]
    assert segmenter._small(plain).lazy
    assert not segmenter._small(plain.with_main(main._shown)).lazy
    # ... and so is a picture larger than 1080p
    import av

    big = Frame(0, 0.0, plain.wall, video=av.VideoFrame(2560, 1440, "yuv420p"))
    kept = segmenter._small(big)
    assert not kept.lazy and kept.image.shape == (90, 160, 3)


def test_a_ring_converting_a_frame_while_motion_scales_it_is_safe(tmp_path: Path) -> None:
    """The doorbell's newest frame is read by a ring (the camera's event loop) while the decode
    thread scales the same frame for motion and key frames. FFmpeg's scaler of one frame run
    from two threads at once hung or crashed the process (PyAV keeps one converter per
    frame): each frame's picture is used by one thread at a time, and both get their answer."""
    import threading

    clip = generate_sample_video(tmp_path / "hd.mp4", seconds=2, fps=25, size=(1280, 720))
    with open_source(_camera(clip, detect_fps=25), force_pyav=True) as source:
        frames = list(source.frames())
    assert len(frames) >= 40 and not any(f.converted for f in frames)
    failures: list[BaseException] = []
    together = threading.Barrier(2, timeout=30)  # both sides start on each frame at once

    def decode_side() -> None:
        try:
            for frame in frames:
                together.wait()
                for _ in range(200):  # motion and key frames scale it until the ring converted it
                    assert frame.grey(320, 180).shape == (180, 320)
                    assert frame.fitted(384).shape == (216, 384, 3)
                    if frame.converted:
                        break
        except BaseException as exc:
            failures.append(exc)
            together.abort()

    def ring_side() -> None:
        try:
            for frame in frames:
                together.wait()
                assert frame.image.shape == (720, 1280, 3)
        except BaseException as exc:
            failures.append(exc)
            together.abort()

    # daemon threads: a hung conversion fails this test instead of holding pytest at exit
    threads = [threading.Thread(target=f, daemon=True) for f in (decode_side, ring_side)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "a conversion hung"
    assert not failures, failures
    assert all(f.converted for f in frames)


def test_sample_indices_by_time() -> None:
    assert sample_indices(10, 10.0, 5.0) == [0, 2, 4, 6, 8]
    assert sample_indices(30, 30.0, 4.0) == [0, 8, 15, 22]
    assert sample_indices(5, 10.0, 25.0) == [0, 1, 2, 3, 4]
    assert sample_indices(0, 10.0, 5.0) == []


def _bad_files(tmp_path: Path, clip: Path) -> dict[str, Path]:
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    half = tmp_path / "half.mp4"
    data = clip.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video, just text renamed to .mp4\n" * 20)
    return {
        "missing": tmp_path / "missing.mp4",
        "zero": zero,
        "truncated": half,
        "text": text,
    }


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing", "not found"),
        ("zero", "empty"),
        ("truncated", "cannot read video file"),
        ("text", "cannot read video file"),
    ],
)
@pytest.mark.parametrize("force_pyav", [False, True])
def test_bad_files_raise_source_error(
    tmp_path: Path, clip: Path, case: str, needle: str, force_pyav: bool
) -> None:
    path = _bad_files(tmp_path, clip)[case]
    source = open_source(_camera(path), force_pyav=force_pyav)
    with pytest.raises(SourceError) as info:
        list(source.frames())
    message = str(info.value)
    assert needle in message
    assert str(path) in message


def test_truncated_faststart_file_does_not_crash(tmp_path: Path, clip: Path) -> None:
    """moov at the front, half the media data missing: frames up to the cut, or a SourceError."""
    import av

    faststart = tmp_path / "fs.mp4"
    with (
        av.open(str(clip)) as src,
        av.open(str(faststart), "w", options={"movflags": "+faststart"}) as dst,
    ):
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = out
            dst.mux(packet)
    data = faststart.read_bytes()
    half = tmp_path / "fshalf.mp4"
    half.write_bytes(data[: len(data) // 2])
    for force_pyav in (False, True):
        try:
            frames = list(open_source(_camera(half), force_pyav=force_pyav).frames())
        except SourceError as exc:
            assert str(half) in str(exc)
        else:
            assert 0 < len(frames) < 20


def test_password_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = "rtsp://admin:hunter2@127.0.0.1:1/stream"
    source = open_source(_camera(url), stall_timeout_s=1.0, open_timeout_s=2.0)
    assert isinstance(source, StreamSource) and source.source_type == "rtsp"
    assert source.options["rtsp_transport"] == "tcp"
    assert "hunter2" not in source.describe()
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        source.open()
    assert time.monotonic() - started < 5.0
    text = str(info.value)
    assert "hunter2" not in text and "hunter2" not in repr(info.value)
    assert "127.0.0.1:1" in text and "admin" in text
    import traceback

    formatted = "".join(traceback.format_exception(info.value))
    assert "hunter2" not in formatted
    logging.getLogger("test").exception("open failed", exc_info=info.value)
    assert caplog.records and "hunter2" not in caplog.text
    for record in caplog.records:
        assert "hunter2" not in record.getMessage()
        assert "hunter2" not in str(record.args)
    source.close()


def test_unsupported_scheme_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="unsupported source scheme"):
        open_source(
            CameraConfig.model_construct(id="cam", source="ftp://u:pw123@h/x", detect_fps=5)
        )
