"""EventStore: the DuckDB event table with thumbnails on disk and Parquet export, assembled
from one mixin per job (all on ``connection.StoreBase``: directories, connection, lock, errors):

* ``writes``       append, save_batch, mark_published (with ``correlation``: assign_correlation)
* ``queries``      get, thumbnail_path, query, unpublished_events, events_since, counts
* ``export``       export_parquet, compact_parquet (file work in ``parquet``)
* ``retention``    apply_retention
"""

from __future__ import annotations

from pipelines.storage.export import ExportMixin
from pipelines.storage.queries import QueriesMixin
from pipelines.storage.retention import RetentionMixin
from pipelines.storage.writes import WritesMixin


class EventStore(WritesMixin, QueriesMixin, ExportMixin, RetentionMixin):
    """DuckDB-backed event store with thumbnails and Parquet export; thread-safe via one lock."""
