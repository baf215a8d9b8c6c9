"""The delivery feed: the store in saving order, events after a sequence number.

Every stored row has a ``seq`` that grows with each committed batch (the single writer assigns
it under the store's lock and commits the batch at once), so "rows with seq > n" never gains a
row below one already seen: a reader that remembers the largest seq it has read misses nothing
and reads nothing twice. Both consumers read it: the MQTT publisher (live, and from its
acknowledged cursor after a reconnect or a refused publish: `delivery_cursor`) and the live
SSE stream. A reader that is up to date long-polls (`CommitSignal`: woken by the next commit).
``seq`` is internal; clients see event ids (the SSE ``id:``), and `seq_of` turns a client's
``Last-Event-ID`` back into a position.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from pipelines.events import Event, utcnow
from pipelines.storage.connection import READ_TIMEOUT_S, StoreBase
from pipelines.storage.cursors import is_event_id
from pipelines.storage.queries import _PUBLISHABLE, _filters
from pipelines.storage.schema import _SELECT_EVENT, _first, _row_to_event
from pipelines.storage.search import parse_terms, text_condition

MAX_FEED_PAGE = 1000
MAX_WAIT_S = 10.0  # the longest one long-poll waits for a commit
_Row = TypeVar("_Row")
UNACKNOWLEDGED = f"published_at IS NULL AND {_PUBLISHABLE}"  # to be published, not yet acked


class CommitSignal:
    """Wakes long-polling feed readers when a batch commits (one asyncio loop: the store's).

    A reader takes a `turn()` before it reads, then waits on it: a commit between its read and
    its wait has set that turn already, so nothing committed is waited past.
    """

    def __init__(self) -> None:
        self._turn: asyncio.Event | None = None
        self.closed = False  # set by close(): a long-poll returns what it has at once

    def turn(self) -> asyncio.Event:
        """The event the next commit sets."""
        if self._turn is None:
            self._turn = asyncio.Event()
        return self._turn

    def committed(self, _events: object = None) -> None:
        """A batch is committed: wake every reader waiting on the current turn."""
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.set()

    @staticmethod
    async def wait(turn: asyncio.Event, timeout_s: float) -> bool:
        """Wait for a commit up to timeout_s; whether one came."""
        try:
            await asyncio.wait_for(turn.wait(), max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

    async def long_poll(
        self,
        read: Callable[[], list[_Row]],
        wait_s: float,
        run: Callable[[Callable[[], list[_Row]]], Awaitable[list[_Row]]] | None = None,
    ) -> list[_Row]:
        """`read` (in a thread: `run`, default asyncio.to_thread) until it finds rows, a
        commit at a time, for up to wait_s (at most MAX_WAIT_S); what the last read found."""
        deadline = time.monotonic() + min(max(0.0, wait_s), MAX_WAIT_S)
        in_thread = run or asyncio.to_thread
        while True:
            turn = self.turn()
            rows = await in_thread(read)
            left = deadline - time.monotonic()
            if rows or left <= 0 or self.closed or not await self.wait(turn, left):
                return rows


def last_seq(store: StoreBase) -> int:
    """The largest seq stored (0 when empty). A reader's position is a row's seq: seqs given
    to duplicates leave gaps, so "the last seq given out" would be a position never read."""
    with store.reading(timeout_s=None) as con:  # short, bounded reads: no timer
        row = _first(con.execute("SELECT coalesce(max(seq), 0) FROM events"))
    return int(row[0]) if row else 0


def seq_of(store: StoreBase, event_id: str) -> int | None:
    """The seq of a stored event, or None (unknown, expired or malformed id)."""
    if not is_event_id(event_id):
        return None
    with store.reading(timeout_s=None) as con:  # short, bounded reads: no timer
        row = _first(con.execute("SELECT seq FROM events WHERE event_id = ?", [event_id]))
    return int(row[0]) if row else None


def delivery_cursor(store: StoreBase, max_age_s: float) -> tuple[int, int]:
    """The publisher's acknowledged cursor and the end of the feed: (start, last).

    ``start`` is the seq just before the oldest event younger than max_age_s that is to be
    published and was not acknowledged (``published_at`` is set by the publisher's acks);
    every publishable event after it within the window is read again from there. With none
    waiting, start == last (the largest seq stored).
    """
    since = utcnow() - timedelta(seconds=max(0.0, max_age_s))
    sql = (
        "SELECT (SELECT min(seq) FROM events "  # noqa: S608 (constant conditions)
        f'WHERE {UNACKNOWLEDGED} AND "timestamp" >= ?), '
        "(SELECT coalesce(max(seq), 0) FROM events)"
    )
    with store.reading(timeout_s=None) as con:  # short, bounded reads: no timer
        row = _first(con.execute(sql, [since]))
    oldest, last = (row[0], int(row[1])) if row else (None, 0)
    return (last if oldest is None else int(oldest) - 1), last


def events_after(
    store: StoreBase,
    after: int,
    upto: int | None = None,
    limit: int = 500,
    *,
    unacknowledged: bool = False,
    **filters: Any,
) -> list[tuple[int, Event]]:
    """(seq, event) with after < seq <= upto (when given), in saving order, at most limit.

    ``filters`` are those of EventStore.query (camera_id, since, until, object, q, zone);
    ``unacknowledged`` keeps only events to be published that were not acknowledged (the
    publisher's replay from its cursor).
    """
    limit = max(1, min(int(limit), MAX_FEED_PAGE))
    terms = parse_terms(filters.pop("q", None))
    where, params = _filters(
        filters.pop("camera_id", None),
        filters.pop("since", None),
        filters.pop("until", None),
        filters.pop("object", None),
        None,
        zone=filters.pop("zone", None),
    )
    if filters:
        raise ValueError(f"unknown filters: {sorted(filters)}")
    if unacknowledged:
        where.append(UNACKNOWLEDGED)
    where.append("seq > ?")
    params.append(int(after))
    if upto is not None:
        where.append("seq <= ?")
        params.append(int(upto))
    if terms:  # a seq range is small: the row-by-row form is fine here
        condition, values = text_condition(terms)
        where.append(condition)
        params.extend(values)
    sql = f"SELECT seq, {_SELECT_EVENT} FROM events WHERE {' AND '.join(where)}"  # noqa: S608
    # a page of a seq range is short, unless words must match: then it may scan far (a live
    # stream resuming from an old id with `q`), so it gets the read deadline
    with store.reading(timeout_s=READ_TIMEOUT_S if terms else None) as con:
        rows = con.execute(sql + " ORDER BY seq LIMIT ?", [*params, limit]).fetchall()
    return [(int(row[0]), _row_to_event(row[1:])) for row in rows]
