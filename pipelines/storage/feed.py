"""The store in saving order, for the live event stream: events after a sequence number.

Every stored row has a ``seq`` that grows with each committed batch (the single writer assigns
it under the store's lock and commits the batch at once), so "rows with seq > n" never gains a
row below one already seen: a reader that remembers the largest seq it has read misses nothing
and reads nothing twice. ``seq`` is internal; clients see event ids (the SSE ``id:``), and
`seq_of` turns a client's ``Last-Event-ID`` back into a position.
"""

from __future__ import annotations

from typing import Any

from pipelines.events import Event
from pipelines.storage.connection import StoreBase
from pipelines.storage.cursors import is_event_id
from pipelines.storage.queries import _filters
from pipelines.storage.schema import _SELECT_EVENT, _first, _row_to_event
from pipelines.storage.search import parse_terms, text_condition

MAX_FEED_PAGE = 1000


def last_seq(store: StoreBase) -> int:
    """The largest seq stored (0 when empty)."""
    with store._lock:
        row = _first(store.con.execute("SELECT coalesce(max(seq), 0) FROM events"))
    return int(row[0]) if row else 0


def seq_of(store: StoreBase, event_id: str) -> int | None:
    """The seq of a stored event, or None (unknown, expired or malformed id)."""
    if not is_event_id(event_id):
        return None
    with store._lock:
        row = _first(store.con.execute("SELECT seq FROM events WHERE event_id = ?", [event_id]))
    return int(row[0]) if row else None


def events_after(
    store: StoreBase,
    after: int,
    upto: int | None = None,
    limit: int = 500,
    **filters: Any,
) -> list[tuple[int, Event]]:
    """(seq, event) with after < seq <= upto (when given), in saving order, at most limit.

    ``filters`` are those of EventStore.query (camera_id, since, until, object, q, zone).
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
    with store._lock:
        rows = store.con.execute(sql + " ORDER BY seq LIMIT ?", [*params, limit]).fetchall()
    return [(int(row[0]), _row_to_event(row[1:])) for row in rows]
