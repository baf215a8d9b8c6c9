"""What a camera needs from outside its process: the store, the publisher, the VLM, budgets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipelines.events import Event
from pipelines.vlm.types import VLMRequest, VLMResult

# The VLM call; cancelling the awaitable cancels the request (the camera stops waiting).
DescribeFn = Callable[[VLMRequest], Awaitable[VLMResult]]


class StorePort(Protocol):
    """The event store, as a camera saves to it."""

    async def save_many(
        self, items: list[tuple[Event, bytes | None]]
    ) -> list[tuple[Event, bool] | None]:
        """Store (event, thumbnail) pairs in one commit, all or nothing, each unless its id is
        stored already: per pair (stored event, was stored before), or None where the store
        had no room (a suffix: retry those)."""
        ...


class StatusSink(Protocol):
    """Where a camera's availability and motion state go (MQTT); fire and forget."""

    def camera_status(self, camera_id: str, status: str, source_type: str) -> None:
        """The camera went online, offline or unavailable."""
        ...

    def activity(self, camera_id: str, active: bool) -> None:
        """Motion started (True) or ended (False)."""
        ...


class BudgetPort(Protocol):
    """The shared VLM budgets: the global `vlm.max_per_hour` and the camera's chain's
    `vlm.backends.NAME.max_per_hour`."""

    async def take(self, camera_id: str) -> str | None:
        """One VLM call for camera_id: None when granted, else which budget refused
        (`"global"` or the chain's name)."""
        ...


class CameraMetricsPort(Protocol):
    """A camera's metrics; recording never raises."""

    def frame(self, lag_s: float) -> None: ...
    def fps_now(self, fps: float) -> None: ...
    def event(self, objects: Sequence[str]) -> None: ...
    def drop(self, reason: str, count: int = 1) -> None: ...
    def unsaved(self, depth: int) -> None: ...
    def vlm(self, outcome: str) -> None: ...
    def filtered(self) -> None: ...


class NullMetrics:
    """Metrics that record nothing (tests, tools)."""

    def frame(self, lag_s: float) -> None:
        """Record nothing."""

    def fps_now(self, fps: float) -> None:
        """Record nothing."""

    def event(self, objects: Sequence[str]) -> None:
        """Record nothing."""

    def drop(self, reason: str, count: int = 1) -> None:
        """Record nothing."""

    def unsaved(self, depth: int) -> None:
        """Record nothing."""

    def vlm(self, outcome: str) -> None:
        """Record nothing."""

    def filtered(self) -> None:
        """Record nothing."""


@dataclass(frozen=True)
class CameraPorts:
    """The camera's collaborators, given at construction."""

    store: StorePort
    describe: DescribeFn
    status_sink: StatusSink | None = None  # None: MQTT off
    budget: BudgetPort | None = None  # None: no global budget
    metrics: CameraMetricsPort = field(default_factory=NullMetrics)
