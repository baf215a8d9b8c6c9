"""Writes: idempotent batch appends (thumbnails first, then one insert), published state.

The statements a save and a publish run each batch read only the recent part of the table, so
their cost does not grow with the events stored: DuckDB keeps each column's min/max per row
group, and rows arrive in about time order, so a range on `timestamp` or `seq` skips the rest.
The single writer's lookup of a batch's ids is bounded by the batch's time span (see
`known_ids`), and `mark_published` by the seqs this store gave the events it saved lately.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.events import Event, as_utc, utcnow
from pipelines.storage.correlation import CorrelationMixin, GroupUpdate
from pipelines.storage.cursors import is_event_id
from pipelines.storage.errors import DuplicateEventError
from pipelines.storage.files import _fsync_dir, _write_atomic
from pipelines.storage.schema import _TS, ARROW_SCHEMA, EVENT_COLUMNS, _first

RECENT_SEQS = 100_000  # seqs of the latest saved events kept for mark_published's range


class WritesMixin(CorrelationMixin):
    """append, save_batch (correlate, then append) and mark_published."""

    def append(
        self,
        events: list[Event],
        thumbnails: dict[str, bytes] | None = None,
        *,
        stored: set[str] | None = None,
        groups: GroupUpdate = None,
    ) -> int:
        """Store events (and JPEG thumbnails) in one batch; returns how many were new.
        `groups`: stored rows' new correlation groups, updated in the insert's transaction.

        `stored`: the ids among them that are stored, as the single writer looked them up
        just before (`known_ids`); those are skipped and the rest inserted without a conflict
        check: if one is stored after all, nothing is and `DuplicateEventError` is raised.
        Without it, the primary key makes the insert idempotent (ON CONFLICT DO NOTHING, an
        index probe per row). A thumbnail file that exists is never rewritten (nor deleted
        when the insert fails): it is the same event's.
        """
        thumbnails = thumbnails or {}
        if not events:
            return 0
        checked = stored is not None
        with self._lock:
            unique = list({ev.event_id: ev for ev in reversed(events)}.values())[::-1]
            if stored is not None:
                unique = [ev for ev in unique if ev.event_id not in stored]
                if not unique:  # nothing to insert: the stored rows' groups go on their own
                    if groups is not None:
                        self._set_groups(*groups)
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
                    target = self.thumbnail_dir / f"{event_id}.jpg"
                    if event_id not in stored and not target.exists():
                        _write_atomic(target, thumbnails[event_id])
                        written.append(target)
                if written:
                    _fsync_dir(self.thumbnail_dir)
                row = self._insert(unique, checked=checked, groups=groups)
            except (duckdb.Error, OSError) as exc:
                for path in written:
                    path.unlink(missing_ok=True)
                if checked and _duplicate_key(exc):  # rolled back; the writer looks again
                    raise DuplicateEventError("an id of the batch is stored already") from exc
                raise self._fail("append", exc) from exc
            if checked:  # every one was inserted, with these seqs
                self._remember_seqs(unique)
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
        `stored`: as for `append`. The stored rows get their new groups in the insert's
        transaction; should it fail (a re-sent id met, a full disk), the correlation leaves no
        trace: the remembered starts are put back as well."""
        with self._lock:
            before = self._remembered()
            try:
                events, update = self._assign(events, window_s)
                self.append(events, thumbnails, stored=stored, groups=update)
            except BaseException:
                self._starts = before
                raise
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

    def _insert(
        self, events: list[Event], *, checked: bool = False, groups: GroupUpdate = None
    ) -> Any:
        """Insert the events in one transaction, skipping stored ids (`checked`: none is
        stored, so no conflict check: a stored one fails the batch, rolled back), with the
        stored rows' new correlation `groups`; the row-count row."""
        con = self.con
        con.register("_batch", self._arrow_rows(events))
        sql = "INSERT INTO events BY NAME SELECT * FROM _batch"
        if not checked:
            sql += " ON CONFLICT DO NOTHING"
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                row = _first(con.execute(sql))
                if groups is not None:
                    self._update_groups(*groups)
                con.execute("COMMIT")
            except BaseException:  # never left open: a later statement would join it
                with contextlib.suppress(duckdb.Error):  # else the unregister below fails
                    con.execute("ROLLBACK")
                raise
            return row
        finally:
            self._changed()
            if self._con is not None:
                with contextlib.suppress(duckdb.Error):  # never hides the error raised above
                    self._con.unregister("_batch")

    def published_among(self, ids: list[str]) -> set[str]:
        """Which of ids are stored and already published (a re-sent save must not republish)."""
        return {event_id for event_id, published in self.known_ids(ids).items() if published}

    def known_ids(
        self, ids: list[str], span: tuple[datetime, datetime] | None = None
    ) -> dict[str, bool]:
        """Which of ids are stored, each with whether it is published: one query (an Arrow
        table of the ids joined on the primary key), as the writer asks once per batch.
        `span`: only events whose timestamp is in it (inclusive) are looked at; without it,
        the whole table is read."""
        if not ids:
            return {}
        sql = "SELECT event_id, published_at IS NOT NULL FROM events WHERE "
        params: list[datetime] = []
        if span is not None:
            sql += '"timestamp" BETWEEN ? AND ? AND '
            params = [as_utc(span[0]), as_utc(span[1])]
        sql += "event_id IN (SELECT event_id FROM _ids)"
        with self._lock:
            con = self.con
            con.register("_ids", pa.table({"event_id": pa.array(ids, pa.string())}))
            try:
                rows = con.execute(sql, params).fetchall()
            except (duckdb.Error, OSError) as exc:
                raise self._fail("lookup", exc) from exc
            finally:
                if self._con is not None:
                    self._con.unregister("_ids")
        return {event_id: bool(published) for event_id, published in rows}

    def _set_published(self, ids: list[str], when: datetime) -> Any:
        """Set published_at of the events in ids that have none (an Arrow table join, not a
        loop, over the range of seqs this store gave them when all are recent saves); the
        row-count row."""
        con = self.con
        sql = (
            "UPDATE events SET published_at = ? FROM _ids "
            "WHERE events.event_id = _ids.event_id AND events.published_at IS NULL"
        )
        params: list[Any] = [when]
        recent = self._recent_seqs
        seqs = [recent[event_id] for event_id in ids if event_id in recent]
        if len(seqs) == len(ids):
            sql += " AND events.seq BETWEEN ? AND ?"
            params += [min(seqs), max(seqs)]
        con.register("_ids", pa.table({"event_id": pa.array(ids, pa.string())}))
        try:
            row = _first(con.execute(sql, params))
        finally:
            con.unregister("_ids")
        for event_id in ids:
            self._recent_seqs.pop(event_id, None)
        return row

    def _remember_seqs(self, events: list[Event]) -> None:
        """Keep the seqs just given to events (inserted in this order), the latest
        RECENT_SEQS at most."""
        recent = self._recent_seqs
        recent.update(
            zip(
                (ev.event_id for ev in events),
                range(self._seq + 1, self._seq + 1 + len(events)),
                strict=True,
            )
        )
        if len(recent) > RECENT_SEQS:
            for event_id in list(islice(recent, len(recent) - RECENT_SEQS // 2)):
                del recent[event_id]

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


def _duplicate_key(exc: BaseException) -> bool:
    """Whether exc is DuckDB refusing a stored primary key (not another constraint)."""
    return isinstance(exc, duckdb.ConstraintException) and "violates primary key" in str(exc)
