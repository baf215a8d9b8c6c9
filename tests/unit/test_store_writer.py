"""The group-commit writer (pipelines.storage.writer) over a real DuckDB store in a temp dir."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from datetime import datetime
from pathlib import Path

import pytest

from pipelines.events import Event
from pipelines.storage import EventStore, StorageError, StoreBusyError
from pipelines.storage import writer as writer_module
from pipelines.storage.writer import GroupCommitWriter, answers_of, replies
from tests.support.disk import fill_disk, mount_tmpfs
from tests.support.mqtt import make_event
from tests.unit.test_storage import make_event as stored_event


class Recorder:
    """What the writer hands on (to the publisher) and reports as committed."""

    def __init__(self) -> None:
        self.handed: list[list[str]] = []
        self.committed: list[int] = []

    def on_saved(self, events: list[Event]) -> None:
        self.handed.append([e.event_id for e in events])

    def on_committed(self, rows: int, _elapsed_ms: float, _queued: int) -> None:
        self.committed.append(rows)


class HeldStore:
    """The real store, whose commits wait until `release` is set (a slow disk)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.release = threading.Event()
        self.entered = threading.Event()

    def stored_events(self, event_ids: list[str]) -> dict[str, Event]:
        return self.store.stored_events(event_ids)

    def known_ids(
        self, ids: list[str], span: tuple[datetime, datetime] | None = None
    ) -> dict[str, bool]:
        return self.store.known_ids(ids, span)

    def save_batch(
        self,
        events: list[Event],
        thumbnails: dict[str, bytes] | None,
        window_s: float,
        stored: set[str] | None = None,
    ) -> list[Event]:
        self.entered.set()
        assert self.release.wait(10)
        return self.store.save_batch(events, thumbnails, window_s, stored)


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore(tmp_path / "data")
    yield s
    s.close()


def writer_for(store: object, recorder: Recorder, **kw: int) -> GroupCommitWriter:
    return GroupCommitWriter(
        store,  # type: ignore[arg-type]
        max_queued=kw.get("max_queued", 100),
        window_s=5.0,
        on_saved=recorder.on_saved,
        on_committed=recorder.on_committed,
        max_batch=kw.get("max_batch", 512),
    )


def test_concurrent_saves_are_committed_in_one_batch(store: EventStore) -> None:
    recorder = Recorder()
    writer = writer_for(store, recorder)
    events = [make_event() for _ in range(20)]

    async def scenario() -> list[Event]:
        return await asyncio.gather(*(writer.save(e, b"\xff\xd8jpeg") for e in events))

    saved = asyncio.run(scenario())
    assert [e.event_id for e in saved] == [e.event_id for e in events]
    assert writer.stats()["batches"] == 1 and writer.stats()["max_batch"] == 20
    assert recorder.handed == [[e.event_id for e in events]] and recorder.committed == [20]
    assert store.counts()["stored"] == 20
    assert store.thumbnail_path(events[0].event_id) is not None


def test_groups_are_never_split_and_keep_their_order(store: EventStore) -> None:
    recorder = Recorder()
    writer = writer_for(store, recorder, max_batch=16)
    cameras = {
        cam: [make_event(camera_id=cam, description=f"{cam} {i}") for i in range(30)]
        for cam in ("front", "back", "side")
    }
    again = cameras["front"][:5]  # re-sent after a timeout: answered as stored, written once

    async def scenario() -> list[list[tuple[Event, bool] | None]]:
        groups = [writer.save_many([(e, None) for e in evs]) for evs in cameras.values()]
        return await asyncio.gather(*groups, writer.save_many([(e, None) for e in again]))

    *answers, resent = asyncio.run(scenario())
    for evs, got in zip(cameras.values(), answers, strict=True):
        assert [a[0].event_id if a else None for a in got] == [e.event_id for e in evs]
        assert not any(a[1] for a in got if a)
    assert all(a is not None and a[1] for a in resent)
    # each batch holds whole groups (30 > max_batch 16: one group, or more, per batch)
    assert all(rows % 30 == 0 for rows in recorder.committed)
    handed = [event_id for batch in recorder.handed for event_id in batch]
    for evs in cameras.values():  # stored (and handed on) in each camera's order
        mine = [event_id for event_id in handed if event_id in {e.event_id for e in evs}]
        assert mine == [e.event_id for e in evs]
    assert store.counts()["stored"] == 90


def test_a_group_larger_than_the_room_is_stored_in_part_the_rest_refused(
    store: EventStore,
) -> None:
    held = HeldStore(store)
    recorder = Recorder()
    writer = writer_for(held, recorder, max_queued=5)
    group = [make_event() for _ in range(8)]

    async def scenario() -> tuple[object, list[tuple[Event, bool] | None], object]:
        first = asyncio.ensure_future(writer.save(make_event(), None))
        await asyncio.to_thread(held.entered.wait, 10)  # the writer holds one batch
        partial = asyncio.ensure_future(writer.save_many([(e, None) for e in group]))
        await asyncio.sleep(0)
        one = writer.save_many([(make_event(), None)])
        full = await asyncio.gather(one, return_exceptions=True)
        held.release.set()
        return await first, await partial, full[0]

    _first, answers, full = asyncio.run(scenario())
    assert [a[0].event_id if a else None for a in answers] == [e.event_id for e in group[:5]] + [
        None
    ] * 3  # the prefix that fit is stored; the suffix is for the caller to retry
    assert isinstance(full, StoreBusyError)  # no room at all: refused as a whole
    assert writer.stats()["refused"] == 4 and store.counts()["stored"] == 6  # 3 + the lone one


def test_a_failed_commit_fails_the_whole_group(store: EventStore) -> None:
    recorder = Recorder()
    writer = writer_for(store, recorder)
    store.close()  # every write fails from now on
    with pytest.raises(StorageError):
        asyncio.run(writer.save_many([(make_event(), None) for _ in range(4)]))
    assert recorder.handed == [] and writer.stats()["queued"] == 0


def test_save_new_of_a_stored_event_writes_and_hands_on_nothing(store: EventStore) -> None:
    recorder = Recorder()
    writer = writer_for(store, recorder)
    first = make_event(description="first")
    again = first.model_copy(update={"description": "a replay of it"})

    async def scenario() -> tuple[tuple[Event, bool], tuple[Event, bool]]:
        return await writer.save_new(first, None), await writer.save_new(again, None)

    (saved, existed_before), (stored, existed) = asyncio.run(scenario())
    assert not existed_before and saved.event_id == first.event_id
    assert existed and stored.description == "first"  # what is stored, not the replay
    assert recorder.handed == [[first.event_id]]
    assert recorder.committed == [1]  # the second batch wrote nothing: no commit reported
    assert store.counts()["stored"] == 1


def test_two_concurrent_save_new_of_one_id_store_it_once(store: EventStore) -> None:
    recorder = Recorder()
    writer = writer_for(store, recorder)
    event = make_event()
    twin = event.model_copy(update={"description": "the same event, sent twice"})

    async def scenario() -> list[tuple[Event, bool]]:
        return await asyncio.gather(writer.save_new(event, None), writer.save_new(twin, None))

    answers = asyncio.run(scenario())
    assert sorted(existed for _e, existed in answers) == [False, True]
    assert {e.description for e, _x in answers} == {event.description}  # both see the first
    assert writer.stats()["batches"] == 1
    assert recorder.handed == [[event.event_id]] and recorder.committed == [1]
    assert store.counts()["stored"] == 1


def test_a_resent_save_of_a_published_event_is_not_handed_on(store: EventStore) -> None:
    recorder = Recorder()
    writer = writer_for(store, recorder)
    event = make_event()

    async def scenario() -> Event:  # one event loop: the writer's task and queue belong to it
        await writer.save(event, None)
        store.mark_published([event.event_id])
        return await writer.save(event, None)

    assert asyncio.run(scenario()).event_id == event.event_id
    assert recorder.handed == [[event.event_id]]


def test_a_full_queue_refuses_saves_at_once(store: EventStore) -> None:
    held = HeldStore(store)
    recorder = Recorder()
    writer = writer_for(held, recorder, max_queued=2)

    async def scenario() -> list[object]:
        first = asyncio.ensure_future(writer.save(make_event(), None))
        await asyncio.to_thread(held.entered.wait, 10)  # the writer holds one batch
        queued = [asyncio.ensure_future(writer.save(make_event(), None)) for _ in range(3)]
        await asyncio.sleep(0)
        held.release.set()
        return await asyncio.gather(first, *queued, return_exceptions=True)

    results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, StoreBusyError)]
    assert len(refused) == 1 and writer.stats()["refused"] == 1
    assert writer.stats()["max_queued"] == 2 and store.counts()["stored"] == 3


def test_a_failed_batch_fails_every_caller_of_it(store: EventStore) -> None:
    recorder = Recorder()
    writer = writer_for(store, recorder)
    store.close()  # every write fails from now on

    async def scenario() -> list[object]:
        saves = (writer.save(make_event(), None) for _ in range(3))
        return await asyncio.gather(*saves, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, StorageError) for r in results) and recorder.handed == []


def test_close_commits_what_it_can_in_time_and_refuses_the_rest(store: EventStore) -> None:
    held = HeldStore(store)
    writer = writer_for(held, Recorder())

    async def scenario() -> tuple[int, list[object], object]:
        first = asyncio.ensure_future(writer.save(make_event(), None))
        await asyncio.to_thread(held.entered.wait, 10)
        queued = [asyncio.ensure_future(writer.save(make_event(), None)) for _ in range(2)]
        await asyncio.sleep(0)
        threading.Timer(0.3, held.release.set).start()  # the held batch finishes after close
        refused = await writer.close(timeout_s=0.1)
        late = await asyncio.gather(writer.save(make_event(), None), return_exceptions=True)
        results = await asyncio.gather(first, *queued, return_exceptions=True)
        return refused, results, late[0]

    refused, results, late = asyncio.run(scenario())
    assert refused == 2
    assert isinstance(results[0], Event)  # the batch being committed was finished
    assert all(isinstance(r, StoreBusyError) for r in results[1:])
    assert isinstance(late, StoreBusyError)  # closing: new saves are refused
    assert store.counts()["stored"] == 1


def test_a_batch_still_committing_when_close_gives_up_is_answered_when_it_ends(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A commit can wait long for the store's lock (a compaction at start, a slow disk); close
    # stops waiting after CLOSE_STEP_S, but the batch's callers still get its outcome.
    monkeypatch.setattr(writer_module, "CLOSE_STEP_S", 0.1)
    held = HeldStore(store)
    recorder = Recorder()
    writer = writer_for(held, recorder)

    async def scenario() -> tuple[int, object]:
        first = asyncio.ensure_future(writer.save(make_event(), None))
        await asyncio.to_thread(held.entered.wait, 10)
        refused = await writer.close(timeout_s=0.0)  # returns with the commit still held
        assert not first.done()
        held.release.set()
        return refused, await asyncio.wait_for(first, 10)

    refused, saved = asyncio.run(scenario())
    assert refused == 0 and isinstance(saved, Event)
    assert store.counts()["stored"] == 1 and recorder.handed == [[saved.event_id]]


def test_close_with_time_enough_commits_everything(store: EventStore) -> None:
    writer = writer_for(store, Recorder())

    async def scenario() -> tuple[int, list[Event]]:
        saves = [asyncio.ensure_future(writer.save(make_event(), None)) for _ in range(5)]
        await asyncio.sleep(0)
        return await writer.close(timeout_s=10), await asyncio.gather(*saves)

    refused, saved = asyncio.run(scenario())
    assert refused == 0 and len(saved) == 5 and store.counts()["stored"] == 5


def test_a_full_disk_is_reported_the_cameras_keep_their_events_and_all_land_once(
    tmp_path: Path,
) -> None:
    """The store's volume (a small tmpfs) fills while two cameras save through their outboxes:
    saves fail with the retryable disk-full error, the writer reports `disk_full` (health says
    degraded), no outbox drops; once space returns every event is stored exactly once and
    exported, and the report clears."""
    import asyncio

    from pipelines.camera.outbox import SaveBuffer
    from pipelines.ingest.sources import Backoff

    mnt = tmp_path / "small"
    if not mount_tmpfs(mnt, "8m"):
        pytest.skip("cannot mount a size-limited tmpfs here (needs root on Linux)")
    store = EventStore(mnt / "data")
    try:

        async def scenario() -> tuple[list[SaveBuffer], list[bool]]:
            writer = GroupCommitWriter(store, max_queued=64, window_s=2.0, on_saved=lambda _e: 0)
            backoff = Backoff(start=0.05, maximum=0.2)
            outboxes = [
                SaveBuffer(f"cam{k}", writer.save_many, max_events=100, backoff=backoff)
                for k in range(2)
            ]
            seen: list[bool] = []
            for n in range(5):  # some land before the disk fills
                for k, box in enumerate(outboxes):
                    box.put(stored_event(n, camera=f"cam{k}"), b"\xff\xd8" + b"j" * 2000)
            assert all([await box.wait_empty(30) for box in outboxes])
            filler = fill_disk(mnt, keep_free=0)
            for n in range(5, 60):  # motion goes on while the disk is full
                for k, box in enumerate(outboxes):
                    box.put(stored_event(n, camera=f"cam{k}"), b"\xff\xd8" + os.urandom(20_000))
                await asyncio.sleep(0.01)
            for _ in range(200):  # the writer says so while saves fail
                if writer.disk_full:
                    break
                await asyncio.sleep(0.05)
            seen.append(writer.disk_full)
            seen.append(writer.stats()["disk_full"])
            assert all(box.depth > 0 for box in outboxes)  # the cameras hold their events
            filler.unlink()  # space returns
            assert all([await box.wait_empty(60) for box in outboxes])
            seen.append(writer.disk_full)
            await writer.close(10)
            return outboxes, seen

        outboxes, seen = asyncio.run(scenario())
        assert seen == [True, True, False]
        assert [box.dropped for box in outboxes] == [0, 0]
        assert store.counts()["stored"] == 120  # 2 cameras x 60 events, each once
        assert store.export_parquet() == 120
    finally:
        store.close()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_replies_send_back_only_events_stored_already_and_the_camera_gets_its_answers(
    store: EventStore,
) -> None:
    recorder = Recorder()
    writer = writer_for(store, recorder, max_queued=3)
    old = make_event(description="stored before")
    store.append([old])
    again = old.model_copy(update={"description": "sent again"})
    items = [(make_event(), None), (again, None), (make_event(), None), (make_event(), None)]

    answers = asyncio.run(writer.save_many(items))
    got = replies(answers)
    assert got[0] == (None, False) and got[2] == (None, False)  # the camera has these
    assert got[1] is not None and got[1][0] is not None and got[1][1]
    assert got[1][0].description == "stored before"  # what is stored, not what was sent
    assert got[3] is None  # no room: retried by the outbox
    back = answers_of(items, got)
    assert [a[0].event_id if a else None for a in back] == [
        items[0][0].event_id,
        old.event_id,
        items[2][0].event_id,
        None,
    ]
    assert back[1] == (got[1][0], True) and back[0] == (items[0][0], False)
