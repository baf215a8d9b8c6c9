"""Parquet export and compaction, as EventStore methods: the store side (watermark, locking,
errors) of the file work in ``pipelines.storage.parquet``."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from pipelines.events import utcnow
from pipelines.storage.connection import StoreBase
from pipelines.storage.parquet import compact_day, days_to_compact, files_watermark, write_days
from pipelines.storage.schema import _SELECT_EVENT, _first


class ExportMixin(StoreBase):
    """export_parquet and compact_parquet."""

    def _watermark(self) -> int:
        """Highest seq exported: the recorded one, or the files' own after a crash."""
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
