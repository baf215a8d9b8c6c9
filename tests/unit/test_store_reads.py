"""Reads that cannot starve writes (#21 item 3): every read runs on its own DuckDB cursor in a
snapshot, outside the writer's lock; a read past its deadline is interrupted; and a read storm
(366-day summaries and 8-term searches in a loop) while cameras save drops no event."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from pipelines.camera.outbox import SaveBuffer
from pipelines.events import Event, utcnow
from pipelines.storage import EventStore, ReadTimeoutError
from pipelines.storage.summary import summarize
from pipelines.storage.writer import GroupCommitWriter
from tests.unit.test_storage import make_event


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "data")
    yield s
    s.close()


def test_a_save_commits_while_a_read_is_in_progress(store: EventStore) -> None:
    """A read held open (a Python UDF that waits) does not hold up an append; the read sees
    its snapshot, a later read sees the new row."""
    store.append([make_event(1)], {})
    inside, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def held_read() -> None:
        with store.reading(timeout_s=None) as con:
            con.create_function("hold", lambda: inside.set() or (release.wait(30) and 1), [], "INT")
            seen.append(
                int(con.execute("SELECT count(*) + hold() - 1 FROM events").fetchall()[0][0])
            )

    reader = threading.Thread(target=held_read)
    reader.start()
    try:
        assert inside.wait(10), "the read started"
        store.append([make_event(2)], {})  # with the old shared lock this waited for release
        assert store.counts()["stored"] == 2 and reader.is_alive()
    finally:
        release.set()
        reader.join(timeout=30)
    assert seen == [1]  # the read's snapshot was taken before the append
    assert len(store.query(limit=10)[0]) == 2


def test_a_read_past_its_deadline_is_interrupted_and_the_thread_reads_again(
    store: EventStore,
) -> None:
    store.append([make_event(i) for i in range(3)], {})
    with pytest.raises(ReadTimeoutError, match="interrupted"):
        with store.reading(timeout_s=0.2) as con:
            con.execute("SELECT count(*) FROM range(100000000000) a").fetchall()
    with store.reading() as con:  # a fresh cursor: no interrupt left pending on it
        assert con.execute("SELECT count(*) FROM events").fetchall()[0][0] == 3


def test_a_read_storm_while_cameras_save_drops_no_event(store: EventStore) -> None:
    """Four cameras' outboxes (bound 8) save 40 events each through the group-commit writer
    while two threads run 366-day summaries and 8-term searches in a loop over 20,000 rows."""
    now = utcnow()
    store.append(
        [
            make_event(i, camera=f"cam{i % 4}", ts=now - timedelta(minutes=25 * i))
            for i in range(20_000)
        ],
        {},
    )
    terms = "person car dog event front the a 1"  # 8 terms
    stop = threading.Event()
    reads = {"summary": 0, "search": 0}

    def storm() -> None:
        while not stop.is_set():
            summarize(store, since=now - timedelta(days=366), until=now, examples=5)
            reads["summary"] += 1
            store.query(q=terms, limit=50)
            reads["search"] += 1

    async def cameras() -> list[SaveBuffer]:
        writer = GroupCommitWriter(store, max_queued=64, window_s=2.0, on_saved=lambda _e: None)
        outboxes = [SaveBuffer(f"live{k}", writer.save_many, max_events=8) for k in range(4)]
        for n in range(40):
            for k, outbox in enumerate(outboxes):
                outbox.put(
                    Event(
                        camera_id=f"live{k}",
                        camera_name=f"Live {k}",
                        description=f"motion {n}",
                        objects_detected=(),
                        confidence=50,
                        source_type="rtsp",
                        timestamp=utcnow(),
                    ),
                    None,
                )
            await asyncio.sleep(0.1)  # an event every 100 ms per camera (a busy site: 40 a second)
        for outbox in outboxes:
            assert await outbox.wait_empty(60)
        await writer.close(10)
        return outboxes

    with ThreadPoolExecutor(2) as pool:
        storms = [pool.submit(storm) for _ in range(2)]
        try:
            outboxes = asyncio.run(cameras())
        finally:
            stop.set()
        for done in storms:
            done.result(timeout=120)
    assert reads["summary"] >= 2 and reads["search"] >= 2, reads
    assert [o.dropped for o in outboxes] == [0, 0, 0, 0]
    live = store.counts()["stored"] - 20_000
    assert live == 160
    for k in range(4):
        assert len(store.query(camera_id=f"live{k}", limit=100)[0]) == 40


def test_summaries_searches_and_narratives_are_rate_limited(tmp_path: Path) -> None:
    """One budget for summaries and text searches, its own for narratives: past it, 429 with
    Retry-After; a plain event list (no `q`) is not a heavy read."""
    from fastapi.testclient import TestClient

    from serve_apps.api import build_api
    from tests.support.store_client import LocalStoreClient, make_config

    events = EventStore(tmp_path / "data")
    base = make_config()
    api = base.api.model_copy(update={"heavy_reads_per_min": 3, "narratives_per_min": 1})
    config = base.model_copy(update={"api": api})
    http = TestClient(
        build_api(LocalStoreClient(events, config), config), base_url="http://localhost"
    )
    try:
        codes = [
            http.get("/api/v1/summary", params={"since": "366d"}).status_code,
            http.get("/api/v1/events", params={"q": "person at the door"}).status_code,
            http.get("/api/v1/summary", params={"since": "24h", "narrative": True}).status_code,
        ]
        assert codes == [200, 200, 200]
        refused = http.get("/api/v1/summary", params={"since": "7d"})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "too many searches and summaries" in refused.json()["detail"]
        assert http.get("/api/v1/events", params={"q": "car"}).status_code == 429
        assert http.get("/api/v1/events", params={"limit": 5}).status_code == 200
    finally:
        events.close()

    events = EventStore(tmp_path / "data2")
    http = TestClient(
        build_api(LocalStoreClient(events, config), config), base_url="http://localhost"
    )
    try:
        narrate = {"since": "24h", "narrative": True}
        assert http.get("/api/v1/summary", params=narrate).status_code == 200
        second = http.get("/api/v1/summary", params=narrate)
        assert second.status_code == 429 and "too many narratives" in second.json()["detail"]
    finally:
        events.close()
