"""Analyse a camera's closed segments: a bounded queue, a few VLM calls at once, a deadline.

Segments wait in `PendingEvents` (at most `camera.max_pending_events`; when full, new motion is
merged into the newest queued event and counted). `MAX_IN_FLIGHT` workers take them in order,
ask `NoiseControl` for a result (reused, throttled, or the injected VLM call), build the Event
and hand it to `on_event` with its thumbnail. A VLM call ends at its chain's deadline
(`vlm.deadline_s`, or `vlm.backends.NAME.deadline_s` for a camera with `vlm: NAME`; the request
carries the moment, so the camera and the engine stop waiting together) or when `hurry()` is
called at stop; either way the event gets the fallback text and is still stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from pipelines.camera.event import build_event
from pipelines.camera.noise import NoiseControl
from pipelines.camera.ports import CameraMetricsPort, DescribeFn
from pipelines.config import CameraConfig, VLMConfig
from pipelines.events import Event
from pipelines.imaging import encode_jpeg, resize_long_side
from pipelines.ingest.segment import PendingEvents, Segment
from pipelines.redact import redact
from pipelines.vlm.types import VLMRequest, VLMResult, fallback_result, wait_budget_s

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2  # concurrent VLM calls per camera (the queue bound is per camera config)


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a finished task's outcome, so an abandoned one logs no 'never retrieved'."""
    if not task.cancelled():
        task.exception()


class Analyser:
    """Queue → VLM (with deadline and hurry) → Event, for one camera."""

    def __init__(
        self,
        camera: CameraConfig,
        vlm: VLMConfig,
        *,
        describe: DescribeFn,
        noise: NoiseControl,
        on_event: Callable[[Event, bytes], None],
        metrics: CameraMetricsPort,
        thumbnail_quality: int,
        file_identity: Callable[[], str | None] = lambda: None,
        secrets: Iterable[str] = (),
    ) -> None:
        self._camera = camera
        self._vlm = vlm
        self._describe_port = describe
        self._noise = noise
        self._on_event = on_event
        self._metrics = metrics
        self._thumbnail_quality = thumbnail_quality
        self._file_identity = file_identity
        self._secrets = tuple(secrets)
        self.queue = PendingEvents(camera.max_pending_events, max_frames=camera.motion.max_frames)
        self.in_flight = 0
        self.fallback_at_stop = 0
        self.hurried = asyncio.Event()
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    @property
    def busy(self) -> bool:
        """Whether a segment is queued or being analysed."""
        return self.in_flight > 0 or len(self.queue) > 0

    def start(self) -> None:
        """Start the workers on the running loop."""
        if not self._workers:
            loop = asyncio.get_running_loop()
            self._workers = [loop.create_task(self._work()) for _ in range(MAX_IN_FLIGHT)]

    def close(self) -> None:
        """Cancel the workers (the camera is gone: nothing is queued any more)."""
        for worker in self._workers:
            worker.cancel()
        self._workers = []

    def submit(self, segment: Segment) -> None:
        """Queue a closed segment (never blocks: merged into a queued one when full)."""
        if self.queue.push(segment):
            self._metrics.drop("merged_pending")
            logger.info(
                "camera %s: VLM behind, motion merged into a queued event (%d merged so far)",
                self._camera.id,
                self.queue.merged,
            )
        self._wake.set()

    def submit_ring(self, segment: Segment) -> bool:
        """Queue a doorbell ring; True when it replaced a ring still waiting."""
        merged = self.queue.push_ring(segment)
        self._wake.set()
        return merged

    def hurry(self) -> None:
        """Stop waiting for the VLM: what is pending gets the fallback text."""
        self.hurried.set()

    async def _work(self) -> None:
        while True:
            item = self.queue.pop()
            if item is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            segment, is_ring = item
            self.in_flight += 1
            try:
                await self.analyse(segment, is_ring)
            except Exception as exc:
                logger.error(
                    "camera %s: event analysis failed: %s",
                    self._camera.id,
                    redact(f"{type(exc).__name__}: {exc}", self._secrets),
                )
            finally:
                self.in_flight -= 1
                self._noise.release(segment)  # no-op unless the analysis failed midway

    async def analyse(self, segment: Segment, is_ring: bool) -> Event:
        """Describe one segment, build its Event and hand it on (with the thumbnail)."""
        camera, side = self._camera, self._vlm.image_size
        # JPEG encoding takes 10-30 ms a frame: off the event loop, which serves status and rings
        frames = await asyncio.to_thread(
            lambda: tuple(
                encode_jpeg(resize_long_side(f, side), quality=85) for f in segment.key_frames
            )
        )
        request = VLMRequest.expiring(
            self._vlm.deadline_of(camera.vlm),
            camera_id=camera.id,
            camera_name=camera.name,
            frames=frames,
            prompt=camera.prompt,
            chain=camera.vlm,
        )
        started = time.monotonic()
        result = await self._noise.describe(segment, request, is_ring, self._describe)
        event = build_event(
            camera,
            segment,
            result,
            is_ring=is_ring,
            latency_ms=(time.monotonic() - started) * 1000,
            file_identity=self._file_identity(),
            noise_fields=self._noise.event_fields(segment, result, is_ring),
        )
        thumbnail = await asyncio.to_thread(
            encode_jpeg, segment.best_frame, quality=self._thumbnail_quality
        )
        self._noise.analysed(segment, event)
        self._on_event(event, thumbnail)
        return event

    async def _describe(self, request: VLMRequest) -> VLMResult:
        """The VLM's answer within the deadline, else (or once hurried) the fallback."""
        if self.hurried.is_set():
            self.fallback_at_stop += 1
            return fallback_result(request)
        hurry = asyncio.ensure_future(self.hurried.wait())
        call: asyncio.Future[VLMResult] | None = None
        try:
            call = asyncio.ensure_future(self._describe_port(request))
            call.add_done_callback(_consume)  # a cancelled request's error is expected
            done, _ = await asyncio.wait(
                {call, hurry},
                timeout=wait_budget_s(request, self._vlm.deadline_of(request.chain)),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if call in done:
                return call.result()
            call.cancel()
            why = "stopping" if hurry in done else "deadline"
            if hurry in done:
                self.fallback_at_stop += 1
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
