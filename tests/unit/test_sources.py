"""Frame sources: decord vs PyAV agree on files; bad files and dead streams raise SourceError."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import CameraConfig
from pipelines.ingest.sources import (
    FileSource,
    SourceError,
    StreamSource,
    open_source,
    sample_indices,
)
from pipelines.samples import generate_sample_video


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


def test_pyav_frames_become_rgb_only_when_read_and_motion_reads_the_scalers_grey(
    clip: Path,
) -> None:
    """A PyAV frame keeps the decoder's picture: no RGB array until `image` is read; its
    small grey picture (FFmpeg's scaler) is the one the RGB path would give, and motion on
    it finds the same events."""
    from pipelines.config import MotionConfig
    from pipelines.imaging import grey_small, resize_long_side
    from pipelines.ingest.motion import MotionDetector
    from pipelines.ingest.segment import EventSegmenter

    with open_source(_camera(clip), force_pyav=True) as source:
        frames = list(source.frames())
    assert all(f._image is None for f in frames), "nothing converted to RGB while decoding"
    lazy, eager = MotionDetector(MotionConfig()), MotionDetector(MotionConfig())
    cut: dict[str, list[tuple[float, float]]] = {"lazy": [], "eager": []}
    segmenters = {name: EventSegmenter(MotionConfig(), 5.0) for name in cut}
    for frame in frames:
        grey = frame.grey(160, 120)
        assert grey.shape == (120, 160) and grey.dtype == np.uint8
        assert frame._image is None  # still not converted
        from_lazy = lazy.update_frame(frame)
        key_frame = frame.fitted(200)  # a key frame: scaled from the decoder's picture
        assert key_frame.shape == (150, 200, 3) and frame._image is None
        rgb = frame.image  # converted now, once
        assert np.abs(key_frame.astype(np.int16) - resize_long_side(rgb, 200)).mean() < 4.0
        assert frame.fitted(400) is rgb  # not smaller: the RGB image itself
        assert rgb.shape == (240, 320, 3) and rgb.flags["C_CONTIGUOUS"]
        assert frame._video is None and frame.image is rgb
        # the scaler's luma and OpenCV's grey of the RGB differ by rounding, not by content
        assert np.abs(grey.astype(np.int16) - grey_small(rgb, 160, 120)).mean() < 4.0
        from_rgb = eager.update(rgb)
        for name, result in (("lazy", from_lazy), ("eager", from_rgb)):
            segments = segmenters[name].feed(frame, result)
            cut[name] += [(s.start_pts, s.end_pts) for s in segments]
    for name in cut:
        cut[name] += [(s.start_pts, s.end_pts) for s in segmenters[name].flush()]
    assert cut["lazy"] and len(cut["lazy"]) == len(cut["eager"])
    for (a0, a1), (b0, b1) in zip(cut["lazy"], cut["eager"], strict=True):
        assert abs(a0 - b0) <= 0.2 and abs(a1 - b1) <= 0.2  # within a sampled frame
    with open_source(_camera(clip)) as source:  # decord: RGB arrays from the start
        first = next(iter(source.frames()))
    assert first._image is not None and first.at(first.wall).image is first.image


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
