"""A corrupt or unreadable events.duckdb at start (#21): moved aside, a fresh store rebuilt from
the Parquet export, nothing exported twice, nothing published twice, new events exported. A file
locked by another process is not corruption: the store refuses to open and moves nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipelines.storage import EventStore
from tests.unit.test_storage import make_event


def parquet_rows(path: Path) -> list[tuple[str, int]]:
    """(event_id, how many times) for every row of the store's Parquet export."""
    glob = str(path / "parquet" / "**" / "*.parquet")
    sql = f"SELECT event_id, count(*) FROM read_parquet('{glob}') GROUP BY event_id"
    return sorted(duckdb.sql(sql).fetchall())


def corrupt(db: Path, how: str) -> None:
    data = db.read_bytes()
    if how == "garbage":
        db.write_bytes(os.urandom(len(data)))
    else:  # truncated, as by a full disk or a copy cut short
        db.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_corrupt_database_is_moved_aside_and_rebuilt_from_parquet(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "data"
    store = EventStore(path)
    exported = [make_event(i) for i in range(6)]
    store.append(exported, {})
    store.mark_published([e.event_id for e in exported[:4]])  # two still waiting for MQTT
    assert store.export_parquet() == 6
    lost = [make_event(i) for i in range(6, 8)]  # stored after the last export
    store.append(lost, {})
    store.close()
    corrupt(path / "events.duckdb", how)

    store = EventStore(path)  # opens: no exception, a fresh database
    try:
        rebuilt = store.rebuilt
        assert rebuilt is not None and rebuilt["restored"] == 6, rebuilt
        aside = path / str(rebuilt["moved_aside"])
        assert aside.exists() and aside.name.startswith("events.duckdb.corrupt-")
        ids = {e.event_id for e in store.query(limit=100)[0]}
        assert ids == {e.event_id for e in exported}  # the export's rows; later ones were lost
        # restored events count as published: the publisher's feed hands none on again
        assert store.counts()["unpublished"] == 0
        assert store.unpublished_events() == []
        note = json.loads(
            store.con.execute(
                "SELECT value FROM meta WHERE key = 'rebuilt_from_parquet'"
            ).fetchall()[0][0]
        )
        assert note["restored"] == 6 and note["moved_aside"] == aside.name
        seqs = [r[0] for r in store.con.execute("SELECT seq FROM events ORDER BY seq").fetchall()]
        assert seqs == list(range(1, 7))  # distinct, in saving order, below the watermark
        # the sequence goes on above the export: new events are exported once, old ones not again
        later = [make_event(i) for i in range(8, 11)]
        store.append(later, {})
        assert store.export_parquet() == 3
        assert store.counts()["unpublished"] == 3  # new events are published as usual
    finally:
        store.close()
    rows = parquet_rows(path)
    assert [n for _id, n in rows] == [1] * 9
    assert {i for i, _n in rows} == {e.event_id for e in exported + later}

    reopened = EventStore(path)  # the rebuilt file is a normal store now
    try:
        assert reopened.rebuilt is None and reopened.counts()["stored"] == 9
    finally:
        reopened.close()


def test_a_rebuild_without_parquet_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "data"
    EventStore(path).close()
    corrupt(path / "events.duckdb", "garbage")
    store = EventStore(path)
    try:
        assert store.rebuilt is not None and store.rebuilt["restored"] == 0
        store.append([make_event(1)], {})
        assert store.counts()["stored"] == 1
    finally:
        store.close()


def test_a_file_locked_by_another_process_is_not_treated_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "data"
    EventStore(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()",
            str(path / "events.duckdb"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(duckdb.IOException, match="lock"):
            EventStore(path)
        assert sorted(p.name for p in path.iterdir() if p.name.startswith("events.duckdb")) == [
            "events.duckdb"
        ]
    finally:
        holder.communicate(timeout=30)  # closes its stdin: it ends


def test_a_rebuild_cut_short_is_redone_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.storage import rebuild

    path = tmp_path / "data"
    store = EventStore(path)
    store.append([make_event(i) for i in range(4)], {})
    assert store.export_parquet() == 4
    store.close()
    corrupt(path / "events.duckdb", "garbage")
    real = rebuild.restore_from_parquet

    def dies(*args: object, **kwargs: object) -> tuple[int, int]:
        raise MemoryError("the process ran out of memory mid-rebuild")

    monkeypatch.setattr(rebuild, "restore_from_parquet", dies)
    with pytest.raises(MemoryError):
        EventStore(path)
    assert (path / rebuild.PENDING).exists()
    monkeypatch.setattr(rebuild, "restore_from_parquet", real)
    store = EventStore(path)  # not a half-empty store taken as healthy: rebuilt again
    try:
        assert store.rebuilt is not None and store.rebuilt["restored"] == 4
        assert store.counts()["stored"] == 4 and not (path / rebuild.PENDING).exists()
    finally:
        store.close()


def test_a_database_from_a_newer_duckdb_is_not_treated_as_corrupt() -> None:
    from pipelines.storage.rebuild import is_corrupt

    newer = duckdb.IOException(
        "IO Error: Trying to read a database file with version number 99, but we can only "
        "read version 64"
    )
    assert not is_corrupt(newer)
    assert not is_corrupt(duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate"))
    assert is_corrupt(duckdb.Error("Corrupt database file: computed checksum 1 does not match"))
