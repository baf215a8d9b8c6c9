"""Decode one camera's source in a worker thread: motion, segments, reconnect with backoff.

The thread never waits for the VLM: closed segments, status and motion on/off changes are
handed to the event loop (`call_soon_threadsafe`) through the callbacks given at construction.
A source that never delivered a frame is `unavailable`; one that delivered frames and then
failed or stalled is `offline`. Live streams are retried with exponential backoff (reset once
frames flow again) and go back `online` on the first new frame; a file is never retried (it
will not heal). Error texts are redacted before they are kept or logged.

File frames are stamped with the wall clock when decoded ("start + media offset" would lie in
the future, as files decode faster than real time).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipelines.camera.ports import CameraMetricsPort
from pipelines.config import CameraConfig
from pipelines.events import utcnow
from pipelines.ingest.ids import file_identity
from pipelines.ingest.motion import MotionDetector
from pipelines.ingest.opening import DetectSource, open_source
from pipelines.ingest.segment import EventSegmenter, Segment
from pipelines.ingest.sources import Backoff, Frame, FrameSource, SourceError
from pipelines.redact import redact

logger = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0  # a camera down for hours is still retried every minute
BEST_FRAME_SIDE = 1280  # thumbnail long side
FPS_WINDOW_S = 2.0


class _Stop(Exception):
    """Raised inside the decode thread when the loop is asked to stop."""


class DecodeLoop:
    """Decode one camera until its file ends (or until stopped, for live streams)."""

    def __init__(
        self,
        camera: CameraConfig,
        *,
        key_frame_side: int,
        on_segment: Callable[[Segment], None],
        on_status: Callable[[str], None],
        on_activity: Callable[[bool], None],
        metrics: CameraMetricsPort,
        secrets: Iterable[str] = (),
        backoff: Backoff | None = None,
    ) -> None:
        self._camera = camera
        self._key_frame_side = key_frame_side
        self._on_segment = on_segment
        self._on_status = on_status
        self._on_activity = on_activity
        self._metrics = metrics
        self._secrets = tuple(secrets)
        self._backoff = backoff or Backoff(BACKOFF_START_S, BACKOFF_MAX_S)
        self._stop = threading.Event()
        self.status = "starting"
        self.frames = 0
        self.segments = 0
        self.fps = 0.0
        self.failures = 0
        self.retry_in_s: float | None = None
        self.last_error: str | None = None
        self.activity = False
        self.done = False
        self._latest: Frame | None = None  # doorbells only: what a ring analyses
        self.file_identity: str | None = None
        self._source: FrameSource | None = None  # the one decoding now
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"decode-{camera.id}")

    @property
    def main_stream(self) -> dict[str, Any] | None:
        """A camera with a detect_source: its main stream's state (None: one stream)."""
        source = self._source
        if not isinstance(source, DetectSource):
            return None if self._camera.detect_source is None else {"status": "starting"}
        return source.main.state()

    @property
    def latest_frame(self) -> Frame | None:
        """A doorbell's newest frame (its `image` is converted when a ring reads it)."""
        return self._latest

    @property
    def best_frame_side(self) -> int | None:
        """An event's thumbnail long side: the main stream's own size for a camera with a
        detect_source (what it is for), else at most BEST_FRAME_SIDE."""
        return None if self._camera.detect_source else BEST_FRAME_SIDE

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Stop decoding; an open motion event is closed and handed over first."""
        self._stop.set()

    async def run(self) -> None:
        """Decode, and for live streams reconnect with backoff, until stopped or the file ends."""
        is_file = self._camera.source_type == "file"
        loop = asyncio.get_running_loop()
        try:
            while not self._stop.is_set():
                frames_before = self.frames
                try:
                    # a thread of its own, not the loop's default pool: that pool has a few
                    # threads for every camera in the process (and the analysers' JPEG work), and a
                    # decode loop holds its thread for as long as the camera runs
                    await loop.run_in_executor(self._executor, self._decode_blocking, loop)
                    if is_file:
                        break
                    raise SourceError("stream ended")  # a live stream that ends is an outage
                except _Stop:
                    break
                except SourceError as exc:
                    self._record_failure(str(exc))
                except Exception as exc:  # a bug must not end the camera silently
                    detail = redact(traceback.format_exc(), self._secrets)
                    self._record_failure(f"{type(exc).__name__}: {exc}", detail)
                if is_file:
                    break
                if self.frames > frames_before:
                    self._backoff.reset()  # it worked for a while: retry quickly
                await self._wait_to_retry(self._backoff.next_delay())
        except asyncio.CancelledError:
            self._stop.set()  # the decode thread must end too
            raise
        finally:
            self._executor.shutdown(wait=False)  # its one thread ends with the last decode
        self.done = True
        if self.status == "online" and is_file:
            self._set_status("offline")

    async def _wait_to_retry(self, delay: float) -> None:
        self.retry_in_s = delay
        logger.info("camera %s: reconnecting in %.0f s", self._camera.id, delay)
        deadline = time.monotonic() + delay
        while not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        self.retry_in_s = None

    def _record_failure(self, message: str, detail: str | None = None) -> None:
        self.failures += 1
        self.last_error = redact(message, self._secrets)
        if detail is not None:
            logger.error("camera %s failed: %s", self._camera.id, detail)
        else:
            logger.error("camera %s: %s", self._camera.id, self.last_error)
        self._set_status("unavailable" if self.frames == 0 else "offline")

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self._on_status(status)

    def _decode_blocking(self, loop: asyncio.AbstractEventLoop) -> None:
        camera = self._camera
        source = self._source = open_source(camera, secrets=self._secrets)
        is_file = camera.source_type == "file"
        detector = MotionDetector(camera.motion, zones=camera.zones)
        segmenter = EventSegmenter(
            camera.motion,
            camera.detect_fps,
            key_frame_side=self._key_frame_side,
            best_frame_side=self.best_frame_side,
        )
        window_start, window_frames, online = time.monotonic(), 0, False
        try:
            source.open()
            if is_file:
                self.file_identity = file_identity(camera.source)
            for frame in source.frames():
                if self._stop.is_set():
                    break  # the open event is closed below: motion seen is never dropped
                if is_file:
                    frame = frame.at(utcnow())
                if not online:
                    online = True
                    loop.call_soon_threadsafe(self._set_status, "online")
                self.frames += 1
                window_frames += 1
                if camera.doorbell:  # a reference, converted only when a ring asks for it
                    self._latest = frame
                for segment in segmenter.feed(frame, detector.update_frame(frame)):
                    self._submit(loop, segment)
                source.set_active(segmenter.active)  # a main stream decodes all while it is
                self._set_activity(loop, segmenter.active)
                self._metrics.frame(time.time() - frame.wall.timestamp())
                elapsed = time.monotonic() - window_start
                if elapsed >= FPS_WINDOW_S:
                    self.fps = window_frames / elapsed
                    self._metrics.fps_now(self.fps)
                    window_start, window_frames = time.monotonic(), 0
            if window_frames:  # the last (partial) window, e.g. a file shorter than one
                elapsed = max(time.monotonic() - window_start, 1e-3)
                self._metrics.fps_now(window_frames / elapsed)
            for segment in segmenter.flush():
                self._submit(loop, segment)
            self._set_activity(loop, False)
            if self._stop.is_set():
                raise _Stop
        finally:
            source.close()

    def _submit(self, loop: asyncio.AbstractEventLoop, segment: Segment) -> None:
        self.segments += 1
        loop.call_soon_threadsafe(self._on_segment, segment)

    def _set_activity(self, loop: asyncio.AbstractEventLoop, active: bool) -> None:
        if active != self.activity:
            self.activity = active
            loop.call_soon_threadsafe(self._on_activity, active)
