"""One camera, composed: decode loop → analyser → outbox, with drain, hurry, ring and status.

Stop: `drain(timeout_s)` stops decoding (an open motion event is closed and queued) and waits
until everything is analysed and saved; at the deadline, or after `hurry()` (a second Ctrl-C),
pending events get the fallback text and are saved all the same; saves then have
`SAVE_GRACE_S` before what is left is dropped (counted and logged with ids: the store is gone).

Restarts: a file replays with ids derived from file and media offset; a segment the store has
already (its `save_many` answer says so) is counted in `already_stored` and not published again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from pipelines.camera.analysis import Analyser
from pipelines.camera.decode import DecodeLoop
from pipelines.camera.noise import NoiseControl
from pipelines.camera.outbox import SaveBuffer
from pipelines.camera.ports import CameraPorts
from pipelines.camera.status import CameraStatus
from pipelines.config import CameraConfig, Config
from pipelines.events import Event, utcnow
from pipelines.ingest.segment import Segment, ring_segment
from pipelines.ingest.sources import OPEN_TIMEOUT_S
from pipelines.redact import redact

logger = logging.getLogger(__name__)

SAVE_GRACE_S = 15.0  # after the drain deadline: time left for the fallback events' saves
DRAIN_POLL_S = 0.05
STOP_WAIT_S = 10.0  # how long stop() waits for the decode thread to hand over its last event


def stop_wait_s(camera: CameraConfig) -> float:
    """The longest a camera's decode thread can take to notice a stop: a blocked read or open
    ends at its own timeout (`stall_timeout_s` + 1 s, OPEN_TIMEOUT_S to open), plus slack."""
    return float(camera.stall_timeout_s) + 1.0 + OPEN_TIMEOUT_S + 5.0


class Camera:
    """Ingest, analyse and save one camera's events through the given ports."""

    def __init__(
        self,
        config: Config,
        camera_id: str,
        ports: CameraPorts,
        *,
        node: dict[str, str] | None = None,
        restarted: bool = False,
    ) -> None:
        self._config = config
        self.camera = camera = config.camera(camera_id)
        self._ports = ports
        self._secrets = config.secret_values()
        self._node = node or {"id": "", "ip": ""}
        self.restarted = restarted
        self._metrics = ports.metrics
        self._decode = DecodeLoop(
            camera,
            key_frame_side=config.vlm.image_size,
            on_segment=self._on_segment,
            on_status=self._on_status,
            on_activity=self._on_activity,
            metrics=ports.metrics,
            secrets=self._secrets,
        )
        self._noise = NoiseControl(config.vlm, camera, budget=ports.budget, metrics=ports.metrics)
        self._analyser = Analyser(
            camera,
            config.vlm,
            describe=ports.describe,
            noise=self._noise,
            on_event=self._on_event,
            metrics=ports.metrics,
            thumbnail_quality=config.storage.thumbnail_quality,
            file_identity=lambda: self._decode.file_identity,
            secrets=self._secrets,
        )
        self._saves = SaveBuffer(
            camera_id,
            self._save_many,
            max_events=camera.max_unsaved_events,
            on_saved=self._saved,
            on_dropped=self._dropped,
        )
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._events = 0
        self._merged = 0
        self._last_event: dict[str, Any] | None = None
        self._already_stored = 0
        self._draining = False
        self._rings_accepted = 0
        self._rings_merged = 0
        self._last_ring = float("-inf")

    @property
    def started(self) -> bool:
        """Whether start() ran."""
        return self._task is not None

    @property
    def stopping(self) -> bool:
        """Whether decoding was asked to stop."""
        return self._decode.stopping

    # ---- control -------------------------------------------------------------------------
    def start(self) -> None:
        """Start decoding and analysing on the running loop; returns at once."""
        if self._task is not None:
            return
        self._analyser.start()
        self._task = asyncio.get_running_loop().create_task(self._decode.run())
        if self.restarted:
            logger.warning("camera %s: restarted by Ray; resuming ingest", self.camera.id)

    async def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Stop decoding (an open motion event is closed and queued); queued events stay.
        Waits at most `wait_s` for the decode thread to hand over its last event."""
        self._decode.stop()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=wait_s)

    def close(self) -> None:
        """After a drain, for a camera removed from a running process: stop the analyser's
        workers and zero the camera's gauges; its callbacks do nothing from now on."""
        self._closed = True
        self._analyser.close()
        self._metrics.fps_now(0.0)
        self._metrics.unsaved(0)

    async def drain(self, timeout_s: float) -> dict[str, Any]:
        """Stop decoding, then analyse and save everything pending; returns the counts."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._draining = True
        await self.stop()
        if not await self._wait_drained(deadline):
            pending = len(self._analyser.queue) + self._analyser.in_flight
            if pending and not self._analyser.hurried.is_set():
                logger.warning(
                    "camera %s: drain deadline passed; %d pending event(s) get the fallback text",
                    self.camera.id,
                    pending,
                )
            self.hurry()
            if not await self._wait_drained(time.monotonic() + SAVE_GRACE_S, saving=True):
                self._saves.abandon("store unavailable at stop")
        return {
            "segments": self._decode.segments,
            "events": self._events,
            "merged_pending": self._analyser.queue.merged,
            "fallback_at_stop": self._analyser.fallback_at_stop,
            "unsaved": self._saves.depth,
            "dropped": self._saves.dropped,
        }

    def hurry(self) -> None:
        """Stop waiting for the VLM (second Ctrl-C): pending events get the fallback text."""
        if not self._analyser.hurried.is_set():
            logger.warning("camera %s: not waiting for the VLM any more", self.camera.id)
        self._analyser.hurry()
        self._saves.retry_now()

    async def _wait_drained(self, deadline: float, *, saving: bool = False) -> bool:
        """Wait until nothing is queued, analysed or unsaved (True) or the deadline; unless
        `saving` (the last phase, saves only), also until hurried and nothing is analysed."""
        while not self._drained():
            hurried = not saving and self._analyser.hurried.is_set() and not self._analyser.busy
            if time.monotonic() >= deadline or hurried:
                return self._drained()
            await asyncio.sleep(DRAIN_POLL_S)
        return True

    def _drained(self) -> bool:
        return not self._analyser.busy and self._saves.depth == 0

    def ring(self) -> dict[str, Any]:
        """Doorbell ring: analyse the newest frame now, as an event flagged as a ring.

        At most one ring waits for analysis, and a ring within `ring_merge_s` of the last
        accepted one merges into it: a held or hammered button makes one event, holds one frame.
        """
        if not self.camera.doorbell:
            return {"accepted": False, "reason": "camera is not a doorbell"}
        if self._draining:
            return {"accepted": False, "reason": "camera is stopping"}
        frame = self._decode.latest_frame
        if frame is None:
            return {"accepted": False, "reason": "no frame received yet"}
        now_s = time.monotonic()
        if now_s - self._last_ring < self.camera.ring_merge_s:
            self._rings_merged += 1
            return {"accepted": True, "merged": True}
        self._last_ring = now_s
        segment = ring_segment(
            frame.image,
            utcnow(),
            self._config.vlm.image_size,
            self._decode.best_frame_side,
            from_main=frame.from_main,
        )
        if self._analyser.submit_ring(segment):  # it replaced a ring still waiting
            return {"accepted": True, "merged": True}
        self._rings_accepted += 1
        logger.info("camera %s: doorbell ring queued", self.camera.id)
        return {"accepted": True}

    def status(self) -> CameraStatus:
        """The camera's state and counters right now."""
        self._metrics.unsaved(self._saves.depth)
        camera, decode, queue = self.camera, self._decode, self._analyser.queue
        return CameraStatus(
            camera_id=camera.id,
            camera_name=camera.name,
            status=decode.status,
            source_type=camera.source_type,
            source=redact(camera.source, self._secrets),
            fps=round(decode.fps, 2),
            frames=decode.frames,
            events=self._events,
            merged_motion=self._merged,
            segments=decode.segments,
            merged_pending=queue.merged,
            queue_depth=queue.depth,
            max_queue_depth=queue.max_depth,
            max_pending_events=queue.max_pending,
            in_flight=self._analyser.in_flight,
            activity=decode.activity,
            ingest_done=decode.done,
            done=decode.done and self._drained(),
            failures=decode.failures,
            retry_in_s=decode.retry_in_s,
            last_error=decode.last_error,
            last_event=self._last_event,
            doorbell=camera.doorbell,
            node=self._node,
            pid=os.getpid(),
            **self._saves.status(),
            already_stored=self._already_stored,
            rings_accepted=self._rings_accepted,
            rings_merged=self._rings_merged + queue.rings_merged,
            ring_pending=queue.ring_pending,
            restarted=self.restarted,
            draining=self._draining,
            fallback_at_stop=self._analyser.fallback_at_stop,
            noise=self._noise.status(),
            detect_source=redact(camera.detect_source, self._secrets)
            if camera.detect_source
            else None,
            main_stream=decode.main_stream,
        )

    # ---- callbacks from the rooms ----------------------------------------------------------
    def _on_segment(self, segment: Segment) -> None:
        if self._closed:
            logger.error("camera %s: a segment after close is dropped", self.camera.id)
            self._metrics.drop("after_close")
            return
        self._analyser.submit(segment)

    def _on_status(self, status: str) -> None:
        if self._ports.status_sink is not None and not self._closed:
            self._ports.status_sink.camera_status(self.camera.id, status, self.camera.source_type)

    def _on_activity(self, active: bool) -> None:
        if self._ports.status_sink is not None and not self._closed:
            self._ports.status_sink.activity(self.camera.id, active)

    def _on_event(self, event: Event, thumbnail: bytes) -> None:
        self._saves.put(event, thumbnail)  # saved (and retried) in order by the outbox

    async def _save_many(
        self, items: list[tuple[Event, bytes | None]]
    ) -> list[tuple[Event, bool] | None]:
        answers = await self._ports.store.save_many(items)
        for (event, _thumbnail), answer in zip(items, answers, strict=False):
            if answer is not None and answer[1] and event.media_offset_s is not None:
                self._already_stored += 1  # a file segment stored by a crashed instance or a replay
        return answers

    def _dropped(self, _event: Event) -> None:
        self._metrics.drop("unsaved_buffer_full")

    def _saved(self, saved: Event) -> None:
        self._metrics.event(saved.objects_detected)
        self._events += 1
        self._merged += saved.merged_motion
        self._last_event = {
            "event_id": saved.event_id,
            "timestamp": saved.timestamp.isoformat(),
            "description": saved.description[:255],
        }
