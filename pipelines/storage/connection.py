"""StoreBase: what every part of EventStore shares: directories, the DuckDB connection (opened,
migrated, reopened after a fatal error, closed; a corrupt file at start moved aside and rebuilt
from Parquet, see ``rebuild``), the one lock, and failure handling (_fail).

The jobs live in mixins built on this class: ``writes`` (appends, published state),
``queries`` (reads), ``correlation`` (correlation groups), ``export`` (Parquet export and
compaction), ``retention`` (expiry); ``store`` puts them together as EventStore.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipelines.events import utcnow
from pipelines.storage import rebuild
from pipelines.storage.errors import ReadTimeoutError, StorageError, StorageFullError, _is_full
from pipelines.storage.parquet import files_watermark
from pipelines.storage.readcache import MAX_CACHED_EVENTS, ReadCache
from pipelines.storage.schema import _first, migrate
from pipelines.storage.starts import RememberedStarts

logger = logging.getLogger(__name__)

# a summary or search running longer is interrupted: the API has given up on it by then
# (serve_apps.api.client.CALL_TIMEOUT_S, 3 s)
READ_TIMEOUT_S = 2.5


def _high_water(con: duckdb.DuckDBPyConnection, parquet_dir: Path) -> int:
    """The last seq ever given out: the largest of the rows' own, the recorded export watermark
    and the exported files' (rows can all have expired, or the database been moved aside while
    `parquet/` was kept). New rows start above it, so the export never skips them as already
    exported and feed readers never see the sequence go back."""
    row = _first(
        con.execute(
            "SELECT greatest((SELECT coalesce(max(seq), 0) FROM events), "
            "(SELECT coalesce(max(TRY_CAST(value AS BIGINT)), 0) FROM meta "
            "WHERE key = 'export_seq'))"
        )
    )
    return max(int(row[0]) if row else 0, files_watermark(parquet_dir))


class StoreBase:
    """Directories, connection, lock and failure handling shared by the EventStore mixins."""

    def __init__(
        self,
        path: Path,
        *,
        retention_days: int = 30,
        thumbnail_quality: int = 85,
        read_cache_events: int = MAX_CACHED_EVENTS,
    ):
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
        # every camera's recent starts and their group ids, for correlation
        self._starts = RememberedStarts()
        # event_id -> seq of the events this store saved lately (see writes.mark_published)
        self._recent_seqs: dict[str, int] = {}
        self._con: duckdb.DuckDBPyConnection | None = None
        self._closed = False
        self._generation = 0  # of the connection: read cursors belong to one
        self._reads = threading.local()  # each read thread's cursor
        self._cursors: list[duckdb.DuckDBPyConnection] = []  # all of them, closed with the store
        self.rebuilt: dict[str, object] | None = None  # what a rebuild from Parquet did
        # Bumped after every commit that changes event rows (see readcache): repeated reads
        # are answered from read_cache while it stays the same.
        self.data_version = 0
        self.read_cache = ReadCache(read_cache_events)
        self._open()
        # We hold DuckDB's writer lock now: staging leftovers are an interrupted run's.
        for leftover in self.staging_dir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    def _open(self) -> None:
        """Open the database; a corrupt one is moved aside and rebuilt from Parquet."""
        marker = self.db_path.with_name(rebuild.PENDING)
        if marker.exists():  # a rebuild was cut short: it starts over
            logger.error("storage: an earlier rebuild from Parquet did not finish; redoing it")
            rebuild.discard_partial(self.db_path)
            moved_name = "(moved aside by the earlier attempt)"
        else:
            try:
                self._connect()
                return
            except duckdb.Error as exc:
                if not rebuild.is_corrupt(exc):
                    raise
                error = exc
            if self._con is not None:
                try:
                    self._con.close()
                except duckdb.Error:
                    pass
                self._con = None
            rebuild.mark_pending(self.db_path)
            moved = rebuild.quarantine(self.db_path, utcnow())
            moved_name = moved.name
            logger.error(
                "storage: %s cannot be opened (%s): moved aside to %s; rebuilding from Parquet",
                self.db_path.name,
                error,
                moved.name,
            )
        now = utcnow()
        self._connect()
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            restored, skipped = rebuild.restore_from_parquet(con, self.parquet_dir, now)
            self.rebuilt = rebuild.record(con, moved_name, restored, skipped, now)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("CHECKPOINT")
        marker.unlink(missing_ok=True)  # committed: a later start opens it as usual
        self._seq = _high_water(con, self.parquet_dir)
        logger.error(
            "storage: rebuilt from Parquet: %d events restored (recorded as published), %d "
            "Parquet files unreadable; events stored after the last export are lost",
            restored,
            skipped,
        )

    def _changed(self) -> None:
        """After a write of event rows (committed or not: a needless bump costs one read), before
        it is acknowledged; under the writer's lock."""
        self.data_version += 1

    @contextmanager
    def reading(
        self, timeout_s: float | None = READ_TIMEOUT_S
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read transaction on this thread's own cursor, outside the writer's lock.

        DuckDB gives the transaction a consistent snapshot of what was committed when it began;
        saves go on meanwhile. A read still running after timeout_s is interrupted
        (`interrupt()` from a timer) and raises ReadTimeoutError, so a heavy summary or search
        cannot keep a read thread (and its share of DuckDB's threads) for ever.
        """
        cur = self._read_cursor()
        fired = threading.Event()
        finished = threading.Lock()  # held by whoever ends the read first: timer or reader

        def interrupt() -> None:
            if finished.acquire(blocking=False):  # the read is still running
                fired.set()
                cur.interrupt()

        timer = threading.Timer(timeout_s, interrupt) if timeout_s else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            finally:
                try:
                    cur.execute("ROLLBACK")  # read-only: nothing to keep
                except duckdb.Error:
                    pass
        except duckdb.InterruptException as exc:
            raise ReadTimeoutError(
                f"read took longer than {timeout_s or 0:g} s: interrupted"
            ) from exc
        finally:
            finished.acquire(blocking=False)  # from here on the timer interrupts nothing
            if timer is not None:
                timer.cancel()
            if fired.is_set():  # an interrupt may still be pending on it: never reuse it
                self._reads.cursor = None
                with self._lock:
                    if cur in self._cursors:
                        self._cursors.remove(cur)
                try:
                    cur.close()
                except duckdb.Error:
                    pass

    def _read_cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the current connection (new after a reconnect)."""
        local = self._reads
        if getattr(local, "cursor", None) is None or local.generation != self._generation:
            with self._lock:
                local.cursor = self.con.cursor()
                local.generation = self._generation
                self._cursors.append(local.cursor)
        cursor: duckdb.DuckDBPyConnection = local.cursor
        return cursor

    def _connect(self) -> None:
        self._generation += 1  # read cursors of an earlier connection are not used again
        con = duckdb.connect(str(self.db_path))
        con.execute("SET TimeZone='UTC'")
        self._con = con
        migrate(con)
        self._seq = _high_water(con, self.parquet_dir)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The open DuckDB connection (reconnects after a fatal error)."""
        if self._con is None:
            if self._closed:
                raise StorageError("store is closed")
            self._connect()
        assert self._con is not None
        return self._con

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
                self._close_cursors()
                try:
                    self._con.close()
                except duckdb.Error:
                    pass
                self._con = None
        cls = StorageFullError if full else StorageError
        return cls(f"storage {what} failed: {reason}")

    def _close_cursors(self) -> None:
        """Close every read cursor (each holds the database open); reads make new ones."""
        self._generation += 1  # no thread uses its old cursor again
        cursors, self._cursors = self._cursors, []
        for cursor in cursors:
            try:
                cursor.close()
            except duckdb.Error:
                pass

    def close(self) -> None:
        """Checkpoint and close the database."""
        with self._lock:
            self._close_cursors()
            if self._con is not None:
                try:
                    self._con.execute("CHECKPOINT")
                except duckdb.Error as exc:
                    logger.warning("checkpoint on close failed: %s", exc)
                self._con.close()
                self._con = None
            self._closed = True
