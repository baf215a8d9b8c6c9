"""Parquet and DuckDB agree on every row's correlation_group_id, also when groups form late.

A group can form after a row was exported: an event of another camera that started within the
window is stored later (a slower VLM, a save retried after a store restart). The export then
rewrites the files holding such rows; an analyst reading Parquet sees what DuckDB says.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from pipelines.events import Event
from pipelines.storage import EventStore
from pipelines.storage.cursors import from_micros, micros
from pipelines.storage.starts import REMEMBERED_PER_CAMERA, CameraStarts

WINDOW_S = 10.0
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def event(camera: str, at: datetime) -> Event:
    return Event(
        camera_id=camera,
        camera_name=camera.title(),
        description=f"motion on {camera}",
        objects_detected=(),
        confidence=50,
        source_type="rtsp",
        timestamp=at,
    )


def duckdb_groups(store: EventStore) -> dict[str, str | None]:
    with store._lock:
        rows = store.con.execute("SELECT event_id, correlation_group_id FROM events").fetchall()
    return dict(rows)


def parquet_groups(store: EventStore) -> list[tuple[str, str | None]]:
    glob = str(store.parquet_dir / "**" / "*.parquet")
    with duckdb.connect() as con:
        return con.execute(
            "SELECT event_id, correlation_group_id FROM read_parquet(?, hive_partitioning=true)",
            [glob],
        ).fetchall()


def assert_agree(store: EventStore) -> None:
    in_parquet = parquet_groups(store)
    ids = [event_id for event_id, _ in in_parquet]
    assert len(ids) == len(set(ids)), "a row appears twice in Parquet"
    assert dict(in_parquet) == duckdb_groups(store)


def test_group_formed_after_export_reaches_parquet(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "data")
    first = store.save_batch([event("front", T0)], None, WINDOW_S)[0]
    assert first.correlation_group_id is None
    assert store.export_parquet() == 1
    assert parquet_groups(store) == [(first.event_id, None)]
    # the other camera's event is stored only now; the first row joins its group in DuckDB
    second = store.save_batch([event("back", T0 + timedelta(seconds=3))], None, WINDOW_S)[0]
    group = second.correlation_group_id
    assert group is not None and duckdb_groups(store)[first.event_id] == group
    assert store.export_parquet() == 1
    assert dict(parquet_groups(store)) == {first.event_id: group, second.event_id: group}
    assert_agree(store)
    store.close()


def test_stale_rows_survive_a_crash_before_the_export(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "data")
    first = store.save_batch([event("front", T0)], None, WINDOW_S)[0]
    store.export_parquet()
    store.save_batch([event("back", T0 + timedelta(seconds=1))], None, WINDOW_S)
    store.close()  # no export: the process ends here
    reopened = EventStore(tmp_path / "data")
    reopened.export_parquet()
    assert dict(parquet_groups(reopened))[first.event_id] is not None
    assert_agree(reopened)
    reopened.close()


def test_a_run_where_groups_form_late_across_days_and_compaction(tmp_path: Path) -> None:
    """Events of four cameras over two UTC days, stored out of order in small batches with an
    export after each (the maintenance loop), a compaction in between: every row agrees."""
    rng = random.Random(10)
    cameras = ["front", "back", "drive", "garden"]
    midnight = T0.replace(hour=0, minute=0, second=0) - timedelta(hours=1)
    starts = [midnight + timedelta(seconds=rng.uniform(-1800, 1800)) for _ in range(240)]
    events = [event(rng.choice(cameras), at) for at in starts]
    rng.shuffle(events)  # stored late and out of order, as slow analyses are
    store = EventStore(tmp_path / "data")
    done = 0
    while done < len(events):
        size = rng.randint(1, 6)
        store.save_batch(events[done : done + size], None, WINDOW_S)
        done += size
        store.export_parquet()
        if done > len(events) // 2 and done - size <= len(events) // 2:
            store.compact_parquet(max_files=2, include_today=True)
    rewritten = list(store.parquet_dir.glob("date=*/part-*-r*.parquet"))
    assert rewritten, "no group formed late: the run did not test what it should"
    groups = duckdb_groups(store)
    assert sum(g is not None for g in groups.values()) > len(events) // 4
    assert_agree(store)
    with store._lock:  # nothing left to rewrite
        assert store.con.execute("SELECT count(*) FROM parquet_stale").fetchone() == (0,)
    store.close()


def test_remembered_starts_stay_in_start_order_and_only_the_latest_are_kept() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)

    def at(**offset: float) -> int:  # a start: microseconds since the epoch
        return micros(base + timedelta(**offset))

    starts = CameraStarts()
    for offset in (30, 10, 20, 10):  # out of order, one start twice
        starts.add(at(seconds=offset), None)
    near = starts.near(at(seconds=15), 5_000_000)
    assert near == [(at(seconds=10), None)] * 2 + [(at(seconds=20), None)]
    assert from_micros(near[0][0]) == base + timedelta(seconds=10)
    assert starts.give(at(seconds=10), "g1")  # both equal starts get it
    assert not starts.give(at(seconds=11), "g2")  # no such start
    assert starts.groups == ["g1", "g1", None, None]
    assert starts.group_of(at(seconds=10)) == "g1"
    assert starts.group_of(at(seconds=20)) is None
    for k in range(REMEMBERED_PER_CAMERA + 10):
        starts.add(at(minutes=1, milliseconds=k), None)
    starts.keep(at(), at(hours=1))
    assert len(starts.keys) == REMEMBERED_PER_CAMERA and starts.keys == sorted(starts.keys)
    assert starts.keys[-1] == at(minutes=1, milliseconds=REMEMBERED_PER_CAMERA + 9)
    starts.keep(at(hours=2), at(hours=3))
    assert not starts
