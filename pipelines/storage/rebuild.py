"""A corrupt or unreadable `events.duckdb` at start: moved aside, and a fresh database rebuilt
from the Parquet export, so that the run starts instead of stopping on a file it cannot read.

What counts as corrupt (`is_corrupt`): a DuckDB error while opening that says the file is
damaged (not a DuckDB file, a short read, a checksum mismatch, "corrupt"). Every other error —
another process holding the file's lock, a full disk, permissions, a file written by a newer
DuckDB, a failed migration — is raised as before: a healthy file is never moved aside.

The file (and its `.wal`) is renamed to `events.duckdb.corrupt-<UTC time>` beside it, never
deleted: an operator can still try DuckDB's own recovery on it. The rebuild reads every
exported Parquet file (`parquet/date=*/part-<lo>-<hi>-*.parquet`); the rows get sequence
numbers 1, 2, ... in the order they were saved (`stored_at`): each exported row had its own
number at or below the export watermark, so these stay below it and nothing is exported twice
(a live stream resuming from an id given out before the rebuild starts again from its event, if
kept). A file that cannot be read is skipped and counted. A marker (`PENDING`) is written
before the file is moved and removed when the rebuild commits: a start cut short in between
redoes the rebuild instead of carrying on with a half-empty store.

What it cannot bring back, and how it chooses:
- Events stored after the last export (at most `storage.parquet_flush_interval_s` of them) were
  only in the lost file.
- Parquet holds no published flag. A restored event is recorded as published at the rebuild's
  time: events are published within seconds of being stored and exported later, so almost all
  of them were delivered, and publishing them again would repeat hours-old notifications (a
  doorbell at 3 a.m.). The count restored, the file moved aside and the time are logged at
  ERROR and kept in the `meta` table (`rebuilt_from_parquet`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.storage.errors import _is_full
from pipelines.storage.parquet import part_files
from pipelines.storage.schema import _TS

logger = logging.getLogger(__name__)

# What DuckDB says about a damaged file. Anything else on open (a lock held by another process,
# a full disk, permissions, a file from a newer DuckDB, memory) is raised as it is: a healthy
# file is never moved aside.
_CORRUPTION = (
    "not a valid duckdb database file",
    "could not read enough bytes",
    "corrupt",
    "checksum",
)
PENDING = "events.duckdb.rebuild-pending"  # present from moving aside until the rebuild commits


def is_corrupt(exc: BaseException) -> bool:
    """True for a DuckDB error on open that says the file is damaged (see the module doc)."""
    if not isinstance(exc, duckdb.Error) or _is_full(exc):
        return False
    text = str(exc).lower()
    return any(marker in text for marker in _CORRUPTION)


def mark_pending(db_path: Path) -> Path:
    """Write the marker that a rebuild is under way (a start that finds it redoes it)."""
    marker = db_path.with_name(PENDING)
    marker.write_text("a rebuild from Parquet did not finish; the next start redoes it\n")
    return marker


def discard_partial(db_path: Path) -> None:
    """Remove a rebuilt database that did not commit (the marker is still there): it holds
    only restored rows, no event saved since (saves start after the store is open)."""
    for leftover in (db_path, db_path.with_name(db_path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def quarantine(db_path: Path, now: datetime) -> Path:
    """Rename the database (and its WAL) aside; the new name of the database file."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    moved = db_path.with_name(f"{db_path.name}.corrupt-{stamp}")
    n = 1
    while moved.exists():
        moved = db_path.with_name(f"{db_path.name}.corrupt-{stamp}-{n}")
        n += 1
    db_path.rename(moved)
    wal = db_path.with_name(db_path.name + ".wal")
    if wal.exists():
        wal.rename(moved.with_name(moved.name + ".wal"))
    return moved


def restore_from_parquet(
    con: duckdb.DuckDBPyConnection, parquet_dir: Path, now: datetime
) -> tuple[int, int]:
    """Insert every exported row into the (fresh) events table; (rows restored, files skipped).

    Each file's rows get seq numbers from the low end of its range (`part-<lo>-<hi>`: a file
    never holds more rows than its range has numbers), as published at `now`."""
    restored = skipped = 0
    for _low, _high, path in part_files(parquet_dir):
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            logger.error("rebuild: skipping unreadable Parquet file %s: %s", path.name, exc)
            skipped += 1
            continue
        rows = table.num_rows
        table = table.append_column("seq", pa.array([0] * rows, pa.int64()))  # numbered below
        stamped = pa.array([now] * rows, _TS)
        if "published_at" in table.column_names:  # a file that kept the flag: trust it
            index = table.column_names.index("published_at")
            kept = pc.fill_null(table.column(index).cast(_TS), stamped)
            table = table.set_column(index, "published_at", kept)
        else:
            table = table.append_column("published_at", stamped)
        con.register("restored_rows", table)
        try:
            before = _count(con)
            # an event_id already restored (a file left twice by an interrupted compaction) is
            # kept once
            con.execute("INSERT OR IGNORE INTO events BY NAME SELECT * FROM restored_rows")
            restored += _count(con) - before
        finally:
            con.unregister("restored_rows")
    # one distinct seq per row, in saving order (stored_at), from 1: every exported row had
    # its own seq at or below the export watermark, so these stay below it (nothing is
    # exported again) and the feed's order is the order the events were saved in
    con.execute(
        "UPDATE events SET seq = n FROM (SELECT event_id AS id, row_number() OVER "
        '(ORDER BY stored_at, "timestamp", event_id) AS n FROM events) WHERE event_id = id'
    ).fetchall()
    return restored, skipped


def _count(con: duckdb.DuckDBPyConnection) -> int:
    rows = con.execute("SELECT count(*) FROM events").fetchall()
    return int(rows[0][0]) if rows else 0


def record(
    con: duckdb.DuckDBPyConnection, moved: str, restored: int, skipped: int, now: datetime
) -> dict[str, object]:
    """Keep what the rebuild did in `meta` (key `rebuilt_from_parquet`); the record."""
    note: dict[str, object] = {
        "at": now.isoformat(),
        "moved_aside": moved,
        "restored": restored,
        "parquet_files_skipped": skipped,
    }
    con.execute(
        "INSERT INTO meta VALUES ('rebuilt_from_parquet', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [json.dumps(note)],
    ).fetchall()
    return note
