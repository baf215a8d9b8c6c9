"""Writes: idempotent batch appends (thumbnails first, then one insert), published state."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.events import Event, as_utc, utcnow
from pipelines.storage.correlation import CorrelationMixin
from pipelines.storage.cursors import is_event_id
from pipelines.storage.files import _fsync_dir, _write_atomic
from pipelines.storage.schema import _TS, ARROW_SCHEMA, EVENT_COLUMNS, _first


class WritesMixin(CorrelationMixin):
    """append, save_batch (correlate, then append) and mark_published."""

    def append(
        self,
        events: list[Event],
        thumbnails: dict[str, bytes] | None = None,
        *,
        stored: set[str] | None = None,
    ) -> int:
        """Store events (and JPEG thumbnails) in one batch; returns how many were new.

        `stored`: the ids among them that are stored, as the single writer looked them up
        just before (`known_ids`); those are skipped and the rest inserted without a conflict
        check. Without it, the primary key makes the insert idempotent (ON CONFLICT DO
        NOTHING, an index probe per row).
        """
        thumbnails = thumbnails or {}
        if not events:
            return 0
        checked = stored is not None
        with self._lock:
            unique = list({ev.event_id: ev for ev in reversed(events)}.values())[::-1]
            if stored is not None:
                unique = [ev for ev in unique if ev.event_id not in stored]
                if not unique:
                    return 0
            if self._starts:
                unique = [self._with_group(ev) for ev in unique]
            # A re-send must neither rewrite nor, on failure, delete the file of the event
            # already stored: ids that come with a thumbnail are looked up first.
            with_thumb = [ev.event_id for ev in unique if thumbnails.get(ev.event_id)]
            if stored is None:  # (a failed lookup raises StorageError itself)
                stored = set(self.known_ids(with_thumb)) if with_thumb else set()
            written: list[Path] = []
            try:
                for event_id in with_thumb:  # thumbnails first: a committed row has its file
                    if event_id not in stored:
                        target = self.thumbnail_dir / f"{event_id}.jpg"
                        _write_atomic(target, thumbnails[event_id])
                        written.append(target)
                if written:
                    _fsync_dir(self.thumbnail_dir)
                row = self._insert(unique, checked=checked)
            except (duckdb.Error, OSError) as exc:
                for path in written:
                    path.unlink(missing_ok=True)
                raise self._fail("append", exc) from exc
            self._seq += len(unique)  # seq of a duplicate stays unused: gaps are harmless
            return int(row[0]) if row else len(unique)

    def save_batch(
        self,
        events: list[Event],
        thumbnails: dict[str, bytes] | None,
        window_s: float,
        stored: set[str] | None = None,
    ) -> list[Event]:
        """Correlate and append a batch in one go; the events as stored, in input order.
        `stored`: as for `append`."""
        with self._lock:
            events = self.assign_correlation(events, window_s)
            self.append(events, thumbnails, stored=stored)
            return events

    def mark_published(self, event_ids: Iterable[str], at: datetime | None = None) -> int:
        """Record events as published; returns how many were newly marked."""
        ids = [i for i in event_ids if is_event_id(i)]
        if not ids:
            return 0
        when = as_utc(at) if at else utcnow()
        with self._lock:
            try:
                row = self._set_published(ids, when)
            except (duckdb.Error, OSError) as exc:
                raise self._fail("mark_published", exc) from exc
            return int(row[0]) if row else 0

    def _insert(self, events: list[Event], *, checked: bool = False) -> Any:
        """Insert the events in one transaction, skipping stored ids (`checked`: none is
        stored, so no conflict check: a stored one fails the batch, which its retry skips);
        the row-count row."""
        con = self.con
        con.register("_batch", self._arrow_rows(events))
        sql = "INSERT INTO events BY NAME SELECT * FROM _batch"
        if not checked:
            sql += " ON CONFLICT DO NOTHING"
        try:
            con.execute("BEGIN TRANSACTION")
            row = _first(con.execute(sql))
            con.execute("COMMIT")
            return row
        finally:
            self._changed()
            if self._con is not None:
                self._con.unregister("_batch")

    def published_among(self, ids: list[str]) -> set[str]:
        """Which of ids are stored and already published (a re-sent save must not republish)."""
        return {event_id for event_id, published in self.known_ids(ids).items() if published}

    def known_ids(self, ids: list[str]) -> dict[str, bool]:
        """Which of ids are stored, each with whether it is published: one query (an Arrow
        table of the ids joined on the primary key), as the writer asks once per batch."""
        if not ids:
            return {}
        with self._lock:
            con = self.con
            con.register("_ids", pa.table({"event_id": pa.array(ids, pa.string())}))
            try:
                rows = con.execute(
                    "SELECT event_id, published_at IS NOT NULL FROM events "
                    "WHERE event_id IN (SELECT event_id FROM _ids)"
                ).fetchall()
            except (duckdb.Error, OSError) as exc:
                raise self._fail("lookup", exc) from exc
            finally:
                if self._con is not None:
                    self._con.unregister("_ids")
        return {event_id: bool(published) for event_id, published in rows}

    def _set_published(self, ids: list[str], when: datetime) -> Any:
        """Set published_at of the events in ids that have none (an Arrow table join, not a
        loop); the row-count row."""
        con = self.con
        con.register("_ids", pa.table({"event_id": pa.array(ids, pa.string())}))
        try:
            return _first(
                con.execute(
                    "UPDATE events SET published_at = ? FROM _ids "
                    "WHERE events.event_id = _ids.event_id AND events.published_at IS NULL",
                    [when],
                )
            )
        finally:
            con.unregister("_ids")

    def _arrow_rows(self, events: list[Event]) -> pa.Table:
        """The events as an Arrow table in the events table's column order (column-wise)."""
        n = len(events)
        rows = [ev.__dict__ for ev in events]  # pydantic keeps validated fields here
        arrays: list[pa.Array] = [pa.array(range(self._seq + 1, self._seq + n + 1), pa.int64())]
        for name in EVENT_COLUMNS:
            arrays.append(pa.array([r[name] for r in rows], ARROW_SCHEMA.field(name).type))
        arrays.append(pa.repeat(pa.scalar(utcnow(), _TS), n))
        arrays.append(pa.nulls(n, _TS))
        return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)
