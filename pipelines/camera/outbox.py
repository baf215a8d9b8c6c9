"""The camera's outbox to the event-store: saves in order, retries with backoff, bounded.

Every analysed event goes through one `SaveBuffer` per camera. One sender task saves every
event waiting at that moment (up to `max_group`) in one `save_many` call, which the store
commits all or nothing in one transaction. When the call fails (the store restarting, the disk
briefly full, a timeout) the events stay at the head and are retried with exponential backoff,
while newly analysed events queue behind them; when the store had room for only part of a
group, the stored ones are done and only the rest (a suffix, still in order) is retried. The
buffer holds at most `max_events`: beyond, the oldest event is dropped, counted, and logged
with its id (the only way a camera loses an event). A retried save is safe: the store saves an
event id once (`save_new` semantics), so a group re-sent after its first try committed writes
nothing twice.

Plain asyncio; the actual save (a Ray call in the ingest actor) is the `save_many` coroutine
function passed in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pipelines.events import Event
from pipelines.ingest.sources import Backoff
from pipelines.storage.errors import StoreBusyError

logger = logging.getLogger(__name__)

__all__ = ["SaveBuffer"]

# The store's `save_many`: (event, thumbnail) pairs in order → for each, (the event as stored,
# whether it was stored already), or None when the store had no room for it (retry it).
SaveManyFn = Callable[
    [list[tuple[Event, bytes | None]]], Awaitable[list[tuple[Event, bool] | None]]
]
MAX_GROUP = 64  # events sent in one save_many call at most (and half of max_events)
PARTIAL_RETRY_S = 0.05  # after a group the store took in part: the rest is retried this soon


@dataclass(frozen=True)
class _Unsaved:
    event: Event
    thumbnail: bytes | None


class SaveBuffer:
    """Bounded, ordered outbox of events for the store, retried with backoff until saved."""

    def __init__(
        self,
        camera_id: str,
        save_many: SaveManyFn,
        *,
        max_events: int,
        max_group: int = MAX_GROUP,
        on_saved: Callable[[Event], None] | None = None,
        on_dropped: Callable[[Event], None] | None = None,
        save_timeout_s: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self.camera_id = camera_id
        self.max_events = max_events
        # at most half the buffer in flight: older queued events stay droppable at the bound
        self._max_group = max(1, min(max_group, max_events // 2))
        self._save_many = save_many
        self._on_saved = on_saved
        self._on_dropped = on_dropped
        self._timeout = save_timeout_s
        self._backoff = backoff or Backoff(0.5, 10.0)
        self._items: deque[_Unsaved] = deque()
        self._sending: list[_Unsaved] = []  # the group being saved
        self._kick = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.saved = 0
        self.failures = 0  # failed save attempts (each retry counts)
        self.dropped = 0
        self.dropped_ids: deque[str] = deque(maxlen=20)  # the latest, for status
        self.max_depth = 0
        self.last_error: str | None = None

    @property
    def depth(self) -> int:
        """Events not saved yet (queued, being sent, or waiting for a retry)."""
        return len(self._items) + len(self._sending)

    @property
    def retrying(self) -> bool:
        """Whether the last save attempt failed and the head waits for a retry."""
        return self.last_error is not None and self.depth > 0

    def status(self) -> dict[str, Any]:
        """Counters for the camera's status: unsaved, retrying, failures, dropped (and ids)."""
        return {
            "unsaved": self.depth,
            "max_unsaved": self.max_events,
            "save_retrying": self.retrying,
            "save_failures": self.failures,
            "dropped": self.dropped,
            "dropped_event_ids": list(self.dropped_ids),
        }

    def put(self, event: Event, thumbnail: bytes | None) -> None:
        """Queue an event to save (never blocks); over the bound the oldest queued one drops.

        At most max_events wait (plus, with max_events 1, the one being sent).
        """
        while self.depth >= self.max_events and self._items:
            self._drop(self._items.popleft())
        self._items.append(_Unsaved(event, thumbnail))
        self.max_depth = max(self.max_depth, self.depth)
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send_loop())

    def retry_now(self) -> None:
        """Cut a backoff wait short (a stop is draining)."""
        self._backoff.reset()
        self._kick.set()

    async def wait_empty(self, timeout_s: float) -> bool:
        """Wait until every queued event is saved or timeout_s passed; True when empty."""
        if self.depth == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, timeout_s))
        except TimeoutError:
            return self.depth == 0
        return True

    def abandon(self, why: str) -> int:
        """Drop everything still unsaved (the store is gone for good); the number dropped."""
        items = list(self._items)
        self._items.clear()
        for item in items:
            self._drop(item, why)
        if self._task is not None:
            self._task.cancel()
        for item in self._sending:
            self._drop(item, why)
        sending, self._sending = len(self._sending), []
        self._idle.set()
        return len(items) + sending

    def _drop(self, item: _Unsaved, why: str = "unsaved buffer full") -> None:
        self.dropped += 1
        self.dropped_ids.append(item.event.event_id)
        logger.error(
            "camera %s: event %s dropped (%s; %d dropped so far)",
            self.camera_id,
            item.event.event_id,
            why,
            self.dropped,
        )
        if self._on_dropped is not None:
            self._on_dropped(item.event)

    async def _send_loop(self) -> None:
        while self._items:
            count = min(self._max_group, len(self._items))
            group = self._sending = [self._items.popleft() for _ in range(count)]
            try:
                answers = await asyncio.wait_for(
                    self._save_many([(item.event, item.thumbnail) for item in group]),
                    timeout=self._timeout,
                )
                if len(answers) != len(group):
                    raise RuntimeError(f"{len(answers)} answers to a group of {len(group)}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._sending = []
                self._items.extendleft(reversed(group))  # retried before anything newer
                await self._back_off(group[0], exc)
                continue
            self._sending = []
            unsaved = [item for item, answer in zip(group, answers, strict=True) if answer is None]
            if unsaved and answers[-len(unsaved) :].count(None) != len(unsaved):
                # the store answers None only for a suffix; anything else would break order
                logger.error("camera %s: the store refused events out of order", self.camera_id)
            # back at the head, in order, before any callback runs (one that raises loses none)
            self._items.extendleft(reversed(unsaved))
            for answer in answers:
                if answer is not None:
                    self.saved += 1
                    if self._on_saved is not None:
                        self._on_saved(answer[0])
            if len(unsaved) == len(group):  # nothing stored: a failure, with backoff
                await self._back_off(unsaved[0], StoreBusyError("no room in the store's queue"))
                continue
            if self.last_error is not None:
                logger.info("camera %s: saving works again", self.camera_id)
            self.last_error = None
            self._backoff.reset()
            if unsaved:  # the store took part of the group (its queue filled): progress, and
                await self._pause(PARTIAL_RETRY_S)  # the rest goes again soon, no failure
        self._idle.set()

    async def _back_off(self, head: _Unsaved, exc: Exception) -> None:
        """Count the failure and wait before the head is tried again (`retry_now` cuts it)."""
        self._failed(head, exc)
        await self._pause(self._backoff.next_delay())

    async def _pause(self, seconds: float) -> None:
        """Wait seconds, or until `retry_now`."""
        self._kick.clear()
        try:
            await asyncio.wait_for(self._kick.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _failed(self, item: _Unsaved, exc: Exception) -> None:
        self.failures += 1
        first = self.last_error is None
        self.last_error = type(exc).__name__
        log = logger.warning if first else logger.debug
        log(
            "camera %s: saving event %s failed (%s); kept for retry (%d unsaved)",
            self.camera_id,
            item.event.event_id,
            self.last_error,
            self.depth,
        )
