"""Plain-Python parts of issue 10 (delivery): ring rate limits, derived file event ids, the
camera's save outbox, the media-offset column. The Ray-level behaviour is proven in
tests/integration/test_stop_drain.py, test_store_restart.py and test_ring_flood.py."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient

from pipelines.camera.outbox import SaveBuffer
from pipelines.config import Config
from pipelines.events import Event
from pipelines.ingest.ids import file_identity, segment_event_id
from pipelines.ingest.sources import Backoff
from pipelines.mqtt.inbound import InboundHandler, InboundHooks
from pipelines.mqtt.topics import Topics
from pipelines.ratelimit import RateLimiter
from pipelines.storage import EventStore
from serve_apps.api import build_api
from tests.support.store_client import LocalStoreClient


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- rate limits


def test_rate_limiter_bursts_then_refills_per_key() -> None:
    clock = Clock()
    limiter = RateLimiter(12, clock=clock)  # 12 a minute: one every 5 s, a burst of 12
    assert [limiter.allow("door") for _ in range(20)] == [True] * 12 + [False] * 8
    assert limiter.allow("gate")  # another key has its own bucket
    assert limiter.retry_after_s("door") == pytest.approx(5.0)
    clock.now += 4.9
    assert not limiter.allow("door")
    clock.now += 0.2
    assert limiter.allow("door") and not limiter.allow("door")
    assert (limiter.allowed, limiter.limited) == (14, 10)
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_rate_limiter_keys_are_bounded() -> None:
    limiter = RateLimiter(60, max_keys=8)
    for i in range(10_000):
        limiter.allow(f"cam{i}")
    assert len(limiter) == 8


def test_mqtt_ring_flood_is_rate_limited_and_counted() -> None:
    counts: Counter[str] = Counter()
    rings: list[str] = []
    hooks = InboundHooks(
        publish_retained=lambda _t, _p: None,
        current_cameras=set,
        republish_state=lambda: None,
        count=lambda name, n: counts.update({name: n}),
        on_ring=rings.append,
    )
    handler = InboundHandler(Topics("lo", "ha"), hooks, discovery=False, ring_rate_per_min=5)
    for _ in range(1000):
        handler.handle("lo/camera/door/ring", b"PRESS", False)
    handler.handle("lo/camera/gate/ring", b"PRESS", False)
    assert rings == ["door"] * 5 + ["gate"]
    assert counts == Counter(rings_received=1001, rings_rate_limited=995)


def test_http_ring_flood_gets_429_with_a_json_error(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "cameras": [
                {"id": "door", "source": "rtsp://cam2.lan/s", "doorbell": True},
                {"id": "gate", "source": "rtsp://cam3.lan/s", "doorbell": True},
            ],
            "api": {"ring_rate_per_min": 3},
        }
    )
    store = EventStore(tmp_path / "store")
    client_store = LocalStoreClient(store, config)
    try:
        with TestClient(build_api(client_store, config), base_url="http://localhost") as client:
            answers = [client.post("/api/v1/cameras/door/ring") for _ in range(50)]
            other = client.post("/api/v1/cameras/gate/ring")
    finally:
        store.close()
    assert [r.status_code for r in answers] == [202] * 3 + [429] * 47
    limited = answers[-1]
    assert limited.json()["detail"].startswith("too many rings for this camera")
    assert 1 <= int(limited.headers["Retry-After"]) <= 20
    assert other.status_code == 202
    assert client_store.rings == ["door"] * 3 + ["gate"]  # the camera never saw the flood


# ---------------------------------------------------------------- derived ids


def test_file_event_ids_are_derived_from_camera_file_and_offset(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x" * 100)
    identity = file_identity(clip)
    first = segment_event_id("porch", identity, 12.3456)
    assert first == segment_event_id("porch", file_identity(clip), 12.3456)  # a replay
    assert uuid.UUID(first).version == 5
    assert first != segment_event_id("garage", identity, 12.3456)
    assert first != segment_event_id("porch", identity, 12.5)
    clip.write_bytes(b"y" * 101)  # another recording under the same name
    os.utime(clip, ns=(1, 1))
    assert segment_event_id("porch", file_identity(clip), 12.3456) != first


# ---------------------------------------------------------------- the save outbox


def event(i: int) -> Event:
    return Event(
        camera_id="porch",
        camera_name="Porch",
        description=f"event {i}",
        confidence=0,
        source_type="file",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )


class FlakyStore:
    """Saves groups into a list; fails while `down` (as a restarting store actor would); with
    `room`, stores only that many of the next group and refuses the rest (a full write queue)."""

    def __init__(self) -> None:
        self.down = False
        self.room: int | None = None
        self.saved: list[str] = []
        self.groups: list[int] = []
        self.attempts = 0

    async def save_many(
        self, items: list[tuple[Event, bytes | None]]
    ) -> list[tuple[Event, bool] | None]:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError("store restarting")
        taken = items if self.room is None else items[: self.room]
        self.room = None
        self.groups.append(len(taken))
        answers: list[tuple[Event, bool] | None] = []
        for ev, _thumb in taken:
            existed = ev.event_id in self.saved
            if not existed:
                self.saved.append(ev.event_id)
            answers.append((ev, existed))
        return answers + [None] * (len(items) - len(taken))


def test_failed_saves_are_retried_in_order_until_the_store_is_back() -> None:
    async def scenario() -> tuple[FlakyStore, SaveBuffer, list[str]]:
        store = FlakyStore()
        done: list[str] = []
        buffer = SaveBuffer(
            "porch",
            store.save_many,
            max_events=10,
            on_saved=lambda ev: done.append(ev.event_id),
            backoff=Backoff(0.01, 0.05),
        )
        store.down = True
        events = [event(i) for i in range(6)]
        for ev in events:
            buffer.put(ev, b"jpeg")
        await asyncio.sleep(0.2)
        assert buffer.depth == 6 and buffer.retrying and store.attempts >= 2
        store.down = False
        assert await buffer.wait_empty(5)
        assert store.saved == [ev.event_id for ev in events]  # in order, each once
        return store, buffer, done

    store, buffer, done = asyncio.run(scenario())
    assert done == store.saved and buffer.dropped == 0 and not buffer.retrying


def test_over_the_bound_the_oldest_is_dropped_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> tuple[FlakyStore, SaveBuffer, list[Event]]:
        store = FlakyStore()
        store.down = True
        dropped: list[str] = []
        buffer = SaveBuffer(
            "porch",
            store.save_many,
            max_events=3,
            on_dropped=lambda ev: dropped.append(ev.event_id),
            backoff=Backoff(0.01, 0.02),
        )
        events = [event(i) for i in range(5)]
        for ev in events:
            buffer.put(ev, None)
        assert buffer.depth == 3 and dropped == [events[0].event_id, events[1].event_id]
        store.down = False
        buffer.retry_now()
        assert await buffer.wait_empty(5)
        return store, buffer, events

    store, buffer, events = asyncio.run(scenario())
    assert store.saved == [ev.event_id for ev in events[2:]]
    assert buffer.dropped == 2 and list(buffer.dropped_ids) == [e.event_id for e in events[:2]]
    logged = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert any(events[0].event_id in line for line in logged)


def test_waiting_events_go_in_one_group_and_a_partial_save_retries_only_the_rest() -> None:
    async def scenario() -> tuple[FlakyStore, SaveBuffer, list[str], list[Event]]:
        store = FlakyStore()
        done: list[str] = []
        buffer = SaveBuffer(
            "porch",
            store.save_many,
            max_events=20,
            max_group=8,
            on_saved=lambda ev: done.append(ev.event_id),
            backoff=Backoff(0.01, 0.05),
        )
        store.room = 3  # the first group: room for 3 of its 8
        events = [event(i) for i in range(12)]
        for ev in events:
            buffer.put(ev, None)  # all waiting before the sender runs
        assert await buffer.wait_empty(5)
        return store, buffer, done, events

    store, buffer, done, events = asyncio.run(scenario())
    ids = [ev.event_id for ev in events]
    assert store.saved == ids and done == ids  # in order, each stored and reported once
    # 3 of the first 8 stored; the 5 refused retried ahead of the 4 that waited behind them;
    # partial progress is not a failure
    assert store.groups == [3, 8, 1]
    assert buffer.failures == 0 and buffer.saved == 12 and not buffer.retrying


def test_the_bound_holds_while_a_group_is_in_flight_and_the_oldest_queued_drop() -> None:
    class SlowStore(FlakyStore):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def save_many(
            self, items: list[tuple[Event, bytes | None]]
        ) -> list[tuple[Event, bool] | None]:
            await self.release.wait()
            return await super().save_many(items)

    async def scenario() -> tuple[SlowStore, SaveBuffer, list[Event], list[int]]:
        store = SlowStore()
        buffer = SaveBuffer("porch", store.save_many, max_events=4)
        events = [event(i) for i in range(10)]
        depths = []
        for ev in events[:4]:
            buffer.put(ev, None)
        for ev in events[4:]:
            await asyncio.sleep(0)  # the sender takes half the bound (2 events) and waits
            buffer.put(ev, None)
            depths.append(buffer.depth)
        store.release.set()
        assert await buffer.wait_empty(5)
        return store, buffer, events, depths

    store, buffer, events, depths = asyncio.run(scenario())
    assert max(depths) == 4  # never over the bound with a group in flight
    assert store.saved == [e.event_id for e in events[:2] + events[-2:]]  # oldest queued drop
    assert buffer.dropped == 6


# ---------------------------------------------------------------- the stored media offset


def test_media_offset_is_stored_and_an_old_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "store"
    path.mkdir()
    with duckdb.connect(str(path / "events.duckdb")) as con:  # a database of schema 1
        from pipelines.storage.schema import MIGRATIONS

        con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for sql in MIGRATIONS[0][1]:
            con.execute(sql)
        con.execute("INSERT INTO schema_version VALUES (1)")
    store = EventStore(path)
    try:
        with_offset, live = event(1).model_copy(update={"media_offset_s": 12.5}), event(2)
        assert store.append([with_offset, live]) == 2
        got, other = store.get(with_offset.event_id), store.get(live.event_id)
        assert got is not None and got.media_offset_s == 12.5
        assert other is not None and other.media_offset_s is None
    finally:
        store.close()
