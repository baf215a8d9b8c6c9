"""StreamSource against a live MPEG-TS/UDP stream on loopback, served by PyAV in a subprocess."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.config import MotionConfig
from pipelines.ingest.motion import MotionDetector
from pipelines.ingest.opening import MainStream
from pipelines.ingest.segment import EventSegmenter, Segment
from pipelines.ingest.sources import SourceError, StreamSource
from pipelines.samples import generate_sample_video
from tests.support.media import ffmpeg_threads
from tests.support.network import free_udp_port
from tests.support.streams import TSServer

STALL_S = 2.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "loop.mp4"
    # 4 s loop: still, then an object crosses between 1.0 and 2.5 s
    return generate_sample_video(path, seconds=4, fps=10, motion_windows=[(1.0, 2.5)])


@pytest.fixture
def server(clip: Path) -> Iterator[TSServer]:
    srv = TSServer(clip, free_udp_port())
    srv.start()
    yield srv
    srv.kill()


def _source(port: int) -> StreamSource:
    return StreamSource(
        f"udp://127.0.0.1:{port}", detect_fps=5, stall_timeout_s=STALL_S, open_timeout_s=10
    )


def test_stream_frames_motion_stall_and_restart(server: TSServer) -> None:
    settings = MotionConfig(end_after_s=1.0)
    source = _source(server.port)
    assert source.source_type == "udp"
    source.open()
    detector = MotionDetector(settings)
    segmenter = EventSegmenter(settings, 5)
    segments: list[Segment] = []
    frames = 0
    started = time.monotonic()
    stream = source.frames()
    try:
        for frame in stream:
            frames += 1
            assert frame.image.shape == (240, 320, 3)
            segments += segmenter.feed(frame, detector.update(frame.image))
            if segments or time.monotonic() - started > 20:
                break
        assert segments, f"no motion event in {frames} frames"
        seg = segments[0]
        assert 0.5 <= seg.duration_s <= 3.0 and seg.key_frames
        # at most detect_fps frames a second reach the consumer
        elapsed = time.monotonic() - started
        assert frames <= 5 * elapsed + 3

        server.kill()
        killed = time.monotonic()
        with pytest.raises(SourceError, match="stall"):
            for _frame in stream:
                pass
        assert time.monotonic() - killed <= STALL_S + 1.5
    finally:
        source.close()

    server.start()
    again = _source(server.port)
    try:
        with again:
            got = 0
            for _frame in again.frames():
                got += 1
                if got == 5:
                    break
        assert got == 5
    finally:
        again.close()


def test_slow_consumer_gets_latest_frame(server: TSServer) -> None:
    source = _source(server.port)
    with source:
        stream = source.frames()
        first = next(stream)
        time.sleep(1.5)  # 15 frames arrive meanwhile at 10 fps; only the newest is kept
        second = next(stream)
        assert second.pts_s - first.pts_s >= 1.2
        assert source.dropped >= 8


def test_an_h264_stream_decodes_on_the_sources_own_thread(clip: Path) -> None:
    """No FFmpeg frame threads (named `av:h264:…`) for a stream or a camera's main stream: an
    ingest process's cameras are its parallelism."""
    server = TSServer(clip, free_udp_port(), codec="libx264")
    server.start()
    try:
        with _source(server.port) as source:
            frames = source.frames()
            for _ in range(5):
                next(frames)
            assert ffmpeg_threads() == []
        main = MainStream(f"udp://127.0.0.1:{server.port}", stall_timeout_s=STALL_S)
        main.want_all(True)
        main.start()
        try:
            deadline = time.monotonic() + 15
            while main.decoded < 10 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert main.decoded >= 10, main.state()
            assert ffmpeg_threads() == []
        finally:
            main.stop()
    finally:
        server.kill()
