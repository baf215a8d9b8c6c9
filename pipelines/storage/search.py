"""Text search over stored events: the `q=` filter of the event list and of the live stream.

A query is split on whitespace into terms (lowercased, duplicates dropped). An event matches
when *every* term occurs, case-insensitively, in its description, or equals one of its
`objects_detected` (objects are stored as lowercase nouns such as ``person``).

The SQL is shaped for DuckDB's scan: ``contains(lower(description), ?)`` and
``list_contains(objects_detected, ?)`` are each pushed into the table scan (about 10 ms over a
million rows here), but an ``OR`` of the two is evaluated row by row (several times slower).
So a term is first looked up among the stored objects (one pushed-down probe); only terms that
are some event's object get the object alternative, and the ``AND`` of ``OR``s is expanded into a
``UNION`` of pushed-down branches (at most ``MAX_OBJECT_TERMS`` such terms, 2**n branches), each
a keyset top-N, merged and cut to the page. And a search reads newest first in time slices
(``WINDOWS``), stopping when the page is full: see `search_rows`. `matches` is the same rule in
Python, for events that never touch SQL (the live stream).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb

from pipelines.events import Event, as_utc

MAX_TERMS = 8
MAX_TERM_CHARS = 64
MAX_OBJECT_TERMS = 3  # beyond this many object terms, one row-by-row OR filter is used
# Newest-first time slices a search reads in turn until a page is full (None: everything older).
WINDOWS: tuple[timedelta | None, ...] = (
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
    timedelta(days=7),
    timedelta(days=30),
    None,
)
_ORDER = '"timestamp" DESC, event_id DESC'


def parse_terms(q: str | None) -> tuple[str, ...]:
    """The lowercase, de-duplicated terms of a query (ValueError when there are too many)."""
    if q is None:
        return ()
    terms: list[str] = []
    for word in q.lower().split():
        if len(word) > MAX_TERM_CHARS:
            raise ValueError(f"a search term is longer than {MAX_TERM_CHARS} characters")
        if word not in terms:
            terms.append(word)
    if len(terms) > MAX_TERMS:
        raise ValueError(f"a search has at most {MAX_TERMS} terms")
    return tuple(terms)


def term_matches(event: Event, term: str) -> bool:
    """True when the (lowercase) term is in the description or is one of the objects."""
    return term in event.description.lower() or term in event.objects_detected


def matches(event: Event, terms: Sequence[str]) -> bool:
    """True when every term matches the event (the SQL filter's rule, in Python)."""
    return all(term_matches(event, term) for term in terms)


@dataclass(frozen=True)
class EventFilter:
    """The list filters of `/api/v1/events` (and of its live stream), checked in Python."""

    camera_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    object: str | None = None
    terms: tuple[str, ...] = ()
    zone: str | None = None

    @classmethod
    def build(
        cls,
        camera_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        object: str | None = None,
        q: str | None = None,
        zone: str | None = None,
    ) -> EventFilter:
        """A filter from the route's parameters (ValueError for a bad `q`)."""
        return cls(camera_id, as_utc(since), as_utc(until), object, parse_terms(q), zone)

    def accepts(self, event: Event) -> bool:
        """True when the event passes every filter that is set."""
        if self.camera_id is not None and event.camera_id != self.camera_id:
            return False
        if self.since is not None and event.timestamp < self.since:
            return False
        if self.until is not None and event.timestamp > self.until:
            return False
        if self.object is not None and self.object not in event.objects_detected:
            return False
        if self.zone is not None and self.zone not in (event.zones or ()):
            return False
        return matches(event, self.terms)

    def query_args(self) -> dict[str, Any]:
        """The keyword arguments of EventStore.query / events_after for this filter."""
        return {
            "camera_id": self.camera_id,
            "since": self.since,
            "until": self.until,
            "object": self.object,
            "q": " ".join(self.terms) or None,
            "zone": self.zone,
        }


def text_condition(terms: Sequence[str]) -> tuple[str, list[Any]]:
    """One WHERE condition for all terms (row-by-row OR form: for small, bounded row sets)."""
    parts = ["(contains(lower(description), ?) OR list_contains(objects_detected, ?))"] * len(terms)
    params: list[Any] = [value for term in terms for value in (term, term)]
    return " AND ".join(parts), params


def object_terms(con: duckdb.DuckDBPyConnection, terms: Sequence[str]) -> set[str]:
    """Which terms are the object of at least one stored event (one pushed-down probe each)."""
    found = set()
    for term in terms:
        rows = con.execute(
            "SELECT 1 FROM events WHERE list_contains(objects_detected, ?) LIMIT 1", [term]
        ).fetchall()
        if rows:
            found.add(term)
    return found


def search_rows(
    con: duckdb.DuckDBPyConnection,
    columns: str,
    where: list[str],
    params: list[Any],
    terms: Sequence[str],
    limit: int,
) -> list[tuple[Any, ...]]:
    """Rows (`columns`) passing `where` and every term, newest first, at most `limit`.

    Newest first by time windows: the last hour before the newest candidate, then 6 h, a day,
    a week, 30 days, then the rest, each slice only until `limit` rows are found. Every row of
    a slice is newer than every row of the next, so the concatenation is exact; and since rows
    are stored about in time order, DuckDB's zone maps skip the row groups outside a slice: a
    frequent word reads the last hour, not a million rows.
    """
    top = con.execute(
        f'SELECT max("timestamp") FROM events{" WHERE " if where else ""}{" AND ".join(where)}',  # noqa: S608
        params,
    ).fetchall()[0][0]
    if top is None:
        return []
    found = object_terms(con, terms)
    objects = [t for t in terms if t in found]
    rows: list[tuple[Any, ...]] = []
    upper = None
    for span in WINDOWS:
        lower = None if span is None else top - span
        bounds, values = list(where), list(params)
        if lower is not None:
            bounds.append('"timestamp" >= ?')
            values.append(lower)
        if upper is not None:
            bounds.append('"timestamp" < ?')
            values.append(upper)
        rows += _search_slice(con, columns, bounds, values, terms, objects, limit - len(rows))
        if len(rows) >= limit or lower is None:
            return rows
        upper = lower
    return rows


def _search_slice(
    con: duckdb.DuckDBPyConnection,
    columns: str,
    where: list[str],
    params: list[Any],
    terms: Sequence[str],
    objects: Sequence[str],
    limit: int,
) -> list[tuple[Any, ...]]:
    """search_rows for one slice: the terms as a UNION of pushed-down branches (module doc)."""
    if len(objects) > MAX_OBJECT_TERMS:
        cond, extra = text_condition(terms)
        return _select(con, columns, [*where, cond], [*params, *extra], limit)
    branches: list[tuple[list[str], list[Any]]] = []
    for chosen in itertools.product((False, True), repeat=len(objects)):
        as_object = {t for t, pick in zip(objects, chosen, strict=True) if pick}
        conds, values = list(where), list(params)
        for term in terms:
            if term in as_object:
                conds.append("list_contains(objects_detected, ?)")
            else:
                conds.append("contains(lower(description), ?)")
            values.append(term)
        branches.append((conds, values))
    if len(branches) == 1:
        return _select(con, columns, *branches[0], limit)
    # Each branch: its own pushed-down scan and top-N of keys; then the page's rows by key
    # (as constants within the page's time range: a subquery would be a hash join over all rows).
    parts, values = [], []
    for conds, branch_values in branches:
        condition = " AND ".join(conds)
        parts.append(
            f'(SELECT "timestamp", event_id FROM events WHERE {condition} '  # noqa: S608
            f"ORDER BY {_ORDER} LIMIT ?)"
        )
        values += [*branch_values, limit]
    keys = con.execute(
        f"SELECT * FROM ({' UNION '.join(parts)}) ORDER BY {_ORDER} LIMIT ?",  # noqa: S608
        [*values, limit],
    ).fetchall()
    if not keys:
        return []
    marks = ", ".join("?" * len(keys))
    sql = (
        f'SELECT {columns} FROM events WHERE "timestamp" BETWEEN ? AND ? '  # noqa: S608
        f"AND event_id IN ({marks}) ORDER BY {_ORDER}"
    )
    return con.execute(sql, [keys[-1][0], keys[0][0], *(k[1] for k in keys)]).fetchall()


def _select(
    con: duckdb.DuckDBPyConnection, columns: str, where: list[str], params: list[Any], limit: int
) -> list[tuple[Any, ...]]:
    sql = f"SELECT {columns} FROM events"  # noqa: S608 - constant columns, values bound
    if where:
        sql += " WHERE " + " AND ".join(where)
    return con.execute(f"{sql} ORDER BY {_ORDER} LIMIT ?", [*params, limit]).fetchall()
