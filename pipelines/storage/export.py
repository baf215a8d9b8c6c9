"""Parquet export and compaction, as EventStore methods: the store side (watermark, locking,
errors) of the file work in ``pipelines.storage.parquet``."""

from __future__ import annotations

import logging
from collections.abc import Callable

import duckdb
import pyarrow as pa

from pipelines.events import utcnow
from pipelines.storage.connection import StoreBase
from pipelines.storage.parquet import (
    days_to_compact,
    files_watermark,
    merge_parts,
    rewrite_groups,
    swap_day,
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

    def compact_parquet(
        self,
        max_files: int = 8,
        include_today: bool = False,
        stop: Callable[[], bool] | None = None,
    ) -> int:
        """Merge each closed day's files into one when it has more than max_files; days merged.

        Today's partition is left alone (readers of live data must never see files vanish);
        include_today is for offline use only (no reader running). A day's files are read
        outside the lock and swapped under it, if they are all still there (an export may
        have rewritten one for a late group: that day waits for the next pass), so a commit
        never waits for more than one day's swap. `stop`, asked before each day, ends the
        pass early (the store is closing).
        """
        merged = 0
        for folder, parts in days_to_compact(
            self.parquet_dir, utcnow().date(), max_files, include_today
        ):
            if stop is not None and stop():
                break
            try:
                name, table = merge_parts(parts)
            except FileNotFoundError:
                continue  # rewritten while it was read
            except OSError as exc:
                with self._lock:
                    raise self._fail("parquet compaction", exc) from exc
            with self._lock:
                if not all(part.exists() for part in parts):
                    continue
                try:
                    swap_day(self.parquet_dir, self.staging_dir, folder, {name: table}, set(parts))
                except OSError as exc:
                    raise self._fail("parquet compaction", exc) from exc
            merged += 1
        return merged
