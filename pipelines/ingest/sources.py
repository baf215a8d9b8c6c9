"""Frame sources: decord for files, PyAV for live streams (rtsp/http/udp), sampled at detect_fps.

Every source yields `Frame`s: an RGB uint8 image (from PyAV, converted only when it is read)
and the small grey picture motion runs on. Errors surface as `SourceError`, whose
message is redacted (a URL's password never appears in an exception or a log line).

Timestamps: `Frame.pts_s` is media time in seconds. For files, `Frame.wall` is the wall clock at
which processing started plus the frame's pts offset (so a file replays as if it were live from
that moment); for live streams it is the wall clock at which the frame was decoded.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import av
import numpy as np

from pipelines.events import SOURCE_SCHEMES, SourceType
from pipelines.imaging import fit_long_side, grey_small, resize_long_side
from pipelines.redact import redact, url_password

logger = logging.getLogger(__name__)

__all__ = [
    "Backoff",
    "FileSource",
    "Frame",
    "FrameSource",
    "SourceError",
    "StreamSource",
    "sample_indices",
]

OPEN_TIMEOUT_S = 10.0  # a live stream that has not opened by then is unavailable


def one_decoder_thread(stream: av.video.stream.VideoStream) -> None:
    """Decode `stream` on the calling thread alone (call before its first frame).

    A process's cameras are its parallelism. FFmpeg's own frame or slice threads cost CPU to
    hand frames between them and add no frames a second when the cores are busy with cameras;
    frame threads also hold each picture back. So a stream must decode in real time on one core
    (README, "Several cameras per process").
    """
    stream.codec_context.thread_count = 1


DECORD_THREADS = 1  # decord's decoder likewise (its default, 0, lets FFmpeg pick about one a core)


class Backoff:
    """Exponential retry delay: start, 2x start, ... capped at maximum; reset() after a success."""

    def __init__(self, start: float = 1.0, maximum: float = 60.0) -> None:
        if not 0 < start <= maximum:
            raise ValueError("need 0 < start <= maximum")
        self.start = start
        self.maximum = maximum
        self.current = start

    def next_delay(self) -> float:
        """The delay to wait now; the following one doubles (up to maximum)."""
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Back to the start delay (the source worked again)."""
        self.current = self.start


def _safe(text: str, url: str = "") -> str:
    return redact(text, url_password(url) + url_password(text))


class SourceError(Exception):
    """A frame source failed to open or stopped delivering frames; the message is redacted."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(_safe(message, url))


class _Picture:
    """A frame's picture, shared by its copies (`Frame.at`): the decoder's frame until the RGB
    array is made. FFmpeg's scaler of one `VideoFrame` must never run from two threads at
    once (PyAV keeps one converter per frame and rewrites the frame's colour fields while it
    converts: a ring converting the doorbell's newest frame while motion scales it crashed the
    process), so every use of `video` holds `lock`."""

    __slots__ = ("height", "image", "lock", "video", "width")

    def __init__(self, image: np.ndarray | None, video: av.VideoFrame | None) -> None:
        self.image = image
        self.video = video
        self.lock = threading.Lock()
        if video is not None:
            self.height, self.width = int(video.height), int(video.width)
        elif image is not None:
            self.height, self.width = int(image.shape[0]), int(image.shape[1])
        else:
            raise ValueError("a Frame needs an image or a decoded video frame")


class Frame:
    """One decoded frame: its sampled index, media time, wall clock, and picture.

    A frame from PyAV keeps the decoder's picture: it becomes an RGB array only when `image`
    is first read (a doorbell's ring, or a thumbnail without a size limit), motion reads
    `grey()` and an event's key frames `fitted()`, each made by FFmpeg's scaler in one call at
    the size needed. A frame made from an array (decord, tests) holds its RGB image from the
    start. Safe to use from two threads (the decode thread and a ring).

    A camera with a `detect_source` gives its frames the main stream's newest picture as
    `main`: motion reads the (small) detect picture, and `image` and `fitted()` (what the VLM
    and the thumbnail see) read the main one. Without it (the main stream down), both read the
    detect picture; `from_main` says which.
    """

    __slots__ = ("_main", "_picture", "height", "index", "pts_s", "wall", "width")

    def __init__(
        self,
        index: int,
        pts_s: float,
        wall: datetime,
        image: np.ndarray | None = None,
        *,
        video: av.VideoFrame | None = None,
    ) -> None:
        self.index = index
        self.pts_s = pts_s
        self.wall = wall
        self._picture = _Picture(image, None if image is not None else video)
        self.height, self.width = self._picture.height, self._picture.width
        self._main: _Picture | None = None  # the main stream's picture (`with_main`)

    def __repr__(self) -> str:
        return f"Frame(index={self.index}, pts_s={self.pts_s}, wall={self.wall!r})"

    @property
    def from_main(self) -> bool:
        """Whether `image` and `fitted()` come from the main stream (see the class docstring)."""
        return self._main is not None

    @property
    def converted(self) -> bool:
        """Whether the full-size RGB array (of what `image` shows) was made."""
        return self._shown.image is not None

    @property
    def _shown(self) -> _Picture:
        return self._picture if self._main is None else self._main

    @property
    def image(self) -> np.ndarray:
        """The RGB image (H,W,3) uint8, C-contiguous; converted once, on first use."""
        return _rgb(self._shown)

    def grey(self, width: int, height: int) -> np.ndarray:
        """The (detect) frame as a (height, width) grey uint8 picture, for motion."""
        picture = self._picture
        if picture.image is None:
            with picture.lock:
                if picture.video is not None:
                    small = picture.video.reformat(width=width, height=height, format="gray")
                    return np.asarray(small.to_ndarray())
        return grey_small(_rgb(picture), width, height)

    def fitted(self, side: int) -> np.ndarray:
        """The RGB image with its long side at most `side` pixels (area-averaged), C-contiguous:
        from the decoder's picture in one scaler call while the full RGB array was not made."""
        picture = self._shown
        width, height = fit_long_side(picture.height, picture.width, side)
        if picture.image is None and (width, height) != (picture.width, picture.height):
            with picture.lock:
                if picture.video is not None:
                    small = picture.video.reformat(
                        width=width, height=height, format="rgb24", interpolation="AREA"
                    )
                    return np.ascontiguousarray(small.to_ndarray())
        return resize_long_side(_rgb(picture), side)

    def with_main(self, main: _Picture | None) -> Frame:
        """This frame showing the main stream's picture (None: its own), sharing the pictures."""
        frame = self.at(self.wall)
        frame._main = main
        return frame

    def at(self, wall: datetime) -> Frame:
        """The same frame stamped with another wall clock (the pictures and locks shared)."""
        frame = Frame.__new__(Frame)
        frame.index, frame.pts_s, frame.wall = self.index, self.pts_s, wall
        frame.height, frame.width = self.height, self.width
        frame._picture, frame._main = self._picture, self._main
        return frame


def _rgb(picture: _Picture) -> np.ndarray:
    """A picture's RGB array, converted from the decoder's frame once, on first use."""
    image = picture.image
    if image is None:
        with picture.lock:
            if picture.image is None:
                assert picture.video is not None
                picture.image = np.ascontiguousarray(picture.video.to_ndarray(format="rgb24"))
                picture.video = None  # the decoder's picture is not needed any more
            image = picture.image
    return image


class FrameSource(ABC):
    """A source of RGB frames sampled at about detect_fps."""

    source_type: SourceType

    def __init__(self, detect_fps: float) -> None:
        if detect_fps <= 0:
            raise ValueError("detect_fps must be positive")
        self.detect_fps = float(detect_fps)
        self._opened = False

    @abstractmethod
    def open(self) -> None:
        """Open the underlying file or stream (SourceError when it cannot be read)."""

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield frames at about detect_fps until the end of a file (a stream never ends)."""

    @abstractmethod
    def close(self) -> None:
        """Release decoders, threads and sockets."""

    @abstractmethod
    def describe(self) -> str:
        """A redacted one-line description of the source, safe to log."""

    def set_active(self, active: bool) -> None:
        """Told by the consumer, from its thread, whether a motion event is open (a source
        with a main stream then decodes all of it; others ignore it)."""
        return None

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def sample_indices(n_frames: int, fps: float, detect_fps: float) -> list[int]:
    """Frame indices to keep so that frames are sampled by time at detect_fps."""
    if n_frames <= 0 or fps <= 0:
        return []
    if detect_fps >= fps:
        return list(range(n_frames))
    step = fps / detect_fps
    out: list[int] = []
    k = 0
    while True:
        idx = round(k * step)
        if idx >= n_frames:
            break
        if not out or idx != out[-1]:
            out.append(idx)
        k += 1
    return out


def _next_sample(k: int, step: float) -> int:
    return round(k * step)


def _probe_file(path: Path) -> tuple[float, int]:
    """Check a file is a readable video with PyAV before decord touches it; (fps, frames)."""
    if not path.exists():
        raise SourceError(f"video file not found: {path}")
    if not path.is_file():
        raise SourceError(f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise SourceError(f"video file is empty (0 bytes): {path}")
    try:
        with av.open(str(path), mode="r", timeout=10.0) as container:
            if not container.streams.video:
                raise SourceError(f"no video stream in {path}")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            frames = int(stream.frames or 0)
            one_decoder_thread(stream)
            # decode one frame: catches files whose header parses but whose data does not
            for _frame in container.decode(stream):
                break
            else:
                raise SourceError(f"no decodable video frame in {path}")
    except SourceError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(
            f"cannot read video file {path}: {exc.__class__.__name__}: {exc}"
        ) from exc
    if fps <= 0:
        raise SourceError(f"video file {path} has no frame rate")
    return fps, frames


class FileSource(FrameSource):
    """A video file decoded with decord (default) or PyAV, sampled by time at detect_fps."""

    source_type: SourceType = "file"

    def __init__(
        self,
        path: str | Path,
        detect_fps: float,
        *,
        backend: Literal["decord", "pyav"] = "decord",
    ) -> None:
        super().__init__(detect_fps)
        self.path = Path(path)
        self.backend = backend
        self.fps = 0.0
        self.frame_count = 0
        self._reader: Any = None
        self._start_wall = datetime.now(UTC)

    def describe(self) -> str:
        """A redacted one-line description of the source, safe to log."""
        return _safe(f"file {self.path} ({self.backend}, {self.detect_fps:g} fps)")

    def open(self) -> None:
        """Validate the file with a PyAV probe, then open the decoder."""
        if self._opened:
            return
        self.fps, self.frame_count = _probe_file(self.path)
        if self.backend == "decord":
            import decord

            try:
                self._reader = decord.VideoReader(
                    str(self.path), ctx=decord.cpu(0), num_threads=DECORD_THREADS
                )
                self.frame_count = len(self._reader)
                self.fps = float(self._reader.get_avg_fps()) or self.fps
            except Exception as exc:  # decord raises DECORDError (RuntimeError) on bad data
                raise SourceError(f"decord cannot open {self.path}: {exc}") from exc
        self._start_wall = datetime.now(UTC)
        self._opened = True
        logger.info("opened %s: %.3g fps, %d frames", self.describe(), self.fps, self.frame_count)

    def frames(self) -> Iterator[Frame]:
        """Yield sampled frames until the end of the file."""
        self.open()
        if self.backend == "decord":
            yield from self._frames_decord()
        else:
            yield from self._frames_pyav()

    def _frames_decord(self) -> Iterator[Frame]:
        """One `get_batch` a sampled frame, so that each frame owns its array (a row of a batch
        would keep the whole batch alive, or cost a second copy); it also costs less CPU."""
        reader = self._reader
        for i in sample_indices(self.frame_count, self.fps, self.detect_fps):
            try:
                image = reader.get_batch([i]).asnumpy()[0]
                pts = float(reader.get_frame_timestamp(i)[0])
            except Exception as exc:
                raise SourceError(f"decoding {self.path} failed near frame {i}: {exc}") from exc
            wall = self._start_wall + timedelta(seconds=pts)
            yield Frame(index=i, pts_s=pts, wall=wall, image=image)

    def _frames_pyav(self) -> Iterator[Frame]:
        step = self.fps / self.detect_fps if self.detect_fps < self.fps else 1.0
        k, target = 0, 0
        try:
            with av.open(str(self.path), mode="r", timeout=10.0) as container:
                stream = container.streams.video[0]
                one_decoder_thread(stream)
                for i, vframe in enumerate(container.decode(stream)):
                    if i < target:
                        continue
                    pts = float(vframe.time) if vframe.time is not None else i / self.fps
                    wall = self._start_wall + timedelta(seconds=pts)
                    yield Frame(i, pts, wall, video=vframe)  # RGB only when an event needs it
                    while target <= i:
                        k += 1
                        target = _next_sample(k, step)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"decoding {self.path} failed: {exc}") from exc

    def close(self) -> None:
        """Drop the decoder."""
        self._reader = None
        self._opened = False


def stream_options(url: str) -> dict[str, str]:
    """FFmpeg options for a live stream: small probe, no buffering, RTSP over TCP."""
    options = {
        "probesize": "500000",
        "analyzeduration": "1000000",
        "fflags": "nobuffer",
        "flags": "low_delay",
    }
    if urlsplit(url).scheme.lower() in ("rtsp", "rtsps"):
        options["rtsp_transport"] = "tcp"  # large key frames over UDP arrive torn
    return options


class StreamSource(FrameSource):
    """A live stream decoded by PyAV in a background thread into a one-slot latest-frame buffer.

    The consumer always receives the newest decoded frame, at most detect_fps times a second;
    frames decoded in between are dropped, so a slow consumer never builds a backlog. A stall
    (no new frame for stall_timeout_s) or the end of the stream raises SourceError.
    """

    def __init__(
        self,
        url: str,
        detect_fps: float,
        stall_timeout_s: float = 10.0,
        *,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        options: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detect_fps)
        self.url = url
        self.stall_timeout_s = stall_timeout_s
        self.open_timeout_s = open_timeout_s
        scheme = urlsplit(url).scheme.lower() if "://" in url else "file"
        self.source_type = SOURCE_SCHEMES.get(scheme, "file")
        self.options = {**stream_options(url), **(options or {})}
        self._container: Any = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._latest: tuple[int, float, datetime, av.VideoFrame] | None = None
        self._seq = 0
        self._consumed = 0
        self._error: str | None = None
        self._stop = threading.Event()
        self.decoded = 0
        self.dropped = 0

    def describe(self) -> str:
        """A redacted one-line description of the source, safe to log."""
        return _safe(f"{self.source_type} stream {self.url} ({self.detect_fps:g} fps)", self.url)

    def open(self) -> None:
        """Connect and start the decode thread (SourceError when the stream cannot be opened)."""
        if self._opened:
            return
        # the consumer's stall check (stall_timeout_s) fires first; the read timeout only frees
        # the decode thread from a blocked read
        read_timeout = self._read_timeout()
        try:
            self._container = av.open(
                self.url,
                mode="r",
                options=self.options,
                timeout=(self.open_timeout_s, read_timeout),
            )
            if not self._container.streams.video:
                raise SourceError(f"no video stream in {self.url}", url=self.url)
        except SourceError:
            self._close_container()
            raise
        except Exception as exc:
            self._close_container()
            msg = (
                f"cannot open {self.source_type} stream {self.url}: {exc.__class__.__name__}: {exc}"
            )
            # `from None`: the chained FFmpeg error carries the raw URL (and its password)
            raise SourceError(msg, url=self.url) from None
        self._stop.clear()
        self._error = None
        self._opened = True
        self._thread = threading.Thread(target=self._decode_loop, name="stream-decode", daemon=True)
        self._thread.start()
        logger.info("opened %s", self.describe())

    def _read_timeout(self) -> float:
        return self.stall_timeout_s + 1.0

    def _decode_loop(self) -> None:
        container = self._container
        stream = container.streams.video[0]
        one_decoder_thread(stream)
        t0 = time.monotonic()
        first_pts: float | None = None
        last_pts = -1.0
        error = "stream ended (EOF)"
        try:
            for vframe in container.decode(stream):
                if self._stop.is_set():
                    return
                now = time.monotonic()
                pts = None if vframe.time is None else float(vframe.time)
                if pts is not None and first_pts is None:
                    first_pts = pts
                media = (pts - first_pts) if pts is not None and first_pts is not None else None
                if media is None or media <= last_pts:
                    media = max(now - t0, last_pts + 1e-3)
                last_pts = media
                # keep the decoded frame as is: only the frames the consumer takes are converted
                # to RGB (at detect_fps), the others are dropped unconverted
                with self._cond:
                    if self._latest is not None and self._latest[0] > self._consumed:
                        self.dropped += 1
                    self._seq += 1
                    self.decoded += 1
                    self._latest = (self._seq, media, datetime.now(UTC), vframe)
                    self._cond.notify_all()
        except av.ExitError:
            error = f"stream stalled: no data for {self._read_timeout():g}s"
        except Exception as exc:
            error = f"stream read failed: {exc.__class__.__name__}: {exc}"
        if not self._stop.is_set():
            with self._cond:
                self._error = _safe(error, self.url)
                self._cond.notify_all()

    def frames(self) -> Iterator[Frame]:
        """Yield the newest frame at most detect_fps times a second; SourceError on stall/EOF."""
        self.open()
        interval = 1.0 / self.detect_fps
        last_seq = 0
        next_due = time.monotonic()
        index = 0
        while True:
            delay = next_due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            deadline = time.monotonic() + self.stall_timeout_s
            with self._cond:
                while self._latest is None or self._latest[0] == last_seq:
                    if self._error is not None:
                        raise SourceError(f"{self._error} ({self.describe()})", url=self.url)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise SourceError(
                            f"stream stalled: no frame for {self.stall_timeout_s:g}s "
                            f"({self.describe()})",
                            url=self.url,
                        )
                    self._cond.wait(remaining)
                seq, pts, wall, vframe = self._latest
                self._consumed = seq
            last_seq = seq
            next_due = max(next_due + interval, time.monotonic())
            yield Frame(index, pts, wall, video=vframe)  # RGB only when an event needs it
            index += 1

    def _close_container(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # closing a broken stream must not mask the original error
                logger.debug("closing %s failed", self.describe(), exc_info=False)

    def close(self) -> None:
        """Stop the decode thread and close the stream."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self._read_timeout() + 1.0)
            if thread.is_alive():
                logger.warning("decode thread of %s did not stop in time", self.describe())
                self._opened = False
                return  # leave the container to the daemon thread rather than freeing it under it
        self._close_container()
        self._opened = False
