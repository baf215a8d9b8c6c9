"""A camera's noise and cost controls, in the order an event meets them.

1. Near-duplicates (`vlm.dedupe`): an event whose best frame matches the camera's last analysed
   event reuses its description (`pipelines.vlm.dedupe`); no VLM call, no budget spent.
2. Budgets: the camera's own `vlm_max_per_hour` bucket, then the global `vlm.max_per_hour`
   shared fairly through the budget port (the `vlm-budget` actor). Over either, the event
   gets the fallback text, no `provider_used`, and is counted as throttled.
3. The VLM call itself (the analyser's `describe`).
4. The object filter (`pipelines.filters`): the stored event is marked `filtered` and the
   publisher skips it, unless the answer named no objects on large motion (published,
   counted as `unsure`).

Doorbell rings skip 1 (the user is waiting for that one answer) and are never filtered, but they
spend budget like any event: over it, a ring too gets the fallback text.
Counters are in the camera's status and go to the metrics port (`vlm(outcome)`: called,
reused, throttled; `filtered()`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from pipelines.camera.ports import BudgetPort, CameraMetricsPort
from pipelines.config import CameraConfig, VLMConfig
from pipelines.events import REUSED_PROVIDER, Event
from pipelines.filters import is_filtered
from pipelines.ingest.segment import Segment
from pipelines.vlm.budget import GLOBAL, CameraBudget
from pipelines.vlm.dedupe import Analysed, Deduper, Lookup, reused_result
from pipelines.vlm.types import VLMRequest, VLMResult, fallback_result

logger = logging.getLogger(__name__)

BUDGET_CALL_TIMEOUT_S = 5.0


class NoiseControl:
    """Dedupe, budgets and the object filter for one camera (see the module doc)."""

    def __init__(
        self,
        vlm: VLMConfig,
        camera: CameraConfig,
        *,
        budget: BudgetPort | None,
        metrics: CameraMetricsPort,
    ) -> None:
        self._camera = camera
        dedupe = vlm.dedupe
        self.deduper = Deduper(dedupe.window_s, dedupe.max_distance, enabled=dedupe.enabled)
        self._own = CameraBudget(camera.vlm_max_per_hour, time.monotonic())
        self._global = budget
        self._lookups: dict[int, Lookup] = {}
        self._unsure: set[int] = set()  # segments published by the unsure rule alone
        self._throttled: set[int] = set()  # segments over a VLM budget (fallback text)
        self._metrics = metrics
        self.counts = {"vlm_calls": 0, "reused": 0, "throttled": 0, "filtered": 0, "unsure": 0}
        self.counts |= {
            "throttled_camera": 0,
            "throttled_global": 0,
            "throttled_chain": 0,
            "budget_errors": 0,
        }

    def status(self) -> dict[str, Any]:
        """Counters for the camera's status()."""
        return dict(self.counts) | {"dedupe_waits": self.deduper.waited}

    async def describe(
        self,
        segment: Segment,
        request: VLMRequest,
        is_ring: bool,
        call_vlm: Callable[[VLMRequest], Awaitable[VLMResult]],
    ) -> VLMResult:
        """The segment's result: reused, throttled (fallback text) or from `call_vlm`."""
        if not is_ring:
            lookup = await self.deduper.lookup(segment.best_frame, segment.start_wall)
            self._lookups[id(segment)] = lookup
            if lookup.reuse is not None:
                self._count("reused")
                return reused_result(lookup.reuse, request)
        # Rings spend budget too: a ring is never a near-duplicate, but a flood of them (the
        # ring topic, the ring route) must not buy unlimited VLM calls.
        if not await self._within_budget():
            self._count("throttled")
            self._throttled.add(id(segment))
            return fallback_result(request)
        self._count("vlm_calls")
        return await call_vlm(request)

    def event_fields(self, segment: Segment, result: VLMResult, is_ring: bool) -> dict[str, Any]:
        """The Event fields these controls decide: zones, reused_from, filtered, source."""
        lookup = self._lookups.get(id(segment))
        reused = lookup.reuse if lookup is not None else None
        analysed = result.provider_used is not None
        decide = partial(
            is_filtered,
            self._camera,
            segment.zones,
            result.objects,
            is_ring=is_ring,
            analysed=analysed,
        )
        filtered = decide(peak_motion=segment.peak_score)
        if not filtered and decide(peak_motion=-1.0):  # withheld but for the unsure rule
            self._unsure.add(id(segment))
        return {
            "zones": segment.zones or None,
            "reused_from": reused.event_id if reused is not None else None,
            "filtered": filtered,
            "confidence_source": result.confidence_source,
            "throttled": id(segment) in self._throttled,
        }

    def analysed(self, segment: Segment, event: Event) -> None:
        """The event is built: a real VLM answer becomes the camera's dedupe reference."""
        if event.filtered:
            self.counts["filtered"] += 1
            self._metrics.filtered()
        elif id(segment) in self._unsure:
            self.counts["unsure"] += 1  # published only because its answer named nothing
            logger.info(
                "%s: event %s named no objects on large motion: published (unsure)",
                self._camera.id,
                event.event_id,
            )
        self._unsure.discard(id(segment))
        self._throttled.discard(id(segment))
        lookup = self._lookups.pop(id(segment), None)
        if lookup is None:
            return
        provider = event.provider_used
        answer = None
        if provider is not None and provider != REUSED_PROVIDER and lookup.signature is not None:
            answer = Analysed(
                event_id=event.event_id,
                at=event.timestamp,
                signature=lookup.signature,
                description=event.description,
                objects=event.objects_detected,
                confidence=event.confidence,
                ai_confidence=event.ai_confidence,
                confidence_source=event.confidence_source,
            )
        self.deduper.done(lookup, answer)

    def release(self, segment: Segment) -> None:
        """The analysis of segment ended (maybe by an error): free near-duplicates waiting."""
        self._unsure.discard(id(segment))
        self._throttled.discard(id(segment))
        lookup = self._lookups.pop(id(segment), None)
        if lookup is not None:
            self.deduper.done(lookup, None)

    def _count(self, what: str) -> None:
        self.counts[what] += 1
        self._metrics.vlm({"vlm_calls": "called"}.get(what, what))

    async def _within_budget(self) -> bool:
        """Take one VLM call from the camera's and the global budget; False when over one."""
        now = time.monotonic()
        if not self._own.available(now):
            self.counts["throttled_camera"] += 1
            logger.info("camera %s: over vlm_max_per_hour; fallback text", self._camera.id)
            return False
        refused = await self._take_shared() if self._global is not None else None
        if refused == GLOBAL:
            self.counts["throttled_global"] += 1
            logger.info("camera %s: over its share of vlm.max_per_hour", self._camera.id)
            return False
        if refused is not None:
            self.counts["throttled_chain"] += 1
            logger.info(
                "camera %s: over its share of vlm.backends.%s.max_per_hour",
                self._camera.id,
                refused,
            )
            return False
        self._own.spend(now)
        return True

    async def _take_shared(self) -> str | None:
        """One call from the shared budgets (None: granted, else which refused); if they
        cannot answer, allow (and count) it."""
        assert self._global is not None
        try:
            return await asyncio.wait_for(self._global.take(self._camera.id), BUDGET_CALL_TIMEOUT_S)
        except Exception as exc:
            self.counts["budget_errors"] += 1
            logger.warning(
                "camera %s: vlm-budget unavailable (%s); calling the VLM anyway",
                self._camera.id,
                type(exc).__name__,
            )
            return None
