"""Parquet side of the event store: per-day export files, compaction and retention of partitions.

Functions here work on the ``parquet/`` and ``.parquet-staging/`` directories only; EventStore
calls them under its lock (compaction reads a day's files before taking it, `merge_parts`) and
turns their errors into StorageError. The guarantees they keep
for readers of ``parquet/**/*.parquet`` are described in the ``pipelines.storage`` docstring.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.storage.files import _exchange_dirs, _fsync_dir

logger = logging.getLogger(__name__)

PART_RE = re.compile(r"^part-(\d{12})-(\d{12})-[0-9a-z]+\.parquet$")
DATE_DIR_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def part_files(parquet_dir: Path) -> list[tuple[int, int, Path]]:
    """Every exported Parquet file as (lowest seq, highest seq, path), lowest first."""
    found = []
    for path in parquet_dir.glob("date=*/part-*.parquet"):
        match = PART_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found)


def files_watermark(parquet_dir: Path) -> int:
    """Highest store sequence number held by any exported Parquet file (0 for none)."""
    return max((high for _low, high, _path in part_files(parquet_dir)), default=0)


def write_days(parquet_dir: Path, table: pa.Table) -> int:
    """Write rows (with seq and day columns, ordered by day, then seq) as one file per day;
    the highest seq written. Each day is a slice of the table (no copy, no per-row Python)."""
    high = int(pc.max(table.column("seq")).as_py())
    counts = pc.value_counts(table.column("day")).to_pylist()  # one entry per day
    at = 0
    for entry in sorted(counts, key=lambda c: c["values"]):
        day, count = entry["values"], entry["counts"]
        part = table.slice(at, count)
        at += count
        if pc.any(pc.not_equal(part.column("day"), pa.scalar(day, pa.date32()))).as_py():
            raise ValueError("write_days needs the rows ordered by day")
        seqs = part.column("seq")
        lo = int(pc.min(seqs).as_py())
        hi = int(pc.max(seqs).as_py())
        name = f"part-{lo:012d}-{hi:012d}-{uuid.uuid4().hex[:8]}.parquet"
        folder = parquet_dir / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        write_parquet_file(folder, name, part.drop_columns(["seq", "day"]))
    return high


def write_parquet_file(folder: Path, name: str, table: pa.Table) -> Path:
    """Write a Parquet file under a name the glob skips, fsync, then rename it into place."""
    tmp = folder / f".tmp-{uuid.uuid4().hex}.parquet.partial"
    target = folder / name
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def days_to_compact(
    parquet_dir: Path, today: date, max_files: int, include_today: bool
) -> Iterator[tuple[Path, list[Path]]]:
    """(folder, part files) of each day with more than max_files, before today unless included.

    Lazy: each day's files are listed just before it is yielded, after the previous day's swap.
    """
    for folder in sorted(parquet_dir.glob("date=*")):
        match = DATE_DIR_RE.match(folder.name)
        if not match:
            continue
        day = date.fromisoformat(match.group(1))
        if day >= today and not include_today:
            continue
        parts = sorted(p for p in folder.glob("part-*.parquet") if PART_RE.match(p.name))
        if len(parts) <= max_files:
            continue
        yield folder, parts


def _seq_range(path: Path) -> tuple[int, int]:
    match = PART_RE.match(path.name)
    if match is None:
        raise ValueError(f"not a part file: {path.name}")
    return int(match.group(1)), int(match.group(2))


def merge_parts(parts: list[Path]) -> tuple[str, pa.Table]:
    """A day's part files read as one table, and the name of the file it becomes (their seq
    range); the day is then swapped (`swap_day`) with the parts left out."""
    ranges = [_seq_range(p) for p in parts]
    lo = min(r[0] for r in ranges)
    hi = max(r[1] for r in ranges)
    # files written before a column was added lack it: promote (nulls), do not fail
    table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    return f"part-{lo:012d}-{hi:012d}-c{uuid.uuid4().hex[:8]}.parquet", table


def rewrite_groups(
    parquet_dir: Path, staging_dir: Path, rows: list[tuple[str, int, date, str | None]]
) -> int:
    """Give exported rows (event_id, seq, day, group) their current correlation group.

    Each part file holding such a row is rewritten under a new name (same seq range) and its
    day's directory is swapped in one step, as in compaction: a listing shows the old file or
    the new one, never both. Returns how many rows changed.
    """
    by_day: dict[date, dict[str, tuple[int, str | None]]] = {}
    for event_id, seq, day, group in rows:
        by_day.setdefault(day, {})[event_id] = (seq, group)
    fixed = 0
    for day, changes in sorted(by_day.items()):
        folder = parquet_dir / f"date={day.isoformat()}"
        if not folder.is_dir():
            continue  # expired meanwhile
        seqs = [seq for seq, _ in changes.values()]
        replace: dict[str, pa.Table] = {}
        drop: set[Path] = set()
        for path in sorted(p for p in folder.glob("part-*.parquet") if PART_RE.match(p.name)):
            lo, hi = _seq_range(path)
            if not any(lo <= seq <= hi for seq in seqs):
                continue
            table, changed = _with_groups(pq.read_table(path), changes)
            if changed:
                replace[f"part-{lo:012d}-{hi:012d}-r{uuid.uuid4().hex[:8]}.parquet"] = table
                drop.add(path)
                fixed += changed
        if replace:
            swap_day(parquet_dir, staging_dir, folder, replace, drop)
    return fixed


def _with_groups(
    table: pa.Table, changes: dict[str, tuple[int, str | None]]
) -> tuple[pa.Table, int]:
    """The table with correlation_group_id set from `changes` by event_id; rows changed."""
    ids = table.column("event_id").to_pylist()
    groups: list[Any] = table.column("correlation_group_id").to_pylist()
    changed = 0
    for k, event_id in enumerate(ids):
        if event_id in changes and groups[k] != changes[event_id][1]:
            groups[k] = changes[event_id][1]
            changed += 1
    if changed:
        index = table.schema.get_field_index("correlation_group_id")
        field = table.schema.field(index)
        table = table.set_column(index, field, pa.array(groups, field.type))
    return table, changed


def swap_day(
    parquet_dir: Path,
    staging_dir: Path,
    folder: Path,
    new_files: dict[str, pa.Table],
    drop: set[Path],
) -> None:
    """Replace a day's directory in one atomic step by a copy with `new_files` written and the
    files in `drop` left out; every other file (an analyst's copy too) is hard-linked along."""
    others = [
        p
        for p in folder.iterdir()
        if p.is_file() and p not in drop and not p.name.startswith(".tmp-")
    ]
    stage = staging_dir / f"{folder.name}-{uuid.uuid4().hex[:8]}"
    stage.mkdir(parents=True)
    try:
        for name, table in new_files.items():
            write_parquet_file(stage, name, table)
        for other in others:
            os.link(other, stage / other.name)
        _fsync_dir(stage)
        if _exchange_dirs(stage, folder):  # one atomic step: old files out, merged file in
            _fsync_dir(parquet_dir)
        else:  # no exchange: the day is briefly absent from a listing, never doubled
            old = staging_dir / f"old-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
            os.replace(stage, folder)
            _fsync_dir(parquet_dir)
            stage = old
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def expire_partitions(parquet_dir: Path, staging_dir: Path, cutoff: date) -> None:
    """Delete every whole day partition strictly before cutoff (a day then is all expired)."""
    for folder in parquet_dir.glob("date=*"):
        match = DATE_DIR_RE.match(folder.name)
        if match and date.fromisoformat(match.group(1)) < cutoff:
            # one rename takes the whole day out of readers' globs, then delete it
            trash = staging_dir / f"expired-{uuid.uuid4().hex[:8]}"
            try:
                os.replace(folder, trash)
            except OSError as exc:
                logger.warning("cannot expire partition %s: %s", folder.name, exc)
                continue
            shutil.rmtree(trash, ignore_errors=True)
