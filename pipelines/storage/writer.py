"""The group-commit writer: saves wait in a bounded queue; one task commits them in batches.

At most `max_queued` saves wait (plus the one batch being committed). At the bound a save is
refused at once with `StoreBusyError` (nothing stored, retryable): the caller keeps the event and
retries, so memory stays bounded where the event was made. Saves made while closing get the same
error. Each batch is correlated and appended in one store transaction, in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pipelines.events import Event
from pipelines.storage.errors import StorageError, StorageFullError, StoreBusyError

logger = logging.getLogger(__name__)

MAX_BATCH = 512  # saves committed in one transaction at most
GATHER_S = 0.002  # after a lone save, how long the writer waits for others to join it
CLOSE_STEP_S = 10.0  # close(): how long the batch already being committed may still take

SavedHook = Callable[[list[Event]], None]  # newly stored, not yet published events of a batch
# rows written (never 0), milliseconds, saves queued behind
CommittedHook = Callable[[int, float, int], None]


class BatchStore(Protocol):
    """What the writer needs of the store (`EventStore` has it)."""

    def stored_events(self, event_ids: list[str]) -> dict[str, Event]:
        """The stored events among event_ids, by id."""
        ...

    def published_among(self, ids: list[str]) -> set[str]:
        """Which of ids are stored and already published."""
        ...

    def save_batch(
        self, events: list[Event], thumbnails: dict[str, bytes] | None, window_s: float
    ) -> list[Event]:
        """Correlate and append events in one transaction; the events as stored."""
        ...


@dataclass(frozen=True)
class _Pending:
    """One queued save: what to store, whether only when new, the future its caller awaits."""

    event: Event
    thumbnail: bytes | None
    new_only: bool
    done: asyncio.Future[tuple[Event, bool]]


class GroupCommitWriter:
    """One writer task over a bounded queue of saves; each batch is one store transaction."""

    def __init__(
        self,
        store: BatchStore,
        *,
        max_queued: int,
        window_s: float,
        on_saved: SavedHook,
        on_committed: CommittedHook | None = None,
        max_batch: int = MAX_BATCH,
        gather_s: float = GATHER_S,
    ) -> None:
        self._store = store
        self._max_queued = max_queued
        self._window_s = window_s
        self._on_saved = on_saved
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._gather_s = gather_s
        # Created on first use: both belong to the event loop of the caller (the actor's).
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        self._batches = 0
        self._largest = 0
        self._most_queued = 0
        self._refused = 0
        # set while the last batch failed for a full disk (cleared by the next commit): the
        # cameras hold their events meanwhile, and health says so
        self.disk_full = False

    async def save(self, event: Event, thumbnail: bytes | None) -> Event:
        """Store one event (with its correlation group) and hand it on; the event as stored."""
        saved, _existed = await self._enqueue(event, thumbnail, new_only=False)
        return saved

    async def save_new(self, event: Event, thumbnail: bytes | None) -> tuple[Event, bool]:
        """Store an event unless its id is stored: (the event as stored, whether it was already).

        The check runs in the batch's commit, so two saves of one id store it once.
        """
        return await self._enqueue(event, thumbnail, new_only=True)

    def stats(self) -> dict[str, Any]:
        """Batches committed, the largest, saves queued now and at most, the bound, refusals."""
        return {
            "batches": self._batches,
            "max_batch": self._largest,
            "queued": 0 if self._queue is None else self._queue.qsize(),
            "max_queued": self._most_queued,
            "max_queued_saves": self._max_queued,
            "refused": self._refused,
            "disk_full": self.disk_full,
        }

    async def close(self, timeout_s: float) -> int:
        """Refuse new saves, commit queued ones for up to timeout_s, refuse the rest; how many
        were refused. A batch already being committed is finished (up to CLOSE_STEP_S)."""
        self.closing = True
        refused = 0
        if self._queue is not None:
            refused = await self._drain(self._queue, timeout_s)
        if self._task is not None:
            self._task.cancel()
        return refused

    async def _enqueue(
        self, event: Event, thumbnail: bytes | None, *, new_only: bool
    ) -> tuple[Event, bool]:
        if self.closing:
            raise StoreBusyError("the event store is closing; retry with the next store")
        queue = self._ensure_task()
        done: asyncio.Future[tuple[Event, bool]] = asyncio.get_running_loop().create_future()
        try:
            queue.put_nowait(_Pending(event, thumbnail, new_only, done))
        except asyncio.QueueFull:
            self._refused += 1
            if self._refused == 1 or self._refused % 1000 == 0:
                logger.warning(
                    "event-store write queue full (%d); %d saves refused so far (retryable)",
                    queue.maxsize,
                    self._refused,
                )
            raise StoreBusyError(
                f"the event store's write queue is full ({queue.maxsize}); retry later"
            ) from None
        self._most_queued = max(self._most_queued, queue.qsize())
        return await done

    def _ensure_task(self) -> asyncio.Queue[_Pending]:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self._max_queued)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue))
        return self._queue

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        """The single writer: take what is queued (a batch), commit it, answer every caller."""
        while True:
            batch = [await queue.get()]
            if queue.empty():  # let a burst of concurrent saves land in the same batch
                await asyncio.sleep(self._gather_s)
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            self._batches += 1
            self._largest = max(self._largest, len(batch))
            started = time.monotonic()
            try:
                answers, written, fresh = await asyncio.to_thread(self._commit, batch)
                if written and self._on_committed is not None:  # else nothing was committed
                    elapsed_ms = (time.monotonic() - started) * 1000.0
                    self._on_committed(written, elapsed_ms, queue.qsize())
            except Exception as exc:  # every caller of the batch gets the error: none is lost
                logger.error("saving a batch of %d events failed: %s", len(batch), exc)
                self.disk_full = isinstance(exc, StorageFullError) or (
                    self.disk_full and not isinstance(exc, StorageError)
                )
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
            else:
                self.disk_full = False
                for item, answer in zip(batch, answers, strict=True):
                    if not item.done.done():  # a cancelled caller's event is stored all the same
                        item.done.set_result(answer)
                self._hand_on(fresh)
            finally:
                for _ in batch:
                    queue.task_done()

    def _commit(self, batch: list[_Pending]) -> tuple[list[tuple[Event, bool]], int, list[Event]]:
        """Write a batch (in a thread): each caller's answer, rows written, events to hand on.

        A save_new whose id is stored, or written earlier in the same batch, writes nothing.
        """
        new_only = [item.event.event_id for item in batch if item.new_only]
        stored = self._store.stored_events(new_only) if new_only else {}
        # A save re-sent after its first try committed (a timeout, a restart) must not be
        # handed on again once it was published.
        published = self._store.published_among([item.event.event_id for item in batch])
        writes: list[_Pending] = []
        first_write: dict[str, int] = {}
        plan: list[tuple[Event | int, bool]] = []  # a stored event, or an index into writes
        for item in batch:
            event_id = item.event.event_id
            if item.new_only and event_id in stored:
                plan.append((stored[event_id], True))
            elif item.new_only and event_id in first_write:
                plan.append((first_write[event_id], True))
            else:
                first_write.setdefault(event_id, len(writes))
                plan.append((len(writes), False))
                writes.append(item)
        thumbs = {item.event.event_id: item.thumbnail for item in writes if item.thumbnail}
        events = [item.event for item in writes]
        saved = self._store.save_batch(events, thumbs, self._window_s) if events else []
        answers = [(saved[at] if isinstance(at, int) else at, existed) for at, existed in plan]
        fresh = {event.event_id: event for event in saved if event.event_id not in published}
        return answers, len(saved), list(fresh.values())

    def _hand_on(self, events: list[Event]) -> None:
        if not events:
            return
        try:
            self._on_saved(events)
        except Exception as exc:  # stored as unpublished: the publisher's replay catches up
            logger.warning("handing %d events on failed: %s", len(events), exc)

    async def _drain(self, queue: asyncio.Queue[_Pending], timeout_s: float) -> int:
        """Wait for queued saves; refuse those left at timeout_s. The number refused."""
        try:
            await asyncio.wait_for(queue.join(), max(0.0, timeout_s))
            return 0
        except TimeoutError:
            pass
        refused = 0
        while not queue.empty():
            item = queue.get_nowait()
            if not item.done.done():
                item.done.set_exception(StoreBusyError("the event store closed before this save"))
            queue.task_done()
            refused += 1
        logger.error("store closing: %d queued saves refused after %.1f s", refused, timeout_s)
        try:  # the batch in the writer's hands is committed and answered
            await asyncio.wait_for(queue.join(), CLOSE_STEP_S)
        except TimeoutError:
            logger.error("store closing: the batch being committed did not finish")
        return refused
