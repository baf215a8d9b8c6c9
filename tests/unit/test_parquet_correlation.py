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
from pipelines.storage.starts import REMEMBERED_PER_CAMERA, RememberedStarts
from tests.support.groups import partition

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

    starts = RememberedStarts()
    for offset in (30, 10, 20, 10):  # out of order, one start twice
        starts.add("a", at(seconds=offset), None)
    starts.add("b", at(seconds=12), "gb")
    assert starts.near("a", at(seconds=15), 5_000_000) == [(3_000_000, "b", at(seconds=12), "gb")]
    near = starts.near("b", at(seconds=15), 5_000_000)  # a camera's own starts are not near
    assert [(cam, start) for _d, cam, start, _g in near] == [("a", at(seconds=10))] * 2 + [
        ("a", at(seconds=20))
    ]
    assert from_micros(near[0][2]) == base + timedelta(seconds=10)
    assert starts.give("a", at(seconds=10), "g1")  # both equal starts get it
    assert not starts.give("a", at(seconds=11), "g2")  # no such start
    assert not starts.give("b", at(seconds=10), "g2")  # not b's
    assert [group for _start, group in starts.of("a")] == ["g1", "g1", None, None]
    assert starts.group_of("a", at(seconds=10)) == "g1"
    assert starts.group_of("b", at(seconds=10)) is None
    assert starts.group_of("a", at(seconds=20)) is None
    assert starts.group_of("b", at(seconds=12)) == "gb"
    for k in range(REMEMBERED_PER_CAMERA + 10):
        starts.add("a", at(minutes=1, milliseconds=k), None)
    for k in range(10):  # beyond the window kept: they must not count against the cap
        starts.add("a", at(hours=2, seconds=k), None)
    starts.keep(at(), at(hours=1))
    kept = [start for start, _group in starts.of("a")]
    assert len(kept) == REMEMBERED_PER_CAMERA and kept == sorted(kept)
    assert kept[-1] == at(minutes=1, milliseconds=REMEMBERED_PER_CAMERA + 9)
    assert starts.of("b") == [(at(seconds=12), "gb")]  # another camera's cap is its own
    assert starts.keys == sorted(starts.keys)
    starts.keep(at(seconds=11), at(hours=1))  # the window first: a's starts at 10 s go
    assert [start for start, _group in starts.of("a")] == kept  # (the cap already left them)
    starts.keep(at(minutes=1, milliseconds=20), at(hours=1))
    assert len(starts.of("a")) == REMEMBERED_PER_CAMERA + 10 - 20 and starts.of("b") == []
    starts.keep(at(hours=2), at(hours=3))
    assert not starts and starts.of("a") == []


def test_a_camera_s_neighbours_are_found_among_hundreds_of_cameras() -> None:
    # One index for every camera: the starts near an event are those of its window only,
    # whichever cameras they belong to, and each camera's own starts are left out.
    starts = RememberedStarts()
    for cam in range(300):
        for k in range(4):
            starts.add(f"c{cam}", cam * 1_000_000 + k * 300_000_000, None)
    near = starts.near("c5", 5_000_000, 1_500_000)
    assert sorted((cam, start) for _d, cam, start, _g in near) == [
        ("c4", 4_000_000),
        ("c6", 6_000_000),
    ]
    assert starts.near("c5", 10_000_000_000, 1_000_000) == []


def test_groups_among_hundreds_of_cameras_are_those_of_correlating_each_event_in_turn(
    tmp_path: Path,
) -> None:
    # 300 cameras; bursts of motion a minute apart, each about ten events of random cameras
    # within 15 s (a start may have no neighbour when it is correlated and gain some later);
    # saved in batches of random sizes with their starts out of order: every event gets the
    # group that correlating the events one at a time, in the order they were saved, gives it.
    rng = random.Random(7)
    window = round(WINDOW_S * 1_000_000)
    events = [
        event(
            f"cam{rng.randrange(300)}", T0 + timedelta(seconds=60 * (i // 10) + rng.uniform(0, 15))
        )
        for i in range(1500)
    ]
    store = EventStore(tmp_path)
    done = 0
    while done < len(events):
        size = rng.randint(1, 120)
        store.save_batch(events[done : done + size], None, WINDOW_S)
        done += size
    stored = duckdb_groups(store)
    store.close()

    starts = [micros(ev.timestamp) for ev in events]
    expected: list[str | None] = [None] * len(events)
    for i, ev in enumerate(events):  # the reference: every earlier start, scanned
        near = [
            j
            for j in range(i)
            if events[j].camera_id != ev.camera_id and abs(starts[j] - starts[i]) <= window
        ]
        if not near:
            continue
        grouped = [j for j in near if expected[j] is not None]
        group = (
            expected[min(grouped, key=lambda j: abs(starts[j] - starts[i]))] if grouped else f"g{i}"
        )
        for j in near:
            expected[j] = expected[j] or group
        expected[i] = group
    got = [stored[ev.event_id] for ev in events]
    assert sum(g is not None for g in got) > len(events) // 2, "too few grouped to test anything"
    assert len(set(got)) > 150, "too few groups to test anything"
    assert partition(got) == partition(expected)
