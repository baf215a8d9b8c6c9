"""EventStore against a real DuckDB file, real Parquet files and a real (tmpfs) full disk."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipelines.events import Event
from pipelines.storage import EventStore, StorageError, StorageFullError, decode_cursor
from pipelines.storage.schema import MIGRATIONS, schema_version
from tests.support.disk import fill_disk, mount_tmpfs
from tests.support.groups import partition

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
JPEG = b"\xff\xd8\xff\xe0" + b"thumb" * 20 + b"\xff\xd9"


def make_event(i: int, camera: str = "front", ts: datetime | None = None, **kw: object) -> Event:
    fields: dict[str, object] = {
        "camera_id": camera,
        "camera_name": camera.title(),
        "description": f"event {i}",
        "objects_detected": ("person",) if i % 3 == 0 else ("car", "dog") if i % 3 == 1 else (),
        "confidence": i % 101,
        "source_type": "rtsp",
        "timestamp": ts or BASE + timedelta(seconds=i),
    }
    fields.update(kw)
    return Event(**fields)  # type: ignore[arg-type]


def group_of(store: EventStore, camera: str, ts: datetime, window_s: float) -> str | None:
    """The correlation group a (not yet stored) event of camera starting at ts gets."""
    (ev,) = store.assign_correlation([make_event(0, camera=camera, ts=ts)], window_s)
    return ev.correlation_group_id


def published_at(store: EventStore, event_id: str) -> datetime | None:
    sql = "SELECT published_at FROM events WHERE event_id = ?"
    rows = store.con.execute(sql, [event_id]).fetchall()
    return rows[0][0] if rows else None


def all_pages(store: EventStore, limit: int, **filters: object) -> list[Event]:
    out: list[Event] = []
    cursor = None
    for _ in range(10_000):
        page, cursor = store.query(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        out.extend(page)
        if cursor is None:
            return out
    raise AssertionError("pagination did not end")


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore(tmp_path / "data")
    yield s
    s.close()


def test_roundtrip_every_field(store: EventStore) -> None:
    ev = make_event(
        1,
        smart_detection_type="vehicle",
        is_doorbell_ring=True,
        provider_used="transformers:tiny",
        analysis_mode="multi_frame",
        ai_confidence=77,
        correlation_group_id="g1",
        ended_at=BASE + timedelta(seconds=9),
        frame_count=12,
        merged_motion=2,
        vlm_latency_ms=12.5,
    )
    plain = make_event(2)
    assert store.append([ev, plain], {ev.event_id: JPEG}) == 2
    assert store.get(ev.event_id) == ev
    assert store.get(plain.event_id) == plain
    assert store.get(str(uuid.uuid4())) is None
    assert store.get("not-a-uuid") is None
    path = store.thumbnail_path(ev.event_id)
    assert path is not None and path.read_bytes() == JPEG
    assert store.thumbnail_path(plain.event_id) is None
    # no temporary files left behind
    assert sorted(p.name for p in store.thumbnail_dir.iterdir()) == [f"{ev.event_id}.jpg"]


def test_query_filters_newest_first(store: EventStore) -> None:
    events = [make_event(i, camera="front" if i % 2 else "back") for i in range(60)]
    store.append(events, {})
    page, cursor = store.query(limit=10)
    assert [e.event_id for e in page] == [e.event_id for e in reversed(events)][:10]
    assert cursor is not None
    back, _ = store.query(camera_id="back", limit=500)
    assert len(back) == 30 and {e.camera_id for e in back} == {"back"}
    window, _ = store.query(since=BASE + timedelta(seconds=10), until=BASE + timedelta(seconds=19))
    assert sorted(int(e.description.split()[1]) for e in window) == list(range(10, 20))
    dogs, _ = store.query(object="dog", limit=500)
    assert len(dogs) == 20 and all("dog" in e.objects_detected for e in dogs)
    assert store.query(object="do", limit=500)[0] == []  # whole list items, not substrings
    assert store.query(camera_id="nope")[0] == []
    assert store.query(limit=10_000)[0].__len__() == 60  # clamped to 500, all fit
    with pytest.raises(ValueError):
        store.query(cursor="garbage!")
    with pytest.raises(ValueError):
        decode_cursor("OTk5OTk5OTk5OTk5OTk5OTk5OXx4")


def test_cursor_pagination_every_event_once(store: EventStore) -> None:
    # 1,234 events, many sharing a timestamp (ties broken by event_id).
    events = [make_event(i, ts=BASE + timedelta(seconds=i // 7)) for i in range(1234)]
    for start in range(0, 1234, 300):
        store.append(events[start : start + 300], {})
    got = all_pages(store, 100)
    assert len(got) == 1234
    assert {e.event_id for e in got} == {e.event_id for e in events}
    keys = [(e.timestamp, e.event_id) for e in got]
    assert keys == sorted(keys, reverse=True)
    persons = all_pages(store, 37, object="person")
    assert len(persons) == len({e.event_id for e in events if "person" in e.objects_detected})


def test_append_is_idempotent(store: EventStore) -> None:
    events = [make_event(i) for i in range(20)]
    assert store.append(events + events[:5], {events[0].event_id: JPEG}) == 20
    assert store.append(events, {events[0].event_id: b"other"}) == 0
    assert store.append([], {}) == 0
    assert store.counts() == {"stored": 20, "published": 0, "unpublished": 20, "filtered": 0}
    assert store.thumbnail_path(events[0].event_id).read_bytes() == JPEG  # type: ignore[union-attr]


def test_published_bookkeeping(store: EventStore) -> None:
    now = datetime.now(UTC)
    old = make_event(0, ts=now - timedelta(hours=2))
    recent = [make_event(i, ts=now - timedelta(seconds=100 - i)) for i in range(1, 6)]
    store.append([recent[2], old, *recent], {})
    assert [e.event_id for e in store.unpublished_events(None)] == [
        e.event_id for e in [old, *recent]
    ]
    assert [e.event_id for e in store.unpublished_events(300)] == [e.event_id for e in recent]
    at = now - timedelta(seconds=5)
    assert store.mark_published([recent[0].event_id, recent[1].event_id, "junk"], at=at) == 2
    assert store.mark_published([recent[0].event_id]) == 0  # already published
    assert published_at(store, recent[0].event_id) == at
    assert published_at(store, recent[4].event_id) is None
    assert [e.event_id for e in store.unpublished_events(300)] == [e.event_id for e in recent[2:]]
    assert [e.event_id for e in store.events_since(300)] == [e.event_id for e in recent]
    assert store.counts() == {"stored": 6, "published": 2, "unpublished": 4, "filtered": 0}
    # a save re-sent after it was published is told so (the store actor then does not republish)
    ids = [recent[0].event_id, recent[2].event_id, make_event(99).event_id]
    assert store.published_among(ids) == {recent[0].event_id}


@pytest.mark.parametrize(
    "bad",
    [
        "..",
        "../events.duckdb",
        "../../etc/passwd",
        "/etc/passwd",
        "%2e%2e%2f",
        "a\x00b",
        "x" * 5000,
        "",
        "ABCDEF01-2345-4678-9ABC-DEF012345678",  # not canonical lowercase
        "abcdef01-2345-4678-9abc-def012345678/../../x",
    ],
)
def test_thumbnail_path_rejects_unsafe_ids(store: EventStore, bad: str) -> None:
    assert store.thumbnail_path(bad) is None
    assert store.get(bad) is None


def test_thumbnail_symlink_out_of_folder_is_refused(store: EventStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"secret")
    event_id = str(uuid.uuid4())
    (store.thumbnail_dir / f"{event_id}.jpg").symlink_to(secret)
    assert store.thumbnail_path(event_id) is None


def test_parquet_readable_while_appending(store: EventStore) -> None:
    glob = str(store.parquet_dir / "**" / "*.parquet")
    store.append([make_event(i) for i in range(50)], {})
    assert store.export_parquet() == 50
    stop = threading.Event()
    reads: list[int] = []
    failures: list[BaseException] = []

    def reader() -> None:
        con = duckdb.connect()
        while not stop.is_set():
            try:
                n = con.execute(
                    f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true)"
                ).fetchall()[0][0]
                reads.append(int(n))
            except BaseException as exc:  # any failure is the bug this test looks for
                failures.append(exc)
                return
        con.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for batch in range(1, 30):
            # spans two days so each flush writes two partitions
            evs = [
                make_event(batch * 100 + i, ts=BASE + timedelta(hours=6 * (i % 2), seconds=batch))
                for i in range(40)
            ]
            store.append(evs, {})
            store.export_parquet()
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    assert reads and reads == sorted(reads)  # counts only grow: nothing partial, no dupes
    assert store.export_parquet() == 0
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT count(*), count(DISTINCT event_id), min(date), max(date) "
        f"FROM read_parquet('{glob}', hive_partitioning=true)"
    ).fetchall()[0]
    assert rows[0] == rows[1] == store.counts()["stored"] == 50 + 29 * 40
    assert str(rows[2]) == "2026-03-01" and str(rows[3]) == "2026-03-01"
    # no temp files left behind
    assert not list(store.parquet_dir.rglob("*.partial"))


def test_export_after_crash_does_not_duplicate(store: EventStore) -> None:
    store.append([make_event(i) for i in range(10)], {})
    assert store.export_parquet() == 10
    # Simulate a crash between publishing the file and recording the watermark.
    store.con.execute("DELETE FROM meta WHERE key = 'export_seq'")
    store.append([make_event(i) for i in range(10, 15)], {})
    assert store.export_parquet() == 5
    glob = str(store.parquet_dir / "**" / "*.parquet")
    n = duckdb.sql(f"SELECT count(DISTINCT event_id), count(*) FROM read_parquet('{glob}')")
    assert n.fetchall()[0] == (15, 15)


@pytest.mark.parametrize("moved_aside", [False, True])
def test_the_sequence_never_restarts_below_what_was_exported(
    tmp_path: Path, moved_aside: bool
) -> None:
    """Every row expired (a holiday longer than retention_days), or a corrupt events.duckdb
    moved aside with parquet/ kept: new rows must still be exported, in a rising sequence."""
    path = tmp_path / "data"
    store = EventStore(path, retention_days=7)
    first = [make_event(i) for i in range(5)]
    store.append(first, {})
    assert store.export_parquet() == 5
    if moved_aside:
        store.close()
        (path / "events.duckdb").rename(path / "events.duckdb.corrupt")
    else:
        assert store.apply_retention(now=BASE + timedelta(days=30)) == 5
        store.close()
    store = EventStore(path, retention_days=7)
    try:
        assert store.counts()["stored"] == 0
        later = [make_event(i) for i in range(5, 8)]
        store.append(later, {})
        assert store.export_parquet() == 3  # (0 before: below the export watermark)
        seqs = [row[0] for row in store.con.execute("SELECT seq FROM events").fetchall()]
        assert min(seqs) > 5
    finally:
        store.close()
    glob = str(path / "parquet" / "**" / "*.parquet")
    ids = {r[0] for r in duckdb.sql(f"SELECT event_id FROM read_parquet('{glob}')").fetchall()}
    assert {e.event_id for e in later} <= ids


def test_compaction_merges_a_days_files(store: EventStore) -> None:
    for batch in range(12):
        store.append([make_event(batch * 10 + i) for i in range(10)], {})
        store.export_parquet()
    day_dir = store.parquet_dir / "date=2026-03-01"
    assert len(list(day_dir.glob("*.parquet"))) == 12
    assert store.compact_parquet(max_files=4) == 1
    assert len(list(day_dir.glob("*.parquet"))) == 1
    assert store.compact_parquet(max_files=4) == 0
    glob = str(store.parquet_dir / "**" / "*.parquet")
    n = duckdb.sql(f"SELECT count(DISTINCT event_id), count(*) FROM read_parquet('{glob}')")
    assert n.fetchall()[0] == (120, 120)
    # the watermark survives compaction: nothing re-exported
    assert store.export_parquet() == 0


def test_compaction_takes_the_lock_a_day_at_a_time_and_stops_between_days(
    store: EventStore,
) -> None:
    for batch in range(6):  # three closed days of six files each
        store.append([make_event(batch * 3 + d, ts=BASE + timedelta(days=d)) for d in range(3)], {})
        store.export_parquet()
    committed: list[bool] = []

    def stop() -> bool:  # asked between days: a commit from another thread gets the lock
        saver = threading.Thread(target=store.append, args=([make_event(100 + len(committed))], {}))
        saver.start()
        saver.join(10)
        committed.append(not saver.is_alive())
        return len(committed) == 2

    assert store.compact_parquet(max_files=4, stop=stop) == 1  # one day, then stopped
    assert committed == [True, True] and store.counts()["stored"] == 18 + 2
    files = [len(list(d.glob("*.parquet"))) for d in sorted(store.parquet_dir.glob("date=*"))]
    assert files == [1, 6, 6]  # the days after the stop are merged by the next pass
    assert store.compact_parquet(max_files=4) == 2


def test_retention_deletes_rows_thumbnails_and_partitions(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "d", retention_days=7)
    now = datetime(2026, 3, 20, 12, tzinfo=UTC)
    old = [make_event(i, ts=now - timedelta(days=10, seconds=i)) for i in range(5)]
    new = [make_event(i, ts=now - timedelta(days=1, seconds=i)) for i in range(5, 9)]
    store.append(old + new, {e.event_id: JPEG for e in old + new})
    store.export_parquet()
    assert (store.parquet_dir / "date=2026-03-10").is_dir()
    assert store.apply_retention(now=now) == 5
    assert store.counts()["stored"] == 4
    assert all(store.get(e.event_id) is None for e in old)
    assert all(store.thumbnail_path(e.event_id) is None for e in old)
    assert not any((store.thumbnail_dir / f"{e.event_id}.jpg").exists() for e in old)
    assert all(store.thumbnail_path(e.event_id) is not None for e in new)
    assert not (store.parquet_dir / "date=2026-03-10").exists()
    assert (store.parquet_dir / "date=2026-03-19").is_dir()
    assert store.apply_retention(now=now) == 0
    store.close()
    keep = EventStore(tmp_path / "k", retention_days=0)
    keep.append(old, {})
    assert keep.apply_retention(now=now) == 0 and keep.counts()["stored"] == 5
    keep.close()


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "data"
    store = EventStore(path)
    events = [make_event(i) for i in range(30)]
    store.append(events, {events[0].event_id: JPEG})
    store.mark_published([events[1].event_id])
    assert store.export_parquet() == 30
    store.close()
    with pytest.raises(StorageError):
        store.counts()
    again = EventStore(path)
    assert schema_version(again.con) == MIGRATIONS[-1][0]
    assert again.counts() == {"stored": 30, "published": 1, "unpublished": 29, "filtered": 0}
    assert again.get(events[5].event_id) == events[5]
    assert again.thumbnail_path(events[0].event_id) is not None
    assert again.append(events, {}) == 0
    assert again.append([make_event(99)], {}) == 1
    assert again.export_parquet() == 1  # only the new row
    assert len(list(again.parquet_dir.glob("date=*/*.parquet"))) == 2
    again.close()


def test_correlation_across_cameras(store: EventStore) -> None:
    a = make_event(0, camera="front", ts=BASE)
    assert group_of(store, "front", a.timestamp, 10) is None
    store.append([a], {})
    # same camera within the window: not a correlation
    assert group_of(store, "front", BASE + timedelta(seconds=2), 10) is None
    group = group_of(store, "back", BASE + timedelta(seconds=4), 10)
    assert group is not None
    assert store.get(a.event_id).correlation_group_id == group  # type: ignore[union-attr]
    # a third camera joins the same group
    assert group_of(store, "side", BASE + timedelta(seconds=6), 10) == group
    # outside the window: nothing
    assert group_of(store, "garage", BASE + timedelta(seconds=60), 10) is None
    assert group_of(store, "porch", BASE + timedelta(seconds=4), 0) is None
    # the earlier event is stored only after the later one asked: it gets the group at append
    t2 = BASE + timedelta(hours=1)
    assert group_of(store, "front", t2, 5) is None
    g2 = group_of(store, "back", t2 + timedelta(seconds=1), 5)
    assert g2 is not None and g2 != group
    late = make_event(1, camera="front", ts=t2)
    store.append([late], {})
    assert store.get(late.event_id).correlation_group_id == g2  # type: ignore[union-attr]


def test_correlation_after_restart_uses_the_table(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "d")
    a = make_event(0, camera="front", ts=BASE)
    store.append([a], {})
    store.close()
    store = EventStore(tmp_path / "d")
    group = group_of(store, "back", BASE + timedelta(seconds=3), 10)
    assert group is not None
    assert store.get(a.event_id).correlation_group_id == group  # type: ignore[union-attr]
    store.close()


def test_assign_correlation_groups_cameras_inside_one_batch(store: EventStore) -> None:
    stored = make_event(0, camera="side", ts=BASE - timedelta(seconds=3))
    store.append([stored], {})
    batch = [
        make_event(1, camera="front", ts=BASE),
        make_event(2, camera="front", ts=BASE + timedelta(seconds=1)),  # same camera as 1
        make_event(3, camera="back", ts=BASE + timedelta(seconds=2)),
        make_event(4, camera="garage", ts=BASE + timedelta(seconds=60)),  # alone
        make_event(5, camera="porch", ts=BASE + timedelta(seconds=61), correlation_group_id="x"),
    ]
    out = store.assign_correlation(batch, 5)
    assert [e.event_id for e in out] == [e.event_id for e in batch]
    group = out[2].correlation_group_id
    assert group is not None
    # 1 was correlated before 3 arrived in the same batch: it gets the group all the same
    assert out[0].correlation_group_id == out[1].correlation_group_id == group
    assert out[3].correlation_group_id is None
    assert out[4].correlation_group_id == "x"  # a given group is kept
    # the row stored before the batch was pulled into the group, in the table
    assert store.get(stored.event_id).correlation_group_id == group  # type: ignore[union-attr]
    assert store.assign_correlation(batch, 0) == batch  # window 0 disables


def test_assign_correlation_matches_one_call_per_event(tmp_path: Path) -> None:
    cams = ["front", "back", "side"]
    history = [
        make_event(i, camera=cams[i % 3], ts=BASE + timedelta(seconds=7 * i)) for i in range(6)
    ]
    stamps = [0, 1, 2, 9, 15, 16, 30, 31, 33, 47, 48, 70, 71, 72, 90, 100, 101, 140]
    batch = [
        make_event(100 + k, camera=cams[(k * 2) % 3], ts=BASE + timedelta(seconds=s))
        for k, s in enumerate(stamps)
    ]
    one_by_one = EventStore(tmp_path / "a")
    batched = EventStore(tmp_path / "b")
    try:
        for s in (one_by_one, batched):
            s.append(history, {})
        for ev in batch:  # what the actor did before group commit: correlate, append, next
            one_by_one.save_batch([ev], {}, 4)
        got = batched.save_batch(batch, {batch[0].event_id: JPEG}, 4)
        assert any(e.correlation_group_id for e in got)
        assert [e.event_id for e in got] == [e.event_id for e in batch]
        ids = [e.event_id for e in history + batch]
        want = [one_by_one.get(i).correlation_group_id for i in ids]  # type: ignore[union-attr]
        have = [batched.get(i).correlation_group_id for i in ids]  # type: ignore[union-attr]
        assert partition(have) == partition(want)
        assert [e.correlation_group_id for e in got] == have[len(history) :]
        assert batched.thumbnail_path(batch[0].event_id) is not None
        batched.save_batch(batch, {}, 4)  # a re-sent batch (retries): nothing stored twice
        assert batched.counts()["stored"] == len(history) + len(batch)
        again = [batched.get(i).correlation_group_id for i in ids]  # type: ignore[union-attr]
        assert again == have
    finally:
        one_by_one.close()
        batched.close()


def test_concurrent_appends_arrive_exactly_once(store: EventStore) -> None:
    events = [make_event(i, camera=f"cam{i % 8}") for i in range(10_000)]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            mine = events[k::8]
            for start in range(0, len(mine), 50):
                store.append(mine[start : start + 50], {})
            store.append(mine[:100], {})  # a re-send: must not duplicate
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.counts()["stored"] == 10_000
    got = all_pages(store, 500)
    assert len(got) == 10_000 and len({e.event_id for e in got}) == 10_000


def test_disk_full_is_reported_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mnt = tmp_path / "small"
    if not mount_tmpfs(mnt, "8m"):
        pytest.skip("cannot mount a size-limited tmpfs here (needs root on Linux)")
    try:
        store = EventStore(mnt / "data")
        first = [make_event(i) for i in range(20)]
        store.append(first, {e.event_id: JPEG for e in first})
        filler = fill_disk(mnt, keep_free=0)
        big = b"\xff\xd8" + os.urandom(256 * 1024)
        caplog.set_level(logging.ERROR, logger="pipelines.storage")
        failed = 0
        for k in range(5):  # thumbnails fail first; rows with no thumbnail fail in the WAL
            batch = [make_event(1000 + k * 500 + i) for i in range(500)]
            thumbs = {batch[0].event_id: big} if k % 2 == 0 else {}
            with pytest.raises(StorageFullError):
                store.append(batch, thumbs)
            failed += 1
            assert store.get(batch[0].event_id) is None
            assert not (store.thumbnail_dir / f"{batch[0].event_id}.jpg").exists()
        assert failed == 5
        assert any("disk full" in r.getMessage() for r in caplog.records)
        assert not list(store.thumbnail_dir.glob(".tmp-*"))
        # space returns: the next append works and nothing earlier was lost or corrupted
        filler.unlink()
        more = [make_event(5000 + i) for i in range(50)]
        assert store.append(more, {more[0].event_id: JPEG}) == 50
        assert store.counts()["stored"] == 70
        assert store.export_parquet() == 70
        store.close()
        again = EventStore(mnt / "data")
        assert again.counts()["stored"] == 70
        assert again.get(first[3].event_id) == first[3]
        again.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_an_export_writes_each_days_rows_in_saving_order_to_that_days_file(
    tmp_path: Path,
) -> None:
    store = EventStore(tmp_path / "data")
    try:
        days = [BASE + timedelta(days=d) for d in (2, 0, 1, 0, 2, 1, 0)]  # saved out of day order
        events = [make_event(i, ts=day + timedelta(minutes=i)) for i, day in enumerate(days)]
        for event in events:  # one by one: seqs follow this order
            store.append([event])
        assert store.export_parquet() == len(events)
        for offset in (0, 1, 2):
            day = (BASE + timedelta(days=offset)).date()
            (path,) = (store.parquet_dir / f"date={day.isoformat()}").glob("part-*.parquet")
            ids = pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist()
            expected = [e.event_id for e in events if e.timestamp.date() == day]
            assert ids == expected  # that day's rows only, in saving order
    finally:
        store.close()
