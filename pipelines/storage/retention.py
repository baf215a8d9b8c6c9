"""Retention: events older than retention_days go, with their thumbnails and whole partitions."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import duckdb

from pipelines.events import as_utc, utcnow
from pipelines.storage.connection import StoreBase
from pipelines.storage.parquet import expire_partitions

logger = logging.getLogger(__name__)


class RetentionMixin(StoreBase):
    """apply_retention."""

    def apply_retention(self, now: datetime | None = None) -> int:
        """Delete events older than retention_days with their thumbnails and old partitions."""
        if self.retention_days <= 0:
            return 0
        cutoff = as_utc(now or utcnow()) - timedelta(days=self.retention_days)
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
