"""A camera's frame source: one stream or file, or a detect sub-stream beside the main stream.

With `cameras[].detect_source` (Frigate's `roles: [detect]` / `[record]`), motion runs on the
small sub-stream and what the VLM and the thumbnail see comes from `source`, the main stream.
`MainStream` decodes the main stream in its own thread, and only what can be needed: its key
frames while nothing moves (about one picture per GOP, enough for an event's first frame or a
ring), every frame while a motion event is open (from the next key frame on: the frames in
between need the ones skipped). `DetectSource` gives each detect frame the main stream's newest
picture; when the main stream is down or behind, the detect frame is used instead (the event
says so, `Event.frames_from`). The main stream reconnects with backoff on its own and never
stops the detect stream.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import av

from pipelines.events import source_type_of
from pipelines.ingest.sources import (
    OPEN_TIMEOUT_S,
    Backoff,
    FileSource,
    Frame,
    FrameSource,
    SourceError,
    StreamSource,
    _Picture,
    one_decoder_thread,
    stream_options,
)
from pipelines.redact import redact, url_password

if TYPE_CHECKING:
    from pipelines.config import CameraConfig

logger = logging.getLogger(__name__)

__all__ = ["DetectSource", "MainStream", "open_source"]

MAIN_BACKOFF_START_S = 1.0
MAIN_BACKOFF_MAX_S = 60.0
MAX_AGE_MIN_S = 2.0  # the newest main picture is offered up to 1.5 key-frame intervals old
STOP_WAIT_S = 2.0


class MainStream:
    """The main stream of a camera with a detect sub-stream: its newest picture, kept by a
    decode thread that reconnects with backoff until stopped (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        stall_timeout_s: float = 10.0,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        backoff: Backoff | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.url = url
        self.stall_timeout_s = stall_timeout_s
        self.open_timeout_s = open_timeout_s
        self._secrets = (*secrets, *url_password(url))
        self._backoff = backoff or Backoff(MAIN_BACKOFF_START_S, MAIN_BACKOFF_MAX_S)
        self._all = False  # decode every frame (a motion event is open), not only key frames
        self._latest: tuple[float, _Picture] | None = None
        self._key_interval_s = MAX_AGE_MIN_S  # seen between the last two key frames
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.status = "starting"  # online | offline (had frames) | unavailable (never had)
        self.failures = 0
        self.last_error: str | None = None
        self.decoded = 0  # pictures decoded
        self.skipped = 0  # packets not decoded (not key frames while nothing moved)

    @property
    def max_age_s(self) -> float:
        """How old the newest picture may be and still be offered: 1.5 key-frame intervals (at
        least MAX_AGE_MIN_S, at most stall_timeout_s); older, the stream is behind."""
        return min(self.stall_timeout_s, max(MAX_AGE_MIN_S, 1.5 * self._key_interval_s))

    def describe(self) -> str:
        """A redacted one-line description, safe to log."""
        return redact(f"main stream {self.url}", self._secrets)

    def start(self) -> None:
        """Start the decode thread (once)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="main-decode", daemon=True)
            self._thread.start()

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Stop the decode thread, waiting at most `wait_s` (a blocked read ends at its own
        timeout: the daemon thread then exits without touching anything of ours)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=wait_s)
            if thread.is_alive():
                logger.warning(
                    "%s: decode thread still in a read; it ends on its own", self.describe()
                )

    def request_stop(self) -> None:
        """Ask the decode thread to end, without waiting."""
        self._stop.set()

    def want_all(self, active: bool) -> None:
        """Decode every frame (an event is open) or only the key frames."""
        self._all = active

    def latest(self) -> _Picture | None:
        """The newest picture, unless it is older than `max_age_s` (or there is none)."""
        with self._lock:
            latest = self._latest
        if latest is None or time.monotonic() - latest[0] > self.max_age_s:
            return None
        return latest[1]

    def state(self) -> dict[str, Any]:
        """For the camera's status: status (`behind`: online but its newest picture is too old
        to use), failures, last error (redacted), counters."""
        status = self.status
        if status == "online" and self.latest() is None:
            status = "behind"
        return {
            "status": status,
            "failures": self.failures,
            "last_error": self.last_error,
            "decoded": self.decoded,
            "skipped": self.skipped,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            before = self.decoded
            try:
                self._decode_once()
                error = "stream ended"
            except av.ExitError:
                error = f"stream stalled: no data for {self.stall_timeout_s + 1:g}s"
            except Exception as exc:  # any failure is retried: the detect stream goes on
                error = f"{exc.__class__.__name__}: {exc}"
            if self._stop.is_set():
                break
            self.failures += 1
            self.last_error = redact(f"{error} ({self.describe()})", self._secrets)
            self.status = "offline" if self.decoded else "unavailable"
            logger.warning("%s", self.last_error)
            if self.decoded > before:
                self._backoff.reset()  # it worked for a while: retry quickly
            self._stop.wait(self._backoff.next_delay())

    def _decode_once(self) -> None:
        container = av.open(
            self.url,
            mode="r",
            options=stream_options(self.url),
            timeout=(self.open_timeout_s, self.stall_timeout_s + 1.0),
        )
        try:
            if not container.streams.video:
                raise SourceError("no video stream", url=self.url)
            stream = container.streams.video[0]
            one_decoder_thread(stream)
            need_key = True
            last_key = opened = time.monotonic()
            flagged = False  # a demuxer that never flags key frames: decode everything
            for packet in container.demux(stream):
                if self._stop.is_set():
                    return
                now = time.monotonic()
                if packet.is_keyframe:
                    if flagged:
                        self._key_interval_s = now - last_key
                    flagged, last_key, need_key = True, now, False
                elif packet.size and (flagged or now - opened < self.stall_timeout_s):
                    if need_key or not self._all:
                        self.skipped += 1
                        need_key = True  # the frames after it need it: wait for a key frame
                        continue
                for vframe in packet.decode():
                    self.decoded += 1
                    with self._lock:
                        self._latest = (time.monotonic(), _Picture(None, vframe))
                    self.status = "online"
        finally:
            container.close()


class DetectSource(FrameSource):
    """Detect frames from the sub-stream, each with the main stream's newest picture."""

    def __init__(self, detect: StreamSource, main: MainStream) -> None:
        super().__init__(detect.detect_fps)
        self.detect = detect
        self.main = main
        self.source_type = source_type_of(main.url)

    def describe(self) -> str:
        """A redacted one-line description of both streams, safe to log."""
        return f"{self.detect.describe()}, {self.main.describe()}"

    def open(self) -> None:
        """Open the detect stream (SourceError when it cannot be read), then start the main
        one (whose failures are its own: retried in its thread)."""
        self.detect.open()
        self.main.start()

    def frames(self) -> Iterator[Frame]:
        """The detect stream's frames at detect_fps, with the main picture where there is one."""
        for frame in self.detect.frames():
            yield frame.with_main(self.main.latest())

    def set_active(self, active: bool) -> None:
        """While an event is open the main stream decodes every frame."""
        self.main.want_all(active)

    def close(self) -> None:
        """Stop both streams (the main stream told first, so that both wind down together)."""
        self.main.request_stop()
        self.detect.close()
        self.main.stop()


def open_source(
    camera: CameraConfig,
    *,
    force_pyav: bool = False,
    stall_timeout_s: float | None = None,
    open_timeout_s: float = OPEN_TIMEOUT_S,
    secrets: Iterable[str] = (),
) -> FrameSource:
    """Build the right (unopened) FrameSource for a camera: decord for files, PyAV for streams,
    and a DetectSource for a camera with a detect_source."""
    if stall_timeout_s is None:
        stall_timeout_s = float(camera.stall_timeout_s)
    source = camera.source
    try:
        kind = source_type_of(source)
    except ValueError as exc:
        raise SourceError(str(exc), url=source) from exc
    if kind == "file":
        path = source[len("file://") :] if source.startswith("file://") else source
        return FileSource(
            os.path.expanduser(path), camera.detect_fps, backend="pyav" if force_pyav else "decord"
        )
    if camera.detect_source is not None:
        detect = StreamSource(
            camera.detect_source,
            camera.detect_fps,
            stall_timeout_s=stall_timeout_s,
            open_timeout_s=open_timeout_s,
        )
        main = MainStream(
            source,
            stall_timeout_s=stall_timeout_s,
            open_timeout_s=open_timeout_s,
            secrets=secrets,
        )
        return DetectSource(detect, main)
    return StreamSource(
        source, camera.detect_fps, stall_timeout_s=stall_timeout_s, open_timeout_s=open_timeout_s
    )
