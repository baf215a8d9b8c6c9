"""The publisher's ports (`pipelines.mqtt.ports`) for tests: fakes of a store, cameras and
metrics, and `LocalFeed`, the real store's feed in process."""

from __future__ import annotations

import threading
import time
from collections import Counter

from pipelines.events import Event
from pipelines.storage import EventStore, feed


class FakeStore:
    """A `PublishedStore` over a list of events (an event's seq is its place in the list, from
    1); `add` saves more and wakes a long-polling reader; records every mark_published call."""

    def __init__(self, events: list[Event] | None = None) -> None:
        self.events = list(events or [])
        self.marks: list[list[str]] = []
        self.fail = False  # mark_published raises while set (a store away)
        self._lock = threading.Lock()
        self._saved = threading.Condition(self._lock)

    def add(self, *events: Event) -> None:
        with self._saved:
            self.events.extend(events)
            self._saved.notify_all()

    @property
    def marked(self) -> set[str]:
        with self._lock:
            return {event_id for call in self.marks for event_id in call}

    def mark_published(self, event_ids: list[str]) -> None:
        if self.fail:
            raise ConnectionError("store away")
        with self._lock:
            self.marks.append(list(event_ids))

    def settle(self, timeout_s: float) -> None:
        return None

    def _waiting(self, event: Event, marked: set[str]) -> bool:
        return event.event_id not in marked and not event.filtered

    def delivery_cursor(self, max_age_s: float) -> tuple[int, int]:
        marked = self.marked
        with self._lock:
            waiting = [i for i, e in enumerate(self.events) if self._waiting(e, marked)]
            last = len(self.events)
        return (waiting[0] if waiting and max_age_s > 0 else last), last

    def events_after(
        self,
        after: int,
        *,
        upto: int | None = None,
        limit: int,
        wait_s: float = 0.0,
        unacknowledged: bool = False,
    ) -> list[tuple[int, Event]]:
        marked = self.marked
        with self._saved:
            self._saved.wait_for(lambda: len(self.events) > after, timeout=wait_s)
            rows = list(enumerate(self.events, start=1))[after : upto if upto else None]
        if unacknowledged:
            rows = [(seq, e) for seq, e in rows if self._waiting(e, marked)]
        return rows[:limit]

    def events_since(self, max_age_s: float) -> list[Event]:
        return list(self.events)


class FakeCameras:
    """A `CameraRinger`: the cameras in `running` ring (recorded); `gate` can hold a ring."""

    def __init__(self, running: set[str] | None = None) -> None:
        self.running = set(running or ())
        self.rung: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def ring(self, camera_id: str) -> bool:
        self.gate.wait(10)
        if camera_id not in self.running:
            return False
        self.rung.append(camera_id)
        return True


class FakeMetrics:
    """A `PublisherMetrics` that sums what it is told, by name (failures by reason)."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.last_pending = 0

    def published(self, count: int) -> None:
        self.totals["published"] += count

    def acked(self, count: int) -> None:
        self.totals["acked"] += count

    def failed(self, reason: str) -> None:
        self.totals[f"failed:{reason}"] += 1

    def replayed(self, count: int) -> None:
        self.totals["replayed"] += count

    def pending(self, count: int) -> None:
        self.last_pending = count

    def ack_latency(self, ms: float) -> None:
        self.latencies.append(ms)


class LocalFeed:
    """A `PublishedStore` over a real in-process `EventStore` (its DuckDB file): the same feed
    functions the `event-store` actor serves (`pipelines.storage.feed`), without Ray. The
    long-poll is a short sleep when nothing is new (the follower asks again)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def mark_published(self, event_ids: list[str]) -> None:
        self.store.mark_published(event_ids)

    def settle(self, timeout_s: float) -> None:
        return None

    def delivery_cursor(self, max_age_s: float) -> tuple[int, int]:
        return feed.delivery_cursor(self.store, max_age_s)

    def events_after(
        self,
        after: int,
        *,
        upto: int | None = None,
        limit: int,
        wait_s: float = 0.0,
        unacknowledged: bool = False,
    ) -> list[tuple[int, Event]]:
        rows = feed.events_after(self.store, after, upto, limit, unacknowledged=unacknowledged)
        if not rows and wait_s > 0:
            time.sleep(min(wait_s, 0.1))
        return rows

    def events_since(self, max_age_s: float) -> list[Event]:
        return self.store.events_since(max_age_s)
