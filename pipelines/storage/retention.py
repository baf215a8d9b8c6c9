"""Retention: events older than retention_days go, with their thumbnails and whole partitions."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import duckdb

from pipelines.events import as_utc
from pipelines.storage.clock import ClockGuard
from pipelines.storage.connection import StoreBase
from pipelines.storage.parquet import expire_partitions
from pipelines.storage.schema import _first

logger = logging.getLogger(__name__)

MAX_CLOCK_GAP_S = 7 * 86_400.0  # after a restart: a clock further ahead of the store waits a day


class RetentionMixin(StoreBase):
    """apply_retention."""

    _clock: ClockGuard | None = None

    def apply_retention(self, now: datetime | None = None) -> int:
        """Delete events older than retention_days with their thumbnails and old partitions.

        Without `now` (maintenance), the wall clock is checked first (pipelines.storage.clock):
        after a step forward or back the pass deletes nothing."""
        if self.retention_days <= 0:
            return 0
        if now is None:
            now, why = self._clock_guard().check()
            if why is not None:
                return 0
            self._remember_clock(now)
        cutoff = as_utc(now) - timedelta(days=self.retention_days)
        with self._lock:
            try:
                ids = [
                    r[0]
                    for r in self.con.execute(
                        'SELECT event_id FROM events WHERE "timestamp" < ?', [cutoff]
                    ).fetchall()
                ]
                if ids:
                    try:
                        self.con.execute('DELETE FROM events WHERE "timestamp" < ?', [cutoff])
                    finally:
                        self._changed()
            except (duckdb.Error, OSError) as exc:
                raise self._fail("retention", exc) from exc
            for event_id in ids:
                (self.thumbnail_dir / f"{event_id}.jpg").unlink(missing_ok=True)
            # Whole partitions only: a day strictly before the cutoff's day is all expired.
            expire_partitions(self.parquet_dir, self.staging_dir, cutoff.date())
        if ids:
            logger.info("retention removed %d events older than %s", len(ids), cutoff.date())
        return len(ids)

    def _clock_guard(self) -> ClockGuard:
        if self._clock is None:
            with self._lock:
                row = _first(self.con.execute("SELECT value FROM meta WHERE key = 'clock_seen'"))
                # a store from before the mark (or with an unreadable one): its newest row's
                # storing time stands in, so the first pass is checked too
                newest = _first(self.con.execute("SELECT max(stored_at) FROM events"))
            seen = None
            if row:
                try:
                    seen = as_utc(datetime.fromisoformat(str(row[0])))
                except ValueError:
                    logger.warning("retention: the stored clock mark is unreadable")
            if seen is None and newest and newest[0] is not None:
                seen = as_utc(newest[0])
            gap = min(MAX_CLOCK_GAP_S, self.retention_days * 86_400.0 / 2)
            self._clock = ClockGuard(seen, max_gap_s=gap)
        return self._clock

    def _remember_clock(self, now: datetime) -> None:
        """The latest trusted wall time, kept across restarts (meta `clock_seen`)."""
        with self._lock:
            try:
                self.con.execute(
                    "INSERT INTO meta VALUES ('clock_seen', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [as_utc(now).isoformat()],
                )
            except duckdb.Error as exc:
                logger.warning("retention: could not record the clock: %s", exc)
