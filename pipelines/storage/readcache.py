"""Answers of repeated list and search reads while nothing was written (a read storm's cost).

A dashboard on every phone in the house, a Home Assistant card per camera and a script polling
`/api/v1/events` all ask the same few questions again and again; between two saves the answer
cannot change. The store counts its writes (`StoreBase.data_version`: bumped after every commit
that inserts, updates or deletes event rows, before a save is acknowledged), and a read's answer
is kept under the version read *before* its snapshot began: a commit that lands after that read
began bumps the version, so no later reader is given an answer older than what it could know.

Concurrent askers of one question at one version share one read (`read`): a storm right after a
save costs one query, not one per client; an event loop waits for that read, or takes the kept
answer, without a thread (`pending`, `wait_pending`). One waiter giving up (a cancelled task, a
timeout) never cancels the read for the others; a waiter past its deadline gets
ReadTimeoutError, as a slow read does.

Bounded by the events held (`max_events`, `storage.read_cache_events`; an empty answer counts
as one; least recently used first out; 0 turns it off, sharing included); an answer larger
than a quarter of that is not kept, and answers of older versions are dropped when one of a
newer version is kept. Publishing (`published_at`) is not part of an event's payload and does
not invalidate.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pipelines.storage.errors import ReadTimeoutError, StorageError

MAX_CACHED_EVENTS = 5_000  # ~5-10 MB of Event objects in the store process


class ReadCache:
    """(key, data version) → answer; thread-safe; each operation O(1) under one lock (but the
    sweep of older versions, once per version kept)."""

    def __init__(self, max_events: int = MAX_CACHED_EVENTS) -> None:
        self.max_events = max_events
        self._entries: OrderedDict[Hashable, tuple[int, Any, int]] = OrderedDict()
        self._held = 0  # events in the kept answers (an empty answer counts as one)
        self._newest = -1  # the newest version an answer was kept at
        self._flights: dict[tuple[Hashable, int], Future[Any]] = {}  # reads under way
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.joined = 0  # askers who waited for another's read of the same question

    def get(self, key: Hashable, version: int) -> Any | None:
        """The answer kept for key at this data version, or None (and an older one is dropped)."""
        with self._lock:
            kept = self._kept(key, version)
            if kept is None:
                self.misses += 1
            return kept

    def read(
        self,
        key: Hashable,
        version: int,
        compute: Callable[[], Any],
        size: Callable[[Any], int],
        wait_s: float,
    ) -> Any:
        """The answer kept for key at version; else the one another caller is reading for the
        same key and version (its error too), waited for at most wait_s (then
        ReadTimeoutError); else compute()'s, kept (size: its events). With max_events 0 (off),
        always compute()'s."""
        if self.max_events <= 0:
            with self._lock:
                self.misses += 1
            return compute()
        with self._lock:
            kept = self._kept(key, version)
            if kept is not None:
                return kept
            flight = self._flights.get((key, version))
            leading = flight is None
            if flight is None:
                flight = self._flights[(key, version)] = Future()
                flight.set_running_or_notify_cancel()  # from here no waiter can cancel it
                self.misses += 1
            else:
                self.joined += 1
        if not leading:
            try:
                return flight.result(timeout=wait_s)
            except FutureTimeout:
                raise _late(wait_s) from None
        try:
            answer = compute()
        except BaseException as exc:
            with self._lock:
                self._flights.pop((key, version), None)
            # waiters get an Exception of their own kind; an interrupt stays the leader's
            shared = exc if isinstance(exc, Exception) else StorageError("the read was stopped")
            flight.set_exception(shared)
            raise
        self.put(key, version, answer, size(answer))
        with self._lock:
            self._flights.pop((key, version), None)
        flight.set_result(answer)
        return answer

    def pending(self, key: Hashable, version: int) -> Future[Any] | None:
        """The answer kept for key at version (a finished Future), or the read another caller
        is making of it; None: nobody has it, read it (`read`). Never blocks."""
        if self.max_events <= 0:
            return None
        with self._lock:
            kept = self._kept(key, version)
            if kept is not None:
                done: Future[Any] = Future()
                done.set_result(kept)
                return done
            flight = self._flights.get((key, version))
            if flight is not None:
                self.joined += 1
            return flight

    def put(self, key: Hashable, version: int, answer: Any, size: int) -> None:
        """Keep answer (size: its events) under the version read before its snapshot began."""
        if self.max_events <= 0 or size > self.max_events // 4:
            return
        with self._lock:
            if version > self._newest:  # a write happened: older answers serve nobody new
                self._newest = version
                for old in [k for k, entry in self._entries.items() if entry[0] < version]:
                    self._drop(old)
            entry = self._entries.get(key)
            if entry is not None:
                if entry[0] >= version:
                    return  # a newer answer is kept already
                self._drop(key)
            self._entries[key] = (version, answer, max(1, size))
            self._held += max(1, size)
            while self._held > self.max_events and self._entries:
                self._drop(next(iter(self._entries)))

    def _kept(self, key: Hashable, version: int) -> Any | None:
        """Under the lock: the answer at version (a hit), else None; an older one is dropped, a
        newer one (kept by a reader that began after this asker) stays."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] == version:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        if entry is not None and entry[0] < version:
            self._drop(key)
        return None

    def _drop(self, key: Hashable) -> None:
        _version, _answer, size = self._entries.pop(key)
        self._held -= size

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "events": self._held,
                "hits": self.hits,
                "misses": self.misses,
                "joined": self.joined,
            }


async def wait_pending(pending: Future[Any], wait_s: float) -> Any:
    """On an event loop: the answer of a `pending` Future, at most wait_s (then
    ReadTimeoutError); cancelling the waiter leaves the read to the others (shielded)."""
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(pending)), wait_s)
    except TimeoutError:
        raise _late(wait_s) from None


def _late(wait_s: float) -> ReadTimeoutError:
    """What a waiter past its deadline gets (a slow read's own error: 503 at the API)."""
    return ReadTimeoutError(f"read took longer than {wait_s:g} s (another caller's)")
