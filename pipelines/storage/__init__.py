"""Event storage: DuckDB (single writer) + atomic Parquet export + JPEG thumbnails on disk.

Layout under ``path``::

    events.duckdb                           the store (one writing process: the event-store actor)
    thumbnails/<event_id>.jpg               written atomically before the event row commits
    parquet/date=YYYY-MM-DD/part-*.parquet  hive partitions, each file published by os.replace
    .parquet-staging/                       compaction/retention work area (outside the glob)

Parquet file names carry the range of store sequence numbers they hold
(``part-<first>-<last>-<tag>.parquet``), so the export watermark can be recovered from the files
themselves after a crash between writing a file and recording the watermark (no duplicates).
Temporary files are named ``.tmp-<uuid>.parquet.partial``: the ``**/*.parquet`` glob skips them.

What a reader of ``read_parquet('parquet/**/*.parquet', hive_partitioning=true,
union_by_name=true)`` can rely on (``union_by_name``: columns added after a day's first file):

* A Parquet file, once visible, is never modified (DuckDB readers cache footers by path, so an
  in-place rewrite could be read torn) and today's partition is never compacted: it only gains
  whole files (but for a correlation rewrite, below). A reader never counts a row twice.
* Compaction merges the small files of *closed* days (before today, UTC) only. The merged file
  is built in ``.parquet-staging/`` (outside the glob) and swapped in with one atomic directory
  exchange (``renameat2(RENAME_EXCHANGE)``), so a listing shows either the old files or the merged
  one, never both: no double counting. Retention likewise takes an expired partition out of the
  glob with one rename, then deletes it. The one unavoidable window (files cannot be swapped
  under a query that already listed them): a query over a past day that listed its old files
  just before a swap and opens one after it gets a file-not-found error; retry it. The
  event-store actor runs compaction and retention once a day only, at startup and at the first
  maintenance pass after midnight UTC, so the window is one instant a day, on closed days.
* Parquet and DuckDB agree on every row's ``correlation_group_id``. A group can form after a row
  was exported (another camera's event within the window is stored later); the row is then
  marked in ``parquet_stale`` (in the same transaction as the update) and the next export
  rewrites the part files holding such rows under new names (same seq range) and swaps their
  day's directory in one step, as compaction does. This is the one case where today's
  partition loses files; the same one-instant window applies (retry the query).

Modules: ``store`` (EventStore, assembled from one mixin per job on ``connection.StoreBase``:
directories, connection, lock, failure handling), ``writes`` (appends, published state),
``queries`` (reads, MAX_QUERY_LIMIT), ``correlation`` (correlation groups), ``export`` (Parquet
export and compaction), ``retention`` (expiry), ``parquet`` (the partition files: export,
compaction, retention), ``schema`` (columns, Arrow schema, migrations), ``cursors`` (event ids,
keyset cursors), ``files`` (atomic writes and directory swaps), ``errors`` (StorageError,
StorageFullError); around a store: ``writer`` (group commit behind a bounded write queue),
``maintenance`` (retention, compaction and export on a thread); read-only helpers over a store:
``search`` (the ``q`` text filter), ``readcache`` (answers of repeated reads until the next
write), ``feed`` (events after a seq, for the live stream),
``summary`` (period summaries).
"""

from pipelines.storage.cursors import UUID_RE, decode_cursor, encode_cursor, is_event_id
from pipelines.storage.errors import (
    ReadTimeoutError,
    StorageError,
    StorageFullError,
    StoreBusyError,
)
from pipelines.storage.parquet import DATE_DIR_RE, PART_RE
from pipelines.storage.queries import MAX_QUERY_LIMIT
from pipelines.storage.schema import ARROW_SCHEMA, EVENT_COLUMNS, MIGRATIONS
from pipelines.storage.store import EventStore

__all__ = [
    "ARROW_SCHEMA",
    "DATE_DIR_RE",
    "EVENT_COLUMNS",
    "MAX_QUERY_LIMIT",
    "MIGRATIONS",
    "PART_RE",
    "UUID_RE",
    "EventStore",
    "ReadTimeoutError",
    "StorageError",
    "StorageFullError",
    "StoreBusyError",
    "decode_cursor",
    "encode_cursor",
    "is_event_id",
]
