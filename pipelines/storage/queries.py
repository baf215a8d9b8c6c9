"""Reads: one event, thumbnail paths, filtered keyset-paginated queries, replay lists, counts."""

from __future__ import annotations

from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.events import Event, as_utc, utcnow
from pipelines.storage.connection import READ_TIMEOUT_S, StoreBase
from pipelines.storage.cursors import decode_cursor, encode_cursor, is_event_id
from pipelines.storage.schema import _SELECT_EVENT, _first, _row_to_event
from pipelines.storage.search import parse_terms, search_rows

REPLAY_TIMEOUT_S = 60.0  # replay reads (publisher, `liveobject replay`) may scan a day or more

MAX_QUERY_LIMIT = 500
_PUBLISHABLE = "NOT coalesce(filtered, false)"  # filtered events are stored, never published
_QUERY_PARAMS = ("camera_id", "since", "until", "object", "limit", "cursor", "q", "zone")
_QUERY_PARAM_NAMES = frozenset(_QUERY_PARAMS)
# how long an asker waits for another's read of the same question: past the read's own deadline
SHARED_READ_WAIT_S = READ_TIMEOUT_S + 5
_COUNTS_SQL = (
    "SELECT count(*), count(published_at), count(*) FILTER (WHERE coalesce(filtered, false)) "
    "FROM events"
)


class QueriesMixin(StoreBase):
    """get, thumbnail_path, query, unpublished_events, events_since, counts."""

    def get(self, event_id: str) -> Event | None:
        """One event by id, or None (also for a malformed id)."""
        if not is_event_id(event_id):
            return None
        with self.reading(timeout_s=None) as con:  # one primary-key lookup
            row = _first(
                con.execute(
                    f"SELECT {_SELECT_EVENT} FROM events WHERE event_id = ?",  # noqa: S608 - constant
                    [event_id],
                )
            )
        return _row_to_event(row) if row else None

    def stored_events(self, event_ids: list[str]) -> dict[str, Event]:
        """The stored events among event_ids, by id (primary-key lookups)."""
        ids = [i for i in dict.fromkeys(event_ids) if is_event_id(i)]
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT {_SELECT_EVENT} FROM events WHERE event_id IN ({marks})"  # noqa: S608 - only ?s
        with self._lock:
            rows = self.con.execute(sql, ids).fetchall()
        events = [_row_to_event(r) for r in rows]
        return {event.event_id: event for event in events}

    def thumbnail_path(self, event_id: str) -> Path | None:
        """Path of an event's thumbnail file, or None; never a path outside the thumbnails dir."""
        if not is_event_id(event_id):
            return None
        candidate = (self.thumbnail_dir / f"{event_id}.jpg").resolve()
        if candidate.parent != self._thumb_root or not candidate.is_file():
            return None
        return candidate

    def query(
        self,
        camera_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        object: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        q: str | None = None,
        zone: str | None = None,
    ) -> tuple[list[Event], str | None]:
        """Events matching the filters (`q`: every term, see storage.search), newest first,
        with a keyset cursor for the next page. A question asked again before anything was
        written is answered from read_cache (see storage.readcache)."""
        limit = max(1, min(int(limit), MAX_QUERY_LIMIT))
        key = _cache_key(
            {"camera_id": camera_id, "since": since, "until": until, "object": object}
            | {"limit": limit, "cursor": cursor, "q": q, "zone": zone}
        )
        events, next_cursor = self.read_cache.read(
            key,
            self.data_version,  # read before the snapshot begins
            lambda: self._query(camera_id, since, until, object, limit, cursor, q, zone),
            size=lambda answer: len(answer[0]),
            wait_s=SHARED_READ_WAIT_S,
        )
        return list(events), next_cursor

    def pending_query(self, **filters: Any) -> Future[tuple[list[Event], str | None]] | None:
        """query's answer as a Future when read_cache holds it or another caller is reading it
        (no DuckDB, no thread, never blocks: fit for an event loop; await it with
        readcache.wait_pending); None: call query (also for a filter query does not take)."""
        if not filters.keys() <= _QUERY_PARAM_NAMES:
            return None
        return self.read_cache.pending(_cache_key(filters), self.data_version)

    def _query(
        self,
        camera_id: str | None,
        since: datetime | None,
        until: datetime | None,
        object: str | None,
        limit: int,
        cursor: str | None,
        q: str | None,
        zone: str | None,
    ) -> tuple[list[Event], str | None]:
        terms = parse_terms(q)
        where, params = _filters(camera_id, since, until, object, cursor, zone=zone)
        # Column names are module constants; every value is a bound parameter.
        sql = f"SELECT {_SELECT_EVENT} FROM events"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += ' ORDER BY "timestamp" DESC, event_id DESC LIMIT ?'
        params.append(limit + 1)
        with self.reading() as con:
            if terms:
                rows = search_rows(con, _SELECT_EVENT, where, params[:-1], terms, limit + 1)
            else:
                rows = con.execute(sql, params).fetchall()
        events = [_row_to_event(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = events[-1]
            next_cursor = encode_cursor(last.timestamp, last.event_id)
        return events, next_cursor

    def unpublished_events(self, max_age_s: float | None = None) -> list[Event]:
        """Events never published and not filtered (younger than max_age_s when given), oldest
        first."""
        return self._oldest_first(f"published_at IS NULL AND {_PUBLISHABLE}", max_age_s)

    def events_since(self, max_age_s: float) -> list[Event]:
        """Every publishable (not filtered) event younger than max_age_s, oldest first (replay)."""
        return self._oldest_first(_PUBLISHABLE, max_age_s)

    def _oldest_first(self, condition: str, max_age_s: float | None) -> list[Event]:
        params: list[Any] = []
        if max_age_s is not None:
            condition += ' AND "timestamp" >= ?'
            params.append(utcnow() - timedelta(seconds=max_age_s))
        sql = f"SELECT {_SELECT_EVENT} FROM events WHERE {condition}"  # noqa: S608
        with self.reading(timeout_s=REPLAY_TIMEOUT_S) as con:  # `liveobject replay`, no API
            rows = con.execute(sql + ' ORDER BY "timestamp", seq', params).fetchall()
        return [_row_to_event(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of stored, published, unpublished and filtered (stored only: never to be
        published) events."""
        with self._lock:
            row = _first(self.con.execute(_COUNTS_SQL))
        stored, published, filtered = (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)
        return {
            "stored": stored,
            "published": published,
            "unpublished": stored - published - filtered,
            "filtered": filtered,
        }


def _cache_key(filters: dict[str, Any]) -> tuple[Any, ...]:
    """query's read_cache key: its parameters in order, limit clamped as query clamps it,
    since/until in UTC (two local times in a repeated DST hour compare equal, but differ)."""
    key = []
    for name in _QUERY_PARAMS:
        value = filters.get(name)
        if name == "limit":
            value = max(1, min(int(filters.get("limit", 50)), MAX_QUERY_LIMIT))
        elif name in ("since", "until") and value is not None:
            value = as_utc(value)
        key.append(value)
    return tuple(key)


def _filters(
    camera_id: str | None,
    since: datetime | None,
    until: datetime | None,
    object: str | None,
    cursor: str | None,
    *,
    zone: str | None = None,
) -> tuple[list[str], list[Any]]:
    """WHERE conditions and their bound values for query (ValueError for a malformed cursor)."""
    where: list[str] = []
    params: list[Any] = []
    if camera_id is not None:
        where.append("camera_id = ?")
        params.append(camera_id)
    if since is not None:
        where.append('"timestamp" >= ?')
        params.append(as_utc(since))
    if until is not None:
        where.append('"timestamp" <= ?')
        params.append(as_utc(until))
    if object is not None:
        where.append("list_contains(objects_detected, ?)")
        params.append(object)
    if zone is not None:
        where.append("list_contains(zones, ?)")
        params.append(zone)
    if cursor:
        ts, last_id = decode_cursor(cursor)
        where.append('("timestamp" < ? OR ("timestamp" = ? AND event_id < ?))')
        params.extend([ts, ts, last_id])
    return where, params
