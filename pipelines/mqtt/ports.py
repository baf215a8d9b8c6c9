"""The publisher's ports: the store it reports acks to, the cameras it rings, its metrics.

Each is a small protocol so that the publisher runs without Ray: the `mqtt-publisher` actor
passes adapters over actor handles and Ray metrics, tests pass fakes (tests/support).
"""

from __future__ import annotations

from typing import Protocol

from pipelines.events import Event


class PublishedStore(Protocol):
    """The event store as the publisher sees it: its delivery feed, and where acks go. Every
    call may block (never on paho's thread)."""

    def mark_published(self, event_ids: list[str]) -> None:
        """Record events as published; may return before the store has done it."""
        ...

    def settle(self, timeout_s: float) -> None:
        """Wait up to timeout_s for the mark_published calls made so far."""
        ...

    def delivery_cursor(self, max_age_s: float) -> tuple[int, int]:
        """(start, last): the seq before the oldest stored event younger than max_age_s that
        was not acknowledged (published), and the feed's last seq; start == last when none."""
        ...

    def events_after(
        self,
        after: int,
        *,
        upto: int | None = None,
        limit: int,
        wait_s: float = 0.0,
        unacknowledged: bool = False,
    ) -> list[tuple[int, Event]]:
        """The delivery feed: (seq, event) saved after seq `after` (up to `upto`), in saving
        order, at most limit; only those to publish and not acknowledged when asked. With none
        yet, waits up to wait_s for the next save."""
        ...

    def events_since(self, max_age_s: float) -> list[Event]:
        """Every publishable stored event younger than max_age_s, oldest first."""
        ...


class CameraRinger(Protocol):
    """The running cameras (their ingest actors), for ring commands."""

    def ring(self, camera_id: str) -> bool:
        """Fire the camera's ring without waiting; False when its camera does not run."""
        ...


class PublisherMetrics(Protocol):
    """The publisher's metrics; recording never raises."""

    def published(self, count: int) -> None:
        """Event messages handed to the MQTT client."""
        ...

    def acked(self, count: int) -> None:
        """Event messages acknowledged."""
        ...

    def failed(self, reason: str) -> None:
        """One event not sent (unpublished, dropped or failed)."""
        ...

    def replayed(self, count: int) -> None:
        """Stored events republished."""
        ...

    def pending(self, count: int) -> None:
        """Event messages awaiting acknowledgement now."""
        ...

    def ack_latency(self, ms: float) -> None:
        """Milliseconds from hand-over to the broker's ack, of one sampled event."""
        ...
