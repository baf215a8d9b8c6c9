"""One Ray actor per camera: decode → motion → event segments → VLM → event-store.

Decoding and motion run in a worker thread and never wait for the VLM: closed segments go to a
bounded `PendingEvents` queue (`camera.max_pending_events`, K) drained by `MAX_IN_FLIGHT` async
VLM calls. When the queue is full, new motion is merged into the newest queued event (its key
frames kept, its end and frame count extended) and counted in `status()["merged_pending"]`.
Only JPEG bytes cross to other actors (the VLM request and the thumbnail).

Faults: a source that never delivered a frame is `unavailable`, one that delivered frames and
then failed or stalled is `offline`; live streams are retried with exponential backoff 1 → 60 s
(reset once frames flow again) and go back `online` on the first new frame. A file that cannot
be read is not retried (it will not heal). Every error text is redacted before it is stored,
logged or returned (no `user:pass@` or known secret ever leaves the actor).

Timestamps: an event's `timestamp` is its start as wall clock. For files this is the wall clock
at which processing of the file started plus the media offset of the event's first frame (the
file replays as if it were live from that moment); for live streams it is the wall clock at
which the first motion frame was decoded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from typing import Any

import numpy as np
import ray

from pipelines.config import CameraConfig, Config
from pipelines.events import Event, smart_detection_type, utcnow
from pipelines.imaging import encode_jpeg, resize_long_side
from pipelines.ingest.motion import MotionDetector
from pipelines.ingest.segment import EventSegmenter, PendingEvents, Segment
from pipelines.ingest.sources import Backoff, SourceError, open_source
from pipelines.naming import (
    PUBLISHER_ACTOR,
    STORE_ACTOR,
    VLM_APP,
    VLM_DEPLOYMENT,
    camera_actor_name,
)
from pipelines.redact import redact
from pipelines.vlm.types import VLMRequest, VLMResult, fallback_result

logger = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
MAX_IN_FLIGHT = 2  # concurrent VLM calls per camera (K, the queue bound, is per camera config)
BEST_FRAME_SIDE = 1280  # thumbnail long side


class _Stop(Exception):
    """Raised inside the decode thread when the actor is asked to stop."""


@ray.remote(num_cpus=0.25, max_restarts=3)
class CameraActor:
    """Ingests one camera until its file ends (or forever for live streams)."""

    def __init__(self, config: Config, camera_id: str) -> None:
        self._config = config
        self._camera: CameraConfig = config.camera(camera_id)
        self._secrets = config.secret_values()
        self._status = "starting"
        self._done = False
        self._stop = threading.Event()
        self._frames = 0
        self._events = 0
        self._merged = 0
        self._failures = 0
        self._fps = 0.0
        self._last_error: str | None = None
        self._last_event: dict[str, Any] | None = None
        self._latest_frame: np.ndarray | None = None
        self._queue = PendingEvents(self._camera.max_pending_events)
        self._wake: asyncio.Event | None = None
        self._segments = 0
        self._in_flight = 0
        self._activity = False
        self._backoff = Backoff(BACKOFF_START_S, BACKOFF_MAX_S)
        self._retry_in_s: float | None = None
        self._store: Any = None
        self._task: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []

    # ---- control -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start ingesting in the background; returns at once."""
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._workers = [loop.create_task(self._analyse_worker()) for _ in range(MAX_IN_FLIGHT)]
        self._task = loop.create_task(self._ingest_forever())

    async def stop(self) -> None:
        """Stop decoding; events already queued are still analysed."""
        self._stop.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=10)

    async def ring(self) -> dict[str, Any]:
        """Doorbell ring: analyse the newest frame now and flag the event as a ring."""
        if not self._camera.doorbell:
            return {"accepted": False, "reason": "camera is not a doorbell"}
        frame = self._latest_frame
        if frame is None:
            return {"accepted": False, "reason": "no frame received yet"}
        now = utcnow()
        key = resize_long_side(frame, self._config.vlm.image_size)
        segment = Segment(
            start_wall=now,
            end_wall=now,
            start_pts=0.0,
            end_pts=0.0,
            key_frames=(key,),
            peak_index=0,
            frame_count=1,
            merged_motion=0,
            best_frame=resize_long_side(frame, BEST_FRAME_SIDE),
        )
        self._queue.push_ring(segment)
        if self._wake is not None:
            self._wake.set()
        logger.info("camera %s: doorbell ring queued", self._camera.id)
        return {"accepted": True}

    def status(self) -> dict[str, Any]:
        """Live state for `liveobject status`, the API and --until-done."""
        return {
            "camera_id": self._camera.id,
            "camera_name": self._camera.name,
            "status": self._status,
            "source_type": self._camera.source_type,
            "source": redact(self._camera.source, self._secrets),
            "fps": round(self._fps, 2),
            "frames": self._frames,
            "events": self._events,
            "merged_motion": self._merged,
            "segments": self._segments,
            "merged_pending": self._queue.merged,
            "queue_depth": self._queue.depth,
            "max_queue_depth": self._queue.max_depth,
            "max_pending_events": self._queue.max_pending,
            "in_flight": self._in_flight,
            "activity": self._activity,
            "ingest_done": self._done,
            "done": self._done and self._idle(),
            "failures": self._failures,
            "retry_in_s": self._retry_in_s,
            "last_error": self._last_error,
            "last_event": self._last_event,
            "doorbell": self._camera.doorbell,
        }

    def _idle(self) -> bool:
        return self._in_flight == 0 and len(self._queue) == 0

    # ---- ingest ----------------------------------------------------------------------------
    async def _ingest_forever(self) -> None:
        is_file = self._camera.source_type == "file"
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            frames_before = self._frames
            try:
                await asyncio.to_thread(self._decode_blocking, loop)
                if is_file:
                    break
                # A live stream that ends is an outage: come back with backoff.
                raise SourceError("stream ended")
            except _Stop:
                break
            except SourceError as exc:
                self._record_failure(str(exc))
            except Exception as exc:  # a bug must not kill the actor silently
                detail = redact(traceback.format_exc(), self._secrets)
                self._record_failure(f"{type(exc).__name__}: {exc}", detail)
            if is_file:
                break
            if self._frames > frames_before:
                self._backoff.reset()  # it worked for a while: retry quickly
            delay = self._backoff.next_delay()
            self._retry_in_s = delay
            logger.info("camera %s: reconnecting in %.0f s", self._camera.id, delay)
            deadline = time.monotonic() + delay
            while not self._stop.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            self._retry_in_s = None
        self._done = True
        if self._status == "online" and is_file:
            self._set_status("offline")

    def _record_failure(self, message: str, detail: str | None = None) -> None:
        self._failures += 1
        self._last_error = redact(message, self._secrets)
        if detail is not None:
            logger.error("camera %s failed: %s", self._camera.id, detail)
        else:
            logger.error("camera %s: %s", self._camera.id, self._last_error)
        # never delivered a frame: the source is unavailable; it worked before: offline
        self._set_status("unavailable" if self._frames == 0 else "offline")

    def _decode_blocking(self, loop: asyncio.AbstractEventLoop) -> None:
        camera = self._camera
        source = open_source(camera)
        detector = MotionDetector(camera.motion)
        segmenter = EventSegmenter(
            camera.motion,
            camera.detect_fps,
            key_frame_side=self._config.vlm.image_size,
            best_frame_side=BEST_FRAME_SIDE,
        )
        window_start = time.monotonic()
        window_frames = 0
        online = False
        try:
            source.open()
            for frame in source.frames():
                if self._stop.is_set():
                    raise _Stop
                if not online:
                    online = True
                    loop.call_soon_threadsafe(self._set_status, "online")
                self._frames += 1
                window_frames += 1
                if camera.doorbell:  # a reference, resized only when a ring asks for it
                    self._latest_frame = frame.image
                result = detector.update(frame.image)
                for segment in segmenter.feed(frame, result):
                    self._submit(loop, segment)
                self._set_activity(loop, segmenter.active)
                elapsed = time.monotonic() - window_start
                if elapsed >= 2.0:
                    self._fps = window_frames / elapsed
                    window_start, window_frames = time.monotonic(), 0
            for segment in segmenter.flush():
                self._submit(loop, segment)
            self._set_activity(loop, False)
        finally:
            source.close()

    def _submit(self, loop: asyncio.AbstractEventLoop, segment: Segment) -> None:
        # never blocks: the event loop queues it (or merges it when K events already wait)
        self._segments += 1
        loop.call_soon_threadsafe(self._enqueue, segment)

    def _enqueue(self, segment: Segment) -> None:
        if self._queue.push(segment):
            logger.info(
                "camera %s: VLM behind, motion merged into a queued event (%d merged so far)",
                self._camera.id,
                self._queue.merged,
            )
        if self._wake is not None:
            self._wake.set()

    def _set_activity(self, loop: asyncio.AbstractEventLoop, active: bool) -> None:
        if active != self._activity:
            self._activity = active
            loop.call_soon_threadsafe(self._notify_activity, active)

    # ---- analysis ------------------------------------------------------------------------
    async def _analyse_worker(self) -> None:
        assert self._wake is not None
        while True:
            item = self._queue.pop()
            if item is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            segment, is_ring = item
            self._in_flight += 1
            try:
                await self._analyse(segment, is_ring)
            except Exception as exc:
                logger.error(
                    "camera %s: event analysis failed: %s",
                    self._camera.id,
                    redact(f"{type(exc).__name__}: {exc}", self._secrets),
                )
            finally:
                self._in_flight -= 1

    async def _analyse(self, segment: Segment, is_ring: bool) -> None:
        camera = self._camera
        side = self._config.vlm.image_size
        frames = tuple(
            encode_jpeg(resize_long_side(f, side), quality=85) for f in segment.key_frames
        )
        request = VLMRequest(
            camera_id=camera.id, camera_name=camera.name, frames=frames, prompt=camera.prompt
        )
        started = time.monotonic()
        result = await self._describe(request)
        latency_ms = (time.monotonic() - started) * 1000
        objects = tuple(result.objects)
        event = Event(
            camera_id=camera.id,
            camera_name=camera.name,
            description=result.description or f"Motion detected on {camera.name}",
            objects_detected=objects,
            confidence=result.confidence,
            source_type=camera.source_type,
            timestamp=segment.start_wall,
            ended_at=segment.end_wall,
            smart_detection_type=smart_detection_type(objects),
            is_doorbell_ring=True if is_ring else None,
            provider_used=result.provider_used,
            analysis_mode=result.analysis_mode,
            ai_confidence=result.ai_confidence,
            frame_count=segment.frame_count,
            merged_motion=segment.merged_motion,
            vlm_latency_ms=round(latency_ms, 1),
        )
        thumbnail = encode_jpeg(segment.best_frame, quality=self._config.storage.thumbnail_quality)
        if self._store is None:
            self._store = ray.get_actor(STORE_ACTOR, namespace=self._config.ray.namespace)
        try:
            saved: Event = await self._store.save.remote(event, thumbnail)
        except Exception:
            self._store = None  # look it up again next time (it may have been restarted)
            raise
        self._events += 1
        self._merged += segment.merged_motion
        self._last_event = {
            "event_id": saved.event_id,
            "timestamp": saved.timestamp.isoformat(),
            "description": saved.description[:255],
        }

    async def _describe(self, request: VLMRequest) -> VLMResult:
        from ray import serve

        deadline = self._config.vlm.deadline_s
        try:
            handle = serve.get_deployment_handle(VLM_DEPLOYMENT, app_name=VLM_APP)
            result: VLMResult = await asyncio.wait_for(handle.remote(request), timeout=deadline)
            return result
        except Exception as exc:
            logger.warning(
                "camera %s: VLM unavailable (%s); storing the event with the fallback text",
                self._camera.id,
                type(exc).__name__,
            )
            return fallback_result(request)

    # ---- MQTT side effects (fire and forget) ---------------------------------------------
    def _publisher(self) -> Any:
        if not self._config.mqtt.enabled:
            return None
        try:
            return ray.get_actor(PUBLISHER_ACTOR, namespace=self._config.ray.namespace)
        except ValueError:
            return None

    def _set_status(self, status: str) -> None:
        if status == self._status:
            return
        self._status = status
        publisher = self._publisher()
        if publisher is not None:
            publisher.set_camera_status.remote(self._camera.id, status, self._camera.source_type)

    def _notify_activity(self, active: bool) -> None:
        publisher = self._publisher()
        if publisher is not None:
            publisher.set_activity.remote(self._camera.id, active)


def start_camera(config: Config, camera_id: str) -> Any:
    """Create (or find) the actor for one camera and start it."""
    actor = CameraActor.options(  # type: ignore[attr-defined]
        name=camera_actor_name(camera_id),
        namespace=config.ray.namespace,
        get_if_exists=True,
        scheduling_strategy="SPREAD",
    ).remote(config, camera_id)
    actor.start.remote()
    return actor
