"""Fakes of the camera's ports (pipelines.camera.ports): a store, a VLM, a status sink and a
budget that record what they are given."""

from __future__ import annotations

import asyncio

from pipelines.events import Event
from pipelines.vlm.types import VLMRequest, VLMResult


class FakeCameraStore:
    """Stores events by id, like the event-store's `save_many`; can fail the first calls."""

    def __init__(self, fail_first: int = 0) -> None:
        self.events: dict[str, Event] = {}
        self.thumbnails: dict[str, bytes | None] = {}
        self.calls = 0
        self._fail = fail_first

    async def save_many(
        self, items: list[tuple[Event, bytes | None]]
    ) -> list[tuple[Event, bool] | None]:
        self.calls += 1
        if self._fail > 0:
            self._fail -= 1
            raise ConnectionError("store restarting")
        answers: list[tuple[Event, bool] | None] = []
        for event, thumbnail in items:
            if event.event_id in self.events:
                answers.append((self.events[event.event_id], True))
                continue
            self.events[event.event_id] = event
            self.thumbnails[event.event_id] = thumbnail
            answers.append((event, False))
        return answers


class FakeVLM:
    """Answers each request with a fixed description, after `delay_s` (None: never)."""

    def __init__(
        self,
        delay_s: float | None = 0.0,
        *,
        description: str = "a person walks to the door",
        objects: tuple[str, ...] = ("person",),
    ) -> None:
        self.requests: list[VLMRequest] = []
        self.cancelled = 0
        self._delay = delay_s
        self._answer = (description, objects)

    async def __call__(self, request: VLMRequest) -> VLMResult:
        self.requests.append(request)
        try:
            if self._delay is None:
                await asyncio.Event().wait()
            await asyncio.sleep(self._delay or 0.0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return VLMResult(
            description=self._answer[0],
            objects=self._answer[1],
            confidence=80,
            ai_confidence=90,
            provider_used="fake:vlm",
            analysis_mode=request.analysis_mode,
            request_id=request.request_id,
        )


class FakeSink:
    """Records the camera's status and activity changes."""

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.motion: list[bool] = []

    def camera_status(self, camera_id: str, status: str, source_type: str) -> None:
        self.statuses.append(status)

    def activity(self, camera_id: str, active: bool) -> None:
        self.motion.append(active)


class FakeBudget:
    """The shared budgets: grants `grants` calls, then `refuser` refuses ("global", or a chain's
    name); `fail` raises instead."""

    def __init__(
        self, grants: int = 0, *, fail: bool = False, hang: bool = False, refuser: str = "global"
    ) -> None:
        self.grants = grants
        self.refuser = refuser
        self.asked: list[str] = []
        self._fail, self._hang = fail, hang

    async def take(self, camera_id: str) -> str | None:
        self.asked.append(camera_id)
        if self._hang:
            await asyncio.Event().wait()
        if self._fail:
            raise ConnectionError("vlm-budget gone")
        if self.grants <= 0:
            return self.refuser
        self.grants -= 1
        return None
