"""A corrupt or unreadable `events.duckdb` at start: moved aside, and a fresh database rebuilt
from the Parquet export, so that the run starts instead of stopping on a file it cannot read.

What counts as corrupt (`is_corrupt`): any DuckDB error while opening, migrating or reading the
sequence high-water mark, except the ones a new file would not cure — another process holding
the file's lock (a second store on the same path), a full disk, a permission error. Those are
raised as before.

The file (and its `.wal`) is renamed to `events.duckdb.corrupt-<UTC time>` beside it, never
deleted: an operator can still try DuckDB's own recovery on it. The rebuild reads every
exported Parquet file (`parquet/date=*/part-<lo>-<hi>-*.parquet`) in sequence order; a row
gets back a sequence number inside its file's range, so the export watermark is where it was
and nothing is exported twice. A file that cannot be read is skipped and counted.

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
from pipelines.storage.parquet import PART_RE

logger = logging.getLogger(__name__)

_TS = pa.timestamp("us", tz="UTC")
_NOT_CORRUPTION = ("could not set lock", "conflicting lock", "permission denied")


def is_corrupt(exc: BaseException) -> bool:
    """True for a DuckDB error on open that a fresh file would cure (see the module doc)."""
    if not isinstance(exc, duckdb.Error) or _is_full(exc):
        return False
    text = str(exc).lower()
    return not any(marker in text for marker in _NOT_CORRUPTION)


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


def _parts(parquet_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in parquet_dir.glob("date=*/part-*.parquet"):
        match = PART_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def restore_from_parquet(
    con: duckdb.DuckDBPyConnection, parquet_dir: Path, now: datetime
) -> tuple[int, int]:
    """Insert every exported row into the (fresh) events table; (rows restored, files skipped).

    Each file's rows get seq numbers from the low end of its range (`part-<lo>-<hi>`: a file
    never holds more rows than its range has numbers), as published at `now`."""
    restored = skipped = 0
    for low, path in _parts(parquet_dir):
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            logger.error("rebuild: skipping unreadable Parquet file %s: %s", path.name, exc)
            skipped += 1
            continue
        rows = table.num_rows
        table = table.append_column("seq", pa.array(range(low, low + rows), pa.int64()))
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
    return restored, skipped


def _count(con: duckdb.DuckDBPyConnection) -> int:
    rows = con.execute("SELECT count(*) FROM events").fetchall()
    return int(rows[0][0]) if rows else 0


def record(
    con: duckdb.DuckDBPyConnection, moved: Path, restored: int, skipped: int, now: datetime
) -> dict[str, object]:
    """Keep what the rebuild did in `meta` (key `rebuilt_from_parquet`); the record."""
    note: dict[str, object] = {
        "at": now.isoformat(),
        "moved_aside": moved.name,
        "restored": restored,
        "parquet_files_skipped": skipped,
    }
    con.execute(
        "INSERT INTO meta VALUES ('rebuilt_from_parquet', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [json.dumps(note)],
    ).fetchall()
    return note
