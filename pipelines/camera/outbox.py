"""The camera's outbox to the event-store: saves in order, retries with backoff, bounded.

Every analysed event goes through one `SaveBuffer` per camera. One sender task saves the oldest
event; when the save fails (the store restarting, the disk briefly full, a timeout) the event
stays at the head and is retried with exponential backoff, while newly analysed events queue
behind it. The buffer holds at most `max_events`: beyond, the oldest event is dropped, counted,
and logged with its id (the only way a camera loses an event). A retried save is safe: the
store's primary key makes a second insert of the same event id a no-op.

Plain asyncio; the actual save (a Ray call in the camera actor) is the `save` coroutine
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

logger = logging.getLogger(__name__)

__all__ = ["SaveBuffer"]

SaveFn = Callable[[Event, bytes | None], Awaitable[Event]]


@dataclass(frozen=True)
class _Unsaved:
    event: Event
    thumbnail: bytes | None


class SaveBuffer:
    """Bounded, ordered outbox of events for the store, retried with backoff until saved."""

    def __init__(
        self,
        camera_id: str,
        save: SaveFn,
        *,
        max_events: int,
        on_saved: Callable[[Event], None] | None = None,
        on_dropped: Callable[[Event], None] | None = None,
        save_timeout_s: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self.camera_id = camera_id
        self.max_events = max_events
        self._save = save
        self._on_saved = on_saved
        self._on_dropped = on_dropped
        self._timeout = save_timeout_s
        self._backoff = backoff or Backoff(0.5, 10.0)
        self._items: deque[_Unsaved] = deque()
        self._sending: _Unsaved | None = None
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
        return len(self._items) + (self._sending is not None)

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
        if self._sending is not None:
            self._drop(self._sending, why)
            self._sending = None
        self._idle.set()
        return len(items)

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
            item = self._items.popleft()
            self._sending = item
            try:
                saved = await asyncio.wait_for(
                    self._save(item.event, item.thumbnail), timeout=self._timeout
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._sending = None
                self._items.appendleft(item)  # keep the order: retried before anything newer
                self._failed(item, exc)
                self._kick.clear()
                delay = self._backoff.next_delay()
                try:
                    await asyncio.wait_for(self._kick.wait(), timeout=delay)
                except TimeoutError:
                    pass
                continue
            self._sending = None
            if self.last_error is not None:
                logger.info("camera %s: saving works again", self.camera_id)
            self.last_error = None
            self._backoff.reset()
            self.saved += 1
            if self._on_saved is not None:
                self._on_saved(saved)
        self._idle.set()

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
