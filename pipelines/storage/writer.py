"""The group-commit writer: saves wait in a bounded queue; one task commits them in batches.

A save is one event (`save`, `save_new`) or a camera outbox's group of events (`save_many`):
a group is never split, so it is stored all or nothing, in its order. At most `max_queued`
events wait (plus the batch being committed). At the bound a save is refused at once with
`StoreBusyError` (nothing stored, retryable): the caller keeps the event and retries, so memory
stays bounded where the event was made; of a group, the events that fit are queued and the rest
are answered None (refused, retryable: the outbox keeps them, in order, after the stored ones).
Saves made while closing are refused the same way. Each batch is correlated and appended in one
store transaction, in a thread.

Which of a batch's ids are stored already: a derived id (a replayed file's segment) is looked
up in the whole table before the insert. A random id (uuid4) is new but for a save re-sent
after its first try committed (a timeout, a store restart), so it is not looked up at all:
the insert checks the primary key anyway, and meeting a stored id rolls the batch back. The
batch is then committed again after a lookup of its ids among the stored events in its time
span (a random id is only ever re-sent with its own event), and should that still meet one
(no product path does), after a whole-table lookup. A failed attempt's correlation is undone
(see `save_batch`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Literal, Protocol

from pipelines.events import Event, is_random_event_id
from pipelines.storage.errors import (
    DuplicateEventError,
    StorageError,
    StorageFullError,
    StoreBusyError,
)

logger = logging.getLogger(__name__)

MAX_BATCH = 512  # events committed in one transaction at most (a group may exceed it)
GATHER_S = 0.002  # after a lone save, how long the writer waits for others to join it
CLOSE_STEP_S = 10.0  # close(): how long the batch already being committed may still take

SavedHook = Callable[[list[Event]], None]  # newly stored, not yet published events of a batch
# rows written (never 0), milliseconds, events queued behind
CommittedHook = Callable[[int, float, int], None]


class BatchStore(Protocol):
    """What the writer needs of the store (`EventStore` has it)."""

    def stored_events(self, event_ids: list[str]) -> dict[str, Event]:
        """The stored events among event_ids, by id."""
        ...

    def known_ids(
        self, ids: list[str], span: tuple[datetime, datetime] | None = None
    ) -> dict[str, bool]:
        """Which of ids are stored (with a timestamp in span, if given), each with whether it
        is published."""
        ...

    def save_batch(
        self,
        events: list[Event],
        thumbnails: dict[str, bytes] | None,
        window_s: float,
        stored: set[str] | None = None,
    ) -> list[Event]:
        """Correlate and append events in one transaction (skipping the `stored` ids); the
        events as stored."""
        ...


Item = tuple[Event, bytes | None]  # an event to save and its thumbnail (JPEG) or None
Answer = tuple[Event, bool]  # the event as stored, whether it was stored already
# An Answer as it travels back to the camera: the event only where it was stored already.
Reply = tuple[Event | None, bool]
# How a commit learns which random ids are stored: from the insert, from a lookup in the
# batch's time span, from a lookup in the whole table (each the fallback of the one before).
Lookup = Literal["insert", "span", "table"]
_FALLBACK: dict[Lookup, Lookup] = {"insert": "span", "span": "table"}
# a committed batch: each caller's answers, rows written, events to hand on
Committed = tuple[list[list[Answer]], int, list[Event]]


def replies(answers: list[Answer | None]) -> list[Reply | None]:
    """Answers to a `save_many`, compact for the way back to the camera: an event stored
    now is not sent back (the camera has it; the store only gave it its correlation group,
    which the camera does not use), one stored already is (it may differ from the one
    sent, e.g. a replayed file's segment cut again later)."""
    return [None if a is None else (a[0] if a[1] else None, a[1]) for a in answers]


def answers_of(items: list[Item], got: list[Reply | None]) -> list[Answer | None]:
    """The answers again from the `replies` to items: the sent event where none came back."""
    return [
        None if reply is None else (event if reply[0] is None else reply[0], reply[1])
        for (event, _thumb), reply in zip(items, got, strict=True)
    ]


@dataclass(frozen=True)
class _Pending:
    """One queued save (one event or a group, never split), whether only when new, and the
    future its caller awaits (an answer per event)."""

    items: tuple[Item, ...]
    new_only: bool
    done: asyncio.Future[list[Answer]]


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
        self._queued = 0  # events in the queue (the bound counts events, not saves)
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
        answers = await self._enqueue(((event, thumbnail),), new_only=False)
        return answers[0][0]

    async def save_new(self, event: Event, thumbnail: bytes | None) -> Answer:
        """Store an event unless its id is stored: (the event as stored, whether it was already).

        The check runs in the batch's commit, so two saves of one id store it once.
        """
        answers = await self._enqueue(((event, thumbnail),), new_only=True)
        return answers[0]

    async def save_many(self, items: list[Item]) -> list[Answer | None]:
        """`save_new` of a group in one commit, all or nothing: an answer per item, in order;
        None for the items the queue had no room for (a suffix: retry them). A failed commit
        raises its error (nothing of the group is stored); no room at all raises
        `StoreBusyError`."""
        if not items:
            return []
        room = self._max_queued - self._queued
        taken = tuple(items[: max(0, room)]) or tuple(items)  # none fits: all refused at once
        answers: list[Answer | None] = list(await self._enqueue(taken, new_only=True))
        refused = len(items) - len(taken)
        if refused:
            self._count_refused(refused)
        return answers + [None] * refused

    def stats(self) -> dict[str, Any]:
        """Batches committed, the largest (events), events queued now and at most, the bound,
        events refused."""
        return {
            "batches": self._batches,
            "max_batch": self._largest,
            "queued": self._queued,
            "max_queued": self._most_queued,
            "max_queued_saves": self._max_queued,
            "refused": self._refused,
            "disk_full": self.disk_full,
        }

    async def close(self, timeout_s: float) -> int:
        """Refuse new saves, commit queued ones for up to timeout_s, refuse the rest; how many
        were refused. A batch already being committed is waited for up to CLOSE_STEP_S; one
        still running then is answered when its thread ends (by then the store may be closed:
        its callers get that storage error, and nothing of it is stored)."""
        self.closing = True
        refused = 0
        if self._queue is not None:
            refused = await self._drain(self._queue, timeout_s)
        if self._task is not None:
            self._task.cancel()
        return refused

    async def _enqueue(self, items: tuple[Item, ...], *, new_only: bool) -> list[Answer]:
        if self.closing:
            raise StoreBusyError("the event store is closing; retry with the next store")
        queue = self._ensure_task()
        if self._queued + len(items) > self._max_queued:
            self._count_refused(len(items))
            raise StoreBusyError(
                f"the event store's write queue is full ({self._max_queued}); retry later"
            )
        done: asyncio.Future[list[Answer]] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Pending(items, new_only, done))
        self._queued += len(items)
        self._most_queued = max(self._most_queued, self._queued)
        return await done

    def _count_refused(self, count: int) -> None:
        before, self._refused = self._refused, self._refused + count
        if before == 0 or before // 1000 != self._refused // 1000:
            logger.warning(
                "event-store write queue full (%d); %d saves refused so far (retryable)",
                self._max_queued,
                self._refused,
            )

    def _ensure_task(self) -> asyncio.Queue[_Pending]:
        if self._queue is None:
            self._queue = asyncio.Queue()  # unbounded: _enqueue bounds the events in it
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue))
        return self._queue

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        """The single writer: take what is queued (a batch), commit it, answer every caller.

        Cancelled (by close), it still answers the batch in its hands: with the commit's own
        outcome when the commit's thread ends (that thread cannot be stopped), or with
        `StoreBusyError` when the commit had not begun (nothing of it stored).
        """
        while True:
            batch = [await queue.get()]
            try:
                if queue.empty():  # let a burst of concurrent saves land in the same batch
                    await asyncio.sleep(self._gather_s)
            except asyncio.CancelledError:
                self._queued -= len(batch[0].items)
                if not batch[0].done.done():
                    batch[0].done.set_exception(StoreBusyError("the event store closed"))
                queue.task_done()
                raise
            events = len(batch[0].items)
            while events < self._max_batch and not queue.empty():  # a group is never split
                batch.append(queue.get_nowait())
                events += len(batch[-1].items)
            self._queued -= events
            self._batches += 1
            self._largest = max(self._largest, events)
            answer = partial(self._answer, queue, batch, time.monotonic())
            commit = asyncio.ensure_future(asyncio.to_thread(self._commit, batch))
            try:
                await asyncio.wait([commit])  # cancelling this wait leaves the commit running
            except asyncio.CancelledError:
                commit.add_done_callback(answer)
                raise
            answer(commit)

    def _answer(
        self,
        queue: asyncio.Queue[_Pending],
        batch: list[_Pending],
        started: float,
        commit: asyncio.Future[Committed],
    ) -> None:
        """Answer every caller of a batch with its commit's outcome; the batch leaves the queue."""
        events = sum(len(item.items) for item in batch)
        try:
            if commit.cancelled():  # only when the event loop itself shuts down
                exc: BaseException | None = StoreBusyError("the event store closed")
            else:
                exc = commit.exception()
            if exc is not None:  # every caller of the batch gets the error: none is lost
                logger.error("saving a batch of %d events failed: %s", events, exc)
                self.disk_full = isinstance(exc, StorageFullError) or (
                    self.disk_full and not isinstance(exc, StorageError)
                )
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
                return
            answers, written, fresh = commit.result()
            self.disk_full = False
            for item, answer in zip(batch, answers, strict=True):
                if not item.done.done():  # a cancelled caller's event is stored all the same
                    item.done.set_result(answer)
            if written and self._on_committed is not None:  # else nothing was committed
                elapsed_ms = (time.monotonic() - started) * 1000.0
                try:
                    self._on_committed(written, elapsed_ms, self._queued)
                except Exception as hook_exc:  # a metric lost; the callers have their answers
                    logger.warning("the commit hook failed: %s", hook_exc)
            self._hand_on(fresh)
        finally:
            for _ in batch:
                queue.task_done()

    def _commit(self, batch: list[_Pending], *, lookup: Lookup = "insert") -> Committed:
        """Write a batch (in a thread): each caller's answers, rows written, events to hand on.

        A save_new whose id is stored, or written earlier in the same batch, writes nothing.
        `lookup`: how the random ids stored already are found (see the module docstring).
        """
        flat = [(item, save.new_only) for save in batch for item in save.items]
        ids = [event.event_id for (event, _thumb), _new_only in flat]
        known = self._known([event for (event, _thumb), _new_only in flat], lookup)
        again = [i for i, (_item, new) in zip(ids, flat, strict=True) if new and i in known]
        stored = self._store.stored_events(again) if again else {}
        # A save re-sent after its first try committed (a timeout, a restart) must not be
        # handed on again once it was published.
        published = {event_id for event_id, done in known.items() if done}
        writes: list[Item] = []
        first_write: dict[str, int] = {}
        plan: list[tuple[Event | int, bool]] = []  # a stored event, or an index into writes
        for event_id, (item, new_only) in zip(ids, flat, strict=True):
            if new_only and event_id in stored:
                plan.append((stored[event_id], True))
            elif new_only and event_id in first_write:
                plan.append((first_write[event_id], True))
            else:
                first_write.setdefault(event_id, len(writes))
                plan.append((len(writes), False))
                writes.append(item)
        thumbs = {event.event_id: thumb for event, thumb in writes if thumb}
        events = [event for event, _thumb in writes]
        try:
            saved = (
                self._store.save_batch(events, thumbs, self._window_s, set(known)) if events else []
            )
        except DuplicateEventError:
            if lookup == "table":
                raise
            if lookup == "span":
                logger.warning("a batch held an id stored outside its time span: looking again")
            else:  # a save re-sent after its first try was stored
                logger.info("a batch of %d events re-sent stored ones: looking them up", len(ids))
            return self._commit(batch, lookup=_FALLBACK[lookup])
        answers = [(saved[at] if isinstance(at, int) else at, existed) for at, existed in plan]
        per_save: list[list[Answer]] = []
        for save in batch:
            per_save.append(answers[: len(save.items)])
            del answers[: len(save.items)]
        fresh = {event.event_id: event for event in saved if event.event_id not in published}
        return per_save, len(saved), list(fresh.values())

    def _known(self, events: list[Event], lookup: Lookup) -> dict[str, bool]:
        """Which of the events' ids are stored, each with whether it is published (the usual
        batch: none of them); random ids only when `lookup` says to look."""
        if lookup == "table":
            return self._store.known_ids([event.event_id for event in events])
        fresh: list[Event] = []
        derived: list[str] = []
        for event in events:
            if is_random_event_id(event.event_id):
                fresh.append(event)
            else:
                derived.append(event.event_id)
        known = self._store.known_ids(derived) if derived else {}
        if fresh and lookup == "span":
            stamps = [event.timestamp for event in fresh]  # UTC: Event makes them so
            span = (min(stamps), max(stamps))
            known |= self._store.known_ids([event.event_id for event in fresh], span)
        return known

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
            self._queued -= len(item.items)
            if not item.done.done():
                item.done.set_exception(StoreBusyError("the event store closed before this save"))
            queue.task_done()
            refused += len(item.items)
        logger.error("store closing: %d queued saves refused after %.1f s", refused, timeout_s)
        try:  # the batch in the writer's hands is committed and answered
            await asyncio.wait_for(queue.join(), CLOSE_STEP_S)
        except TimeoutError:
            logger.error("store closing: the batch being committed did not finish")
        return refused
