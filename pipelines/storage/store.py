"""EventStore: the DuckDB event table (schema, migrations, appends, queries, correlation groups,
published state) with thumbnails on disk; Parquet export, compaction and retention are delegated
to ``pipelines.storage.parquet``.
"""

from __future__ import annotations

import bisect
import logging
import shutil
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.events import Event, utcnow
from pipelines.storage.cursors import _utc, decode_cursor, encode_cursor, is_event_id
from pipelines.storage.errors import StorageError, StorageFullError, _is_full
from pipelines.storage.files import _fsync_dir, _write_atomic
from pipelines.storage.parquet import (
    compact_day,
    days_to_compact,
    expire_partitions,
    files_watermark,
    write_days,
)
from pipelines.storage.schema import (
    _SELECT_EVENT,
    _TS,
    ARROW_SCHEMA,
    EVENT_COLUMNS,
    MIGRATIONS,
    _first,
    _row_to_event,
)

logger = logging.getLogger(__name__)

MAX_QUERY_LIMIT = 500


class EventStore:
    """DuckDB-backed event store with thumbnails and Parquet export; thread-safe via one lock."""

    def __init__(self, path: Path, *, retention_days: int = 30, thumbnail_quality: int = 85):
        self.path = Path(path)
        self.retention_days = retention_days
        self.thumbnail_quality = thumbnail_quality  # used by callers that encode JPEGs
        self.db_path = self.path / "events.duckdb"
        self.thumbnail_dir = self.path / "thumbnails"
        self.parquet_dir = self.path / "parquet"
        # Compaction and retention stage directories here: same filesystem, outside the glob.
        self.staging_dir = self.path / ".parquet-staging"
        for folder in (self.path, self.thumbnail_dir, self.parquet_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(exist_ok=True)
        self._thumb_root = self.thumbnail_dir.resolve()
        self._lock = threading.RLock()
        # camera_id -> [(start, group id or None)] of recent starts, for correlation.
        self._starts: dict[str, list[tuple[datetime, str | None]]] = {}
        self._con: duckdb.DuckDBPyConnection | None = None
        self._closed = False
        self._connect()
        # We hold DuckDB's writer lock now: staging leftovers are an interrupted run's.
        for leftover in self.staging_dir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    # ---------------------------------------------------------------- connection & schema
    def _connect(self) -> None:
        con = duckdb.connect(str(self.db_path))
        con.execute("SET TimeZone='UTC'")
        self._con = con
        self._migrate()
        row = _first(con.execute("SELECT coalesce(max(seq), 0) FROM events"))
        self._seq = int(row[0]) if row else 0

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The open DuckDB connection (reconnects after a fatal error)."""
        if self._con is None:
            if self._closed:
                raise StorageError("store is closed")
            self._connect()
        assert self._con is not None
        return self._con

    def _migrate(self) -> None:
        con = self._con
        assert con is not None
        con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = _first(con.execute("SELECT max(version) FROM schema_version"))
        current = int(row[0]) if row and row[0] is not None else 0
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                for sql in statements:
                    con.execute(sql)
                con.execute("INSERT INTO schema_version VALUES (?)", [version])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            logger.info("storage schema migrated to version %d", version)

    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._lock:
            row = _first(self.con.execute("SELECT max(version) FROM schema_version"))
            return int(row[0]) if row and row[0] is not None else 0

    def _fail(self, what: str, exc: BaseException) -> StorageError:
        """Log a failed write, roll back, reset a broken connection; the error to raise."""
        full = _is_full(exc)
        reason = "disk full" if full else type(exc).__name__
        logger.error("storage %s failed (%s): %s", what, reason, exc)
        if self._con is not None:
            try:
                self._con.execute("ROLLBACK")
            except duckdb.Error:
                pass
            try:  # a fatal I/O error invalidates the instance: reopen on next use
                _first(self._con.execute("SELECT 1"))
            except duckdb.Error:
                try:
                    self._con.close()
                except duckdb.Error:
                    pass
                self._con = None
        cls = StorageFullError if full else StorageError
        return cls(f"storage {what} failed: {reason}")

    # ---------------------------------------------------------------- writes
    def append(self, events: list[Event], thumbnails: dict[str, bytes] | None = None) -> int:
        """Store events (and JPEG thumbnails) in one batch; returns how many were new."""
        thumbnails = thumbnails or {}
        if not events:
            return 0
        with self._lock:
            unique = list({ev.event_id: ev for ev in reversed(events)}.values())[::-1]
            if self._starts:
                unique = [self._with_group(ev) for ev in unique]
            # The primary key makes the insert idempotent (ON CONFLICT DO NOTHING, an index
            # probe per row, not a scan of the growing table). Only ids that come with a
            # thumbnail are looked up first: a re-send must neither rewrite nor, on failure,
            # delete the file of the event already stored.
            with_thumb = [ev.event_id for ev in unique if thumbnails.get(ev.event_id)]
            try:
                stored = self._stored_ids(with_thumb) if with_thumb else set()
            except (duckdb.Error, OSError) as exc:
                raise self._fail("append", exc) from exc
            written: list[Path] = []
            try:
                for event_id in with_thumb:  # thumbnails first: a committed row has its file
                    if event_id not in stored:
                        target = self.thumbnail_dir / f"{event_id}.jpg"
                        _write_atomic(target, thumbnails[event_id])
                        written.append(target)
                if written:
                    _fsync_dir(self.thumbnail_dir)
                con = self.con
                con.register("_batch", self._arrow_rows(unique))
                try:
                    con.execute("BEGIN TRANSACTION")
                    row = _first(
                        con.execute(
                            "INSERT INTO events SELECT * FROM _batch ON CONFLICT DO NOTHING"
                        )
                    )
                    con.execute("COMMIT")
                finally:
                    if self._con is not None:
                        self._con.unregister("_batch")
            except (duckdb.Error, OSError) as exc:
                for path in written:
                    path.unlink(missing_ok=True)
                raise self._fail("append", exc) from exc
            self._seq += len(unique)  # seq of a duplicate stays unused: gaps are harmless
            return int(row[0]) if row else len(unique)

    def save_batch(
        self, events: list[Event], thumbnails: dict[str, bytes] | None, window_s: float
    ) -> list[Event]:
        """Correlate and append a batch in one go; the events as stored, in input order."""
        with self._lock:
            events = self.assign_correlation(events, window_s)
            self.append(events, thumbnails)
            return events

    def _stored_ids(self, ids: list[str]) -> set[str]:
        """Which of ids are stored (primary-key index lookups)."""
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT event_id FROM events WHERE event_id IN ({marks})"  # noqa: S608 - only ?s
        return {r[0] for r in self.con.execute(sql, ids).fetchall()}

    def _join_ids(
        self, ids: list[str], head: str, params: list[Any] | None = None, update: bool = False
    ) -> list[tuple[Any, ...]]:
        """Run `head` against the events whose id is in ids (an Arrow table join, not a loop)."""
        con = self.con
        con.register("_ids", pa.table({"event_id": pa.array(ids, pa.string())}))
        try:
            if update:
                sql = (
                    f"{head} FROM _ids WHERE events.event_id = _ids.event_id "
                    "AND events.published_at IS NULL"
                )
            else:
                sql = f"{head} FROM events e JOIN _ids USING (event_id)"
            return con.execute(sql, params or []).fetchall()
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

    def mark_published(self, event_ids: Iterable[str], at: datetime | None = None) -> int:
        """Record events as published; returns how many were newly marked."""
        ids = [i for i in event_ids if is_event_id(i)]
        if not ids:
            return 0
        when = _utc(at) if at else utcnow()
        with self._lock:
            try:
                rows = self._join_ids(
                    ids, "UPDATE events SET published_at = ?", [when], update=True
                )
                row = rows[0] if rows else None
            except (duckdb.Error, OSError) as exc:
                raise self._fail("mark_published", exc) from exc
            return int(row[0]) if row else 0

    # ---------------------------------------------------------------- reads
    def get(self, event_id: str) -> Event | None:
        """One event by id, or None (also for a malformed id)."""
        if not is_event_id(event_id):
            return None
        with self._lock:
            row = _first(
                self.con.execute(
                    f"SELECT {_SELECT_EVENT} FROM events WHERE event_id = ?",  # noqa: S608 - constant
                    [event_id],
                )
            )
        return _row_to_event(row) if row else None

    def published_at(self, event_id: str) -> datetime | None:
        """When the event was published, or None."""
        if not is_event_id(event_id):
            return None
        with self._lock:
            row = _first(
                self.con.execute("SELECT published_at FROM events WHERE event_id = ?", [event_id])
            )
        return row[0] if row else None

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
    ) -> tuple[list[Event], str | None]:
        """Events matching the filters, newest first, with a keyset cursor for the next page."""
        limit = max(1, min(int(limit), MAX_QUERY_LIMIT))
        where: list[str] = []
        params: list[Any] = []
        if camera_id is not None:
            where.append("camera_id = ?")
            params.append(camera_id)
        if since is not None:
            where.append('"timestamp" >= ?')
            params.append(_utc(since))
        if until is not None:
            where.append('"timestamp" <= ?')
            params.append(_utc(until))
        if object is not None:
            where.append("list_contains(objects_detected, ?)")
            params.append(object)
        if cursor:
            ts, last_id = decode_cursor(cursor)
            where.append('("timestamp" < ? OR ("timestamp" = ? AND event_id < ?))')
            params.extend([ts, ts, last_id])
        # Column names are module constants; every value is a bound parameter.
        sql = f"SELECT {_SELECT_EVENT} FROM events"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += ' ORDER BY "timestamp" DESC, event_id DESC LIMIT ?'
        params.append(limit + 1)
        with self._lock:
            rows = self.con.execute(sql, params).fetchall()
        events = [_row_to_event(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = events[-1]
            next_cursor = encode_cursor(last.timestamp, last.event_id)
        return events, next_cursor

    def unpublished_events(self, max_age_s: float | None = None) -> list[Event]:
        """Events never published (younger than max_age_s when given), oldest first."""
        return self._oldest_first("published_at IS NULL", max_age_s)

    def events_since(self, max_age_s: float) -> list[Event]:
        """Every event younger than max_age_s, oldest first (for replay)."""
        return self._oldest_first("TRUE", max_age_s)

    def _oldest_first(self, condition: str, max_age_s: float | None) -> list[Event]:
        params: list[Any] = []
        if max_age_s is not None:
            condition += ' AND "timestamp" >= ?'
            params.append(utcnow() - timedelta(seconds=max_age_s))
        with self._lock:
            sql = f"SELECT {_SELECT_EVENT} FROM events WHERE {condition}"  # noqa: S608
            rows = self.con.execute(sql + ' ORDER BY "timestamp", seq', params).fetchall()
        return [_row_to_event(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of stored, published and unpublished events."""
        with self._lock:
            row = _first(self.con.execute("SELECT count(*), count(published_at) FROM events"))
        stored, published = (int(row[0]), int(row[1])) if row else (0, 0)
        return {"stored": stored, "published": published, "unpublished": stored - published}

    def stats(self) -> dict[str, Any]:
        """Counts plus on-disk facts: schema version, file sizes, Parquet files, watermark."""
        with self._lock:
            info = dict(self.counts())
            info["schema_version"] = self.schema_version()
            info["export_watermark"] = self._watermark()
        info["db_bytes"] = self.db_path.stat().st_size if self.db_path.exists() else 0
        info["thumbnails"] = sum(1 for _ in self.thumbnail_dir.glob("*.jpg"))
        info["parquet_files"] = sum(1 for _ in self.parquet_dir.glob("date=*/*.parquet"))
        return info

    # ---------------------------------------------------------------- correlation
    def correlation_group(self, camera_id: str, timestamp: datetime, window_s: float) -> str | None:
        """Group id shared with other cameras' events starting within window_s, else None.

        Every other-camera start in the window gets the id too: rows already stored are
        updated in place; starts not stored yet are remembered here and get it at append time.
        An existing group among them (the nearest one) is reused.
        """
        return self._correlate([(camera_id, timestamp)], window_s)[0]

    def assign_correlation(self, events: list[Event], window_s: float) -> list[Event]:
        """The events with their correlation groups, as if correlation_group ran for each in turn.

        Events of the same batch on different cameras within window_s share a group too; the
        table is read once and updated once for the whole batch. An event that already has a
        group keeps it (and takes no part).
        """
        if window_s <= 0 or not events:
            return list(events)
        todo = [i for i, ev in enumerate(events) if ev.correlation_group_id is None]
        with self._lock:
            groups = self._correlate(
                [(events[i].camera_id, events[i].timestamp) for i in todo], window_s
            )
            out = list(events)
            for i, group in zip(todo, groups, strict=True):
                ev = events[i]
                if group is not None:
                    out[i] = ev.model_copy(update={"correlation_group_id": group})
                else:  # a later event of this batch may have pulled it into a group
                    out[i] = self._with_group(ev)
            return out

    def _correlate(self, starts: list[tuple[str, datetime]], window_s: float) -> list[str | None]:
        """Correlation groups of (camera_id, start) in order: one table read, one update."""
        if window_s <= 0 or not starts:
            return [None] * len(starts)
        window = timedelta(seconds=window_s)
        stamps = [_utc(ts) for _, ts in starts]
        lo, hi = min(stamps), max(stamps)
        with self._lock:
            self._prune_starts(lo, hi, window)
            try:  # the table too: after a restart the memory is empty
                rows = self.con.execute(
                    'SELECT event_id, camera_id, "timestamp", correlation_group_id FROM events '
                    'WHERE "timestamp" BETWEEN ? AND ? ORDER BY "timestamp"',
                    [lo - window, hi + window],
                ).fetchall()
            except (duckdb.Error, OSError) as exc:
                raise self._fail("correlation lookup", exc) from exc
            # camera -> stored rows [event_id, start, group] by start, with their starts apart
            table: dict[str, list[list[Any]]] = {}
            for event_id, cam, start, group in rows:
                table.setdefault(cam, []).append([event_id, start, group])
            table_starts = {cam: [r[1] for r in cam_rows] for cam, cam_rows in table.items()}
            changed: dict[str, str] = {}  # stored event_id -> group this batch gave it
            out: list[str | None] = []
            for (camera_id, _), ts in zip(starts, stamps, strict=True):
                near: list[tuple[timedelta, str, datetime, str | None]] = [
                    (abs(start - ts), other, start, group)
                    for other, cam_starts in self._starts.items()
                    if other != camera_id
                    for start, group in cam_starts
                    if abs(start - ts) <= window
                ]
                in_window: list[list[Any]] = []
                for other, cam_rows in table.items():
                    if other == camera_id:
                        continue
                    keys = table_starts[other]
                    first = bisect.bisect_left(keys, ts - window)
                    last = bisect.bisect_right(keys, ts + window)
                    in_window += cam_rows[first:last]
                    near += [(abs(r[1] - ts), other, r[1], r[2]) for r in cam_rows[first:last]]
                if not near:
                    self._starts.setdefault(camera_id, []).append((ts, None))
                    out.append(None)
                    continue
                near.sort(key=lambda item: item[0])
                group = next((g for *_, g in near if g is not None), None) or str(uuid.uuid4())
                for _, other, start, _ in near:
                    cam_starts = self._starts.setdefault(other, [])
                    cam_starts[:] = [
                        (s, group if s == start and g is None else g) for s, g in cam_starts
                    ]
                    if not any(s == start for s, _ in cam_starts):
                        cam_starts.append((start, group))
                self._starts.setdefault(camera_id, []).append((ts, group))
                for row in in_window:  # stored rows without a group join this one
                    if row[2] is None:
                        row[2] = group
                        changed[row[0]] = group
                out.append(group)
            if changed:
                self._set_groups(changed)
            return out

    def _set_groups(self, groups: dict[str, str]) -> None:
        """Give stored events (that still have none) their correlation group, in one update."""
        con = self.con
        con.register(
            "_groups",
            pa.table(
                {
                    "event_id": pa.array(list(groups), pa.string()),
                    "group_id": pa.array(list(groups.values()), pa.string()),
                }
            ),
        )
        try:
            con.execute(
                "UPDATE events SET correlation_group_id = _groups.group_id FROM _groups "
                "WHERE events.event_id = _groups.event_id "
                "AND events.correlation_group_id IS NULL"
            ).fetchall()
        except (duckdb.Error, OSError) as exc:
            raise self._fail("correlation update", exc) from exc
        finally:
            if self._con is not None:
                self._con.unregister("_groups")

    def _prune_starts(self, lo: datetime, hi: datetime, window: timedelta) -> None:
        horizon = max(window * 2, timedelta(minutes=5))
        for cam in list(self._starts):
            kept = [(s, g) for s, g in self._starts[cam] if lo - horizon <= s <= hi + horizon]
            if kept:
                self._starts[cam] = kept[-256:]
            else:
                del self._starts[cam]

    def _with_group(self, ev: Event) -> Event:
        if ev.correlation_group_id is not None:
            return ev
        for start, group in self._starts.get(ev.camera_id, ()):
            if group is not None and start == ev.timestamp:
                return ev.model_copy(update={"correlation_group_id": group})
        return ev

    # ---------------------------------------------------------------- parquet
    def _watermark(self) -> int:
        row = _first(self.con.execute("SELECT value FROM meta WHERE key = 'export_seq'"))
        recorded = int(row[0]) if row else 0
        return max(recorded, files_watermark(self.parquet_dir))

    def export_parquet(self) -> int:
        """Write rows not yet exported as one Parquet file per date; returns rows written."""
        with self._lock:
            try:
                start = self._watermark()
                table: pa.Table = self.con.sql(
                    f'SELECT seq, {_SELECT_EVENT}, stored_at, CAST("timestamp" AS DATE) AS day '  # noqa: S608
                    "FROM events WHERE seq > ? ORDER BY seq",
                    params=[start],
                ).to_arrow_table()
                if table.num_rows == 0:
                    return 0
                high = write_days(self.parquet_dir, table)
                self.con.execute(
                    "INSERT INTO meta VALUES ('export_seq', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [str(high)],
                )
            except (duckdb.Error, OSError) as exc:
                raise self._fail("parquet export", exc) from exc
            return table.num_rows

    def compact_parquet(self, max_files: int = 8, include_today: bool = False) -> int:
        """Merge each closed day's files into one when it has more than max_files; days merged.

        Today's partition is left alone (readers of live data must never see files vanish);
        include_today is for offline use only (no reader running).
        """
        today = utcnow().date()
        merged = 0
        with self._lock:
            for folder, parts in days_to_compact(self.parquet_dir, today, max_files, include_today):
                try:
                    compact_day(self.parquet_dir, self.staging_dir, folder, parts)
                except OSError as exc:
                    raise self._fail("parquet compaction", exc) from exc
                merged += 1
        return merged

    # ---------------------------------------------------------------- retention
    def apply_retention(self, now: datetime | None = None) -> int:
        """Delete events older than retention_days with their thumbnails and old partitions."""
        if self.retention_days <= 0:
            return 0
        cutoff = _utc(now or utcnow()) - timedelta(days=self.retention_days)
        with self._lock:
            try:
                ids = [
                    r[0]
                    for r in self.con.execute(
                        'SELECT event_id FROM events WHERE "timestamp" < ?', [cutoff]
                    ).fetchall()
                ]
                if ids:
                    self.con.execute('DELETE FROM events WHERE "timestamp" < ?', [cutoff])
            except (duckdb.Error, OSError) as exc:
                raise self._fail("retention", exc) from exc
            for event_id in ids:
                (self.thumbnail_dir / f"{event_id}.jpg").unlink(missing_ok=True)
            # Whole partitions only: a day strictly before the cutoff's day is all expired.
            expire_partitions(self.parquet_dir, self.staging_dir, cutoff.date())
        if ids:
            logger.info("retention removed %d events older than %s", len(ids), cutoff.date())
        return len(ids)

    def close(self) -> None:
        """Checkpoint and close the database."""
        with self._lock:
            if self._con is not None:
                try:
                    self._con.execute("CHECKPOINT")
                except duckdb.Error as exc:
                    logger.warning("checkpoint on close failed: %s", exc)
                self._con.close()
                self._con = None
            self._closed = True
