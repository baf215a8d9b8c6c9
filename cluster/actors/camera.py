"""One Ray actor per camera: decode → motion → event segments → VLM → event-store.

Decoding and motion run in a worker thread and never wait for the VLM: closed segments go to a
bounded `PendingEvents` queue (`camera.max_pending_events`, K) drained by `MAX_IN_FLIGHT` async
VLM calls. When the queue is full, new motion is merged into the newest queued event (key
frames of both within `motion.max_frames`, so the merged motion reaches the VLM too; its end and
frame count extended) and counted in `status()["merged_pending"]`. Only JPEG bytes cross to
other actors (the VLM request and the thumbnail). Zones gate motion in `MotionDetector`; near-
duplicates, VLM budgets and the object filter sit in `cluster.actors.noise.NoiseControl`.

Saving, stop: analysed events reach the store through a bounded `SaveBuffer` that retries
failed saves (see save_buffer.py). `drain(timeout_s)` stops decoding (an open motion event is
closed and queued) and waits until everything is analysed and saved; at the deadline, or after
`hurry()` (a second Ctrl-C), pending events get the fallback text and are saved all the same.

Faults: a source that never delivered a frame is `unavailable`, one that delivered frames and
then failed or stalled is `offline`; live streams are retried with exponential backoff 1 → 60 s
(reset once frames flow again) and go back `online` on the first new frame. A file that cannot
be read is not retried (it will not heal). Every error text is redacted before it is stored,
logged or returned (no `user:pass@` or known secret ever leaves the actor).

Restarts: a crashed actor restarted by Ray resumes on its first call (the runtime polls
`status`); a file replays with ids derived from file and media offset (`pipelines.ingest.ids`),
and a segment stored already (by the crashed instance or an earlier run) is not saved or
published again. Live streams and rings keep random ids.

Timestamps: `timestamp` is the wall clock when the first motion frame was decoded, for files too
("start + media offset" would lie in the future, as files decode faster than real time); file
events keep that frame's media time in `media_offset_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
from dataclasses import replace
from typing import Any

import numpy as np
import ray

from cluster.actors.noise import NoiseControl
from cluster.actors.save_buffer import OutboxMetrics, SaveBuffer
from cluster.metrics import CameraMetrics, node_of_this_process
from pipelines.config import CameraConfig, Config
from pipelines.events import Event, smart_detection_type, utcnow
from pipelines.imaging import encode_jpeg, resize_long_side
from pipelines.ingest.ids import file_identity, segment_event_id
from pipelines.ingest.motion import MotionDetector
from pipelines.ingest.segment import EventSegmenter, PendingEvents, Segment, ring_segment
from pipelines.ingest.sources import Backoff, SourceError, open_source
from pipelines.naming import (
    PUBLISHER_ACTOR,
    STORE_ACTOR,
    VLM_APP,
    VLM_DEPLOYMENT,
    camera_actor_name,
)
from pipelines.redact import redact
from pipelines.vlm.types import VLMRequest, VLMResult, fallback_result, wait_budget_s

logger = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
MAX_IN_FLIGHT = 2  # concurrent VLM calls per camera (K, the queue bound, is per camera config)
BEST_FRAME_SIDE = 1280  # thumbnail long side
SAVE_GRACE_S = 15.0  # after the drain deadline: time left for the fallback events' saves
DRAIN_POLL_S = 0.05


class _Stop(Exception):
    """Raised inside the decode thread when the actor is asked to stop."""


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a finished task's outcome, so an abandoned one logs no 'never retrieved'."""
    if not task.cancelled():
        task.exception()


def _reconstructed() -> bool:
    """Whether Ray restarted this actor (after a crash) rather than creating it."""
    try:
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:
        return False


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
        self._queue = PendingEvents(
            self._camera.max_pending_events, max_frames=self._camera.motion.max_frames
        )
        self._wake: asyncio.Event | None = None
        self._segments = 0
        self._in_flight = 0
        self._activity = False
        self._backoff = Backoff(BACKOFF_START_S, BACKOFF_MAX_S)
        self._retry_in_s: float | None = None
        self._store: Any = None
        self._task: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._restarted = _reconstructed()
        self._node = node_of_this_process()
        self._file_identity: str | None = None
        self._metrics = OutboxMetrics(camera_id)
        self._stage_metrics = CameraMetrics(camera_id)
        self._saves = SaveBuffer(
            camera_id,
            self._save,
            max_events=self._camera.max_unsaved_events,
            on_saved=self._saved,
            on_dropped=self._dropped,
        )
        self._already_stored = 0  # file segments found stored already (a replay)
        self._hurry = asyncio.Event()
        self._draining = False
        self._fallback_at_stop = 0
        self._rings_accepted = 0
        self._rings_merged = 0
        self._last_ring = float("-inf")
        self._noise = NoiseControl(config, self._camera)  # dedupe, budgets, object filter

    # ---- control -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start ingesting in the background; returns at once."""
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._workers = [loop.create_task(self._analyse_worker()) for _ in range(MAX_IN_FLIGHT)]
        self._task = loop.create_task(self._ingest_forever())
        if self._restarted:
            logger.warning("camera %s: restarted by Ray; resuming ingest", self._camera.id)

    async def stop(self) -> None:
        """Stop decoding (an open motion event is closed and queued); queued events stay."""
        self._stop.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=10)

    async def drain(self, timeout_s: float) -> dict[str, Any]:
        """Stop decoding, then analyse and save everything pending; returns the counts.

        After timeout_s (or `hurry()`), pending events get the fallback text instead of
        waiting for the VLM; saves then have SAVE_GRACE_S more before what is left is dropped
        (counted and logged with ids: the store is gone).
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._draining = True
        await self.stop()
        if not await self._wait_drained(deadline):
            pending = len(self._queue) + self._in_flight
            if pending and not self._hurry.is_set():
                logger.warning(
                    "camera %s: drain deadline passed; %d pending event(s) get the fallback text",
                    self._camera.id,
                    pending,
                )
            self._hurry.set()
            self._saves.retry_now()
            if not await self._wait_drained(time.monotonic() + SAVE_GRACE_S, saving=True):
                self._saves.abandon("store unavailable at stop")
        return self._drain_counts()

    async def hurry(self) -> None:
        """Stop waiting for the VLM (second Ctrl-C): pending events get the fallback text."""
        if not self._hurry.is_set():
            logger.warning("camera %s: not waiting for the VLM any more", self._camera.id)
        self._hurry.set()
        self._saves.retry_now()

    async def _wait_drained(self, deadline: float, *, saving: bool = False) -> bool:
        """Wait until nothing is queued, analysed or unsaved (True) or the deadline; unless
        `saving` (the last phase, saves only), also until hurried and nothing is analysed."""
        while not self._drained():
            hurried = not saving and self._hurry.is_set() and not self._analysing()
            if time.monotonic() >= deadline or hurried:
                return self._drained()
            await asyncio.sleep(DRAIN_POLL_S)
        return True

    def _analysing(self) -> bool:
        return self._in_flight > 0 or len(self._queue) > 0

    def _drained(self) -> bool:
        return not self._analysing() and self._saves.depth == 0

    def _drain_counts(self) -> dict[str, Any]:
        return {
            "segments": self._segments,
            "events": self._events,
            "merged_pending": self._queue.merged,
            "fallback_at_stop": self._fallback_at_stop,
            "unsaved": self._saves.depth,
            "dropped": self._saves.dropped,
        }

    async def ring(self) -> dict[str, Any]:
        """Doorbell ring: analyse the newest frame now and flag the event as a ring.

        At most one ring waits for analysis, and a ring within `ring_merge_s` of the last
        accepted one merges into it (accepted, no new event): a held or hammered button makes
        one event and holds one frame.
        """
        if not self._camera.doorbell:
            return {"accepted": False, "reason": "camera is not a doorbell"}
        if self._draining:
            return {"accepted": False, "reason": "camera is stopping"}
        frame = self._latest_frame
        if frame is None:
            return {"accepted": False, "reason": "no frame received yet"}
        now_s = time.monotonic()
        if now_s - self._last_ring < self._camera.ring_merge_s:
            self._rings_merged += 1
            return {"accepted": True, "merged": True}
        self._last_ring = now_s
        segment = ring_segment(frame, utcnow(), self._config.vlm.image_size, BEST_FRAME_SIDE)
        merged = self._queue.push_ring(segment)  # True: it replaced a ring still waiting
        if not merged:
            self._rings_accepted += 1  # a ring event will come of it
        if self._wake is not None:
            self._wake.set()
        logger.info("camera %s: doorbell ring queued", self._camera.id)
        return {"accepted": True, "merged": True} if merged else {"accepted": True}

    async def status(self) -> dict[str, Any]:
        """Live state for `liveobject status`, the API and --until-done."""
        if self._restarted and self._task is None and not self._stop.is_set():
            await self.start()  # Ray restarted us after a crash: carry on
        self._metrics.unsaved(self._saves.depth)
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
            "done": self._done and self._drained(),
            "failures": self._failures,
            "retry_in_s": self._retry_in_s,
            "last_error": self._last_error,
            "last_event": self._last_event,
            "doorbell": self._camera.doorbell,
            "node": self._node,
            "pid": os.getpid(),
            **self._delivery_status(),
            **self._noise.status(),
        }

    def _delivery_status(self) -> dict[str, Any]:
        """Outbox, ring and restart counters (see the module docstring)."""
        return {
            **self._saves.status(),
            "already_stored": self._already_stored,
            "rings_accepted": self._rings_accepted,
            "rings_merged": self._rings_merged + self._queue.rings_merged,
            "ring_pending": self._queue.ring_pending,
            "restarted": self._restarted,
            "draining": self._draining,
            "fallback_at_stop": self._fallback_at_stop,
        }

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
        is_file = camera.source_type == "file"
        detector = MotionDetector(camera.motion, zones=camera.zones)
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
            if is_file:
                self._file_identity = file_identity(camera.source)
            for frame in source.frames():
                if self._stop.is_set():
                    break  # the open event is closed below: motion seen is never dropped
                if is_file:  # stamped when decoded (see the module docstring)
                    frame = replace(frame, wall=utcnow())
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
                self._stage_metrics.frame(time.time() - frame.wall.timestamp())
                elapsed = time.monotonic() - window_start
                if elapsed >= 2.0:
                    self._fps = window_frames / elapsed
                    self._stage_metrics.fps_now(self._fps)
                    window_start, window_frames = time.monotonic(), 0
            if window_frames:  # the last (partial) window, e.g. a file shorter than one
                elapsed = max(time.monotonic() - window_start, 1e-3)
                self._stage_metrics.fps_now(window_frames / elapsed)
            for segment in segmenter.flush():
                self._submit(loop, segment)
            self._set_activity(loop, False)
            if self._stop.is_set():
                raise _Stop
        finally:
            source.close()

    def _submit(self, loop: asyncio.AbstractEventLoop, segment: Segment) -> None:
        # never blocks: the event loop queues it (or merges it when K events already wait)
        self._segments += 1
        loop.call_soon_threadsafe(self._enqueue, segment)

    def _enqueue(self, segment: Segment) -> None:
        if self._queue.push(segment):
            self._stage_metrics.drop("merged_pending")
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
                self._noise.release(segment)  # no-op unless the analysis failed midway

    async def _analyse(self, segment: Segment, is_ring: bool) -> None:
        camera = self._camera
        side = self._config.vlm.image_size
        frames = tuple(
            encode_jpeg(resize_long_side(f, side), quality=85) for f in segment.key_frames
        )
        request = VLMRequest(
            camera_id=camera.id,
            camera_name=camera.name,
            frames=frames,
            prompt=camera.prompt,
            # one deadline for the camera and the engine: both stop waiting at this moment
            deadline_at=time.time() + self._config.vlm.deadline_s,
        )
        started = time.monotonic()
        result = await self._noise.describe(segment, request, is_ring, self._describe)
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
            **self._identity(segment, is_ring),
            **self._noise.event_fields(segment, result, is_ring),
        )
        thumbnail = encode_jpeg(segment.best_frame, quality=self._config.storage.thumbnail_quality)
        self._noise.analysed(segment, event)
        self._saves.put(event, thumbnail)  # saved (and retried) in order by the outbox

    def _identity(self, segment: Segment, is_ring: bool) -> dict[str, Any]:
        """A file segment's derived event id and media offset; nothing for rings and streams."""
        if is_ring or self._file_identity is None:
            return {}
        return {
            "event_id": segment_event_id(self._camera.id, self._file_identity, segment.start_pts),
            "media_offset_s": max(0.0, segment.start_pts),
        }

    async def _describe(self, request: VLMRequest) -> VLMResult:
        """The VLM's answer within `vlm.deadline_s`, else (or once hurried) the fallback."""
        from ray import serve

        if self._hurry.is_set():
            self._fallback_at_stop += 1
            return fallback_result(request)
        deadline = wait_budget_s(request, self._config.vlm.deadline_s)
        hurry = asyncio.ensure_future(self._hurry.wait())
        response: Any = None
        try:
            handle = serve.get_deployment_handle(VLM_DEPLOYMENT, app_name=VLM_APP)
            response = handle.remote(request)
            call = asyncio.ensure_future(response)
            call.add_done_callback(_consume)  # a cancelled request's error is expected
            done, _ = await asyncio.wait(
                {call, hurry}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED
            )
            if call in done:
                result: VLMResult = call.result()
                return result
            call.cancel()
            response.cancel()
            if hurry in done:
                self._fallback_at_stop += 1
                why = "stopping"
            else:
                why = "deadline"
            logger.warning(
                "camera %s: no VLM answer (%s); storing the event with the fallback text",
                self._camera.id,
                why,
            )
        except Exception as exc:
            logger.warning(
                "camera %s: VLM unavailable (%s); storing the event with the fallback text",
                self._camera.id,
                type(exc).__name__,
            )
        finally:
            hurry.cancel()
        return fallback_result(request)

    # ---- saving (through self._saves) -----------------------------------------------------
    async def _save(self, event: Event, thumbnail: bytes | None) -> Event:
        """One save on the event-store (SaveBuffer retries it); a replayed file segment that
        is stored already is returned as stored, not saved (so not published) again."""
        try:
            if self._store is None:
                self._store = ray.get_actor(STORE_ACTOR, namespace=self._config.ray.namespace)
            if event.media_offset_s is not None:  # a file segment: maybe stored by a replay
                stored: Event | None = await self._store.get.remote(event.event_id)
                if stored is not None:
                    self._already_stored += 1
                    return stored
            saved: Event = await self._store.save.remote(event, thumbnail)
            return saved
        except Exception:
            self._store = None  # look it up again next time (it may have been restarted)
            raise

    def _dropped(self, _event: Event) -> None:
        self._metrics.dropped()
        self._stage_metrics.drop("unsaved_buffer_full")

    def _saved(self, saved: Event) -> None:
        self._stage_metrics.event(saved.objects_detected)
        self._events += 1
        self._merged += saved.merged_motion
        self._last_event = {
            "event_id": saved.event_id,
            "timestamp": saved.timestamp.isoformat(),
            "description": saved.description[:255],
        }

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


def launch_camera(config: Config, camera_id: str) -> tuple[Any, Any]:
    """Create (or find) the actor for one camera and start it: (actor, ref of `start`).

    The ref resolves once Ray has placed the actor and it runs (see cluster.placement).
    """
    actor = CameraActor.options(  # type: ignore[attr-defined]
        name=camera_actor_name(camera_id),
        namespace=config.ray.namespace,
        get_if_exists=True,
        scheduling_strategy="SPREAD",
        num_cpus=config.camera(camera_id).num_cpus,
    ).remote(config, camera_id)
    return actor, actor.start.remote()


def start_camera(config: Config, camera_id: str) -> Any:
    """Create (or find) the actor for one camera and start it."""
    return launch_camera(config, camera_id)[0]
