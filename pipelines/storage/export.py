"""Parquet export and compaction, as EventStore methods: the store side (watermark, locking,
errors) of the file work in ``pipelines.storage.parquet``."""

from __future__ import annotations

import logging

import duckdb
import pyarrow as pa

from pipelines.events import utcnow
from pipelines.storage.connection import StoreBase
from pipelines.storage.parquet import (
    compact_day,
    days_to_compact,
    files_watermark,
    rewrite_groups,
    write_days,
)
from pipelines.storage.schema import _SELECT_EVENT, _first

logger = logging.getLogger(__name__)


class ExportMixin(StoreBase):
    """export_parquet and compact_parquet."""

    def _watermark(self) -> int:
        """Highest seq exported: the recorded one, or the files' own after a crash."""
        row = _first(self.con.execute("SELECT value FROM meta WHERE key = 'export_seq'"))
        recorded = int(row[0]) if row else 0
        return max(recorded, files_watermark(self.parquet_dir))

    def export_parquet(self) -> int:
        """Write rows not yet exported as one Parquet file per date, and rewrite the files of
        exported rows whose correlation group changed since (groups can form late); returns
        the new rows written."""
        with self._lock:
            try:
                start = self._watermark()
                table: pa.Table = self.con.sql(
                    f'SELECT seq, {_SELECT_EVENT}, stored_at, CAST("timestamp" AS DATE) AS day '  # noqa: S608
                    "FROM events WHERE seq > ? ORDER BY day, seq",  # each day one slice
                    params=[start],
                ).to_arrow_table()
                if table.num_rows:
                    high = write_days(self.parquet_dir, table)
                    self.con.execute(
                        "INSERT INTO meta VALUES ('export_seq', ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [str(high)],
                    )
                self._rewrite_stale(start)
            except (duckdb.Error, OSError) as exc:
                raise self._fail("parquet export", exc) from exc
            return table.num_rows

    def _rewrite_stale(self, exported_before: int) -> int:
        """Bring rows exported before this pass (seq <= exported_before) whose group changed
        up to date in Parquet; rows exported by this pass already carry the current group."""
        rows = self.con.execute(
            'SELECT e.event_id, e.seq, CAST(e."timestamp" AS DATE), e.correlation_group_id '
            "FROM parquet_stale s JOIN events e USING (event_id) WHERE e.seq <= ?",
            [exported_before],
        ).fetchall()
        fixed = rewrite_groups(self.parquet_dir, self.staging_dir, rows) if rows else 0
        # cleared after the files are in place: a crash in between only redoes the rewrite
        self.con.execute("DELETE FROM parquet_stale").fetchall()
        if fixed:
            logger.info("Parquet: correlation groups of %d exported rows rewritten", fixed)
        return fixed

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
