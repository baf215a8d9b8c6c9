"""The one delivery feed: the store's side (a real DuckDB file: cursor, unacknowledged reads, the
long-poll woken by a commit) and the publisher's side (`FeedFollower` over the fake store port:
live reading, replay from the acknowledged cursor, a store away)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest

from pipelines.events import Event, utcnow
from pipelines.mqtt.follow import FeedFollower
from pipelines.storage import EventStore, feed
from pipelines.storage.writer import GroupCommitWriter
from tests.support.mqtt import make_event
from tests.support.publisher_ports import FakeStore


def _recent(n: int, **kw: object) -> list[Event]:
    now = utcnow()
    return [make_event(timestamp=now - timedelta(seconds=n - i), **kw) for i in range(n)]


# ------------------------------------------------------------------ the store's side


def test_delivery_cursor_is_before_the_oldest_unacknowledged_event(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "store")
    try:
        assert feed.delivery_cursor(store, 3600) == (0, 0)
        old = make_event(timestamp=utcnow() - timedelta(hours=3))
        events = [old, *_recent(4), make_event(timestamp=utcnow(), filtered=True)]
        store.save_batch(events, {}, 0.0)
        seqs = {e.event_id: s for s, e in feed.events_after(store, 0, None, 100)}
        last = max(seqs.values())
        # the 3-hour-old event is outside a one-hour window: the cursor is before the 2nd
        assert feed.delivery_cursor(store, 3600) == (seqs[events[1].event_id] - 1, last)
        store.mark_published([events[1].event_id, events[2].event_id])
        assert feed.delivery_cursor(store, 3600) == (seqs[events[3].event_id] - 1, last)
        unacked = feed.events_after(store, 0, None, 100, unacknowledged=True)
        # acknowledged and stored-only (filtered) events are not read again
        assert [e.event_id for _, e in unacked] == [e.event_id for e in (old, *events[3:5])]
        store.mark_published([e.event_id for e in (old, *events[3:5])])
        assert feed.delivery_cursor(store, 3600) == (last, last)  # nothing waiting
    finally:
        store.close()


def test_a_long_poll_answers_at_the_next_commit(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "store")
    commits = feed.CommitSignal()

    async def scenario() -> tuple[float, list[tuple[int, Event]], float]:
        writer = GroupCommitWriter(store, max_queued=10, window_s=0.0, on_saved=commits.committed)

        def read() -> list[tuple[int, Event]]:
            return feed.events_after(store, 0, None, 10)

        started = time.monotonic()
        empty = await commits.long_poll(read, 0.3)  # nothing saved: waits it out
        waited = time.monotonic() - started
        assert empty == []
        later = asyncio.create_task(commits.long_poll(read, 8.0))
        await asyncio.sleep(0.2)
        assert not later.done()
        started = time.monotonic()
        await writer.save(make_event(), None)
        rows = await asyncio.wait_for(later, 5)
        await writer.close(5)
        return waited, rows, time.monotonic() - started

    try:
        waited, rows, answered_in = asyncio.run(scenario())
    finally:
        store.close()
    assert waited >= 0.3
    assert len(rows) == 1
    assert answered_in < 4.0  # woken by the commit, not by its 8 s wait running out


def test_a_long_poll_is_capped() -> None:
    commits = feed.CommitSignal()
    started = time.monotonic()
    rows = asyncio.run(commits.long_poll(list, -5))  # a negative wait: one read, no wait
    assert rows == [] and time.monotonic() - started < 1.0
    assert feed.MAX_WAIT_S <= 10


# ------------------------------------------------------------------ the publisher's side


class Recorder:
    def __init__(self) -> None:
        self.live: list[str] = []
        self.replayed: list[str] = []


def follower(
    store: FakeStore, window_s: float = 3600, page: int = 4
) -> tuple[FeedFollower, Recorder]:
    seen = Recorder()
    reader = FeedFollower(
        store,
        window_s=window_s,
        page=page,
        live=lambda events: seen.live.extend(e.event_id for e in events),
        replay=lambda events: seen.replayed.extend(e.event_id for e in events),
        long_poll_s=0.05,
        live_page=page,
    )
    return reader, seen


def test_live_reading_starts_at_the_feeds_end_and_pages_in_order() -> None:
    before = _recent(3)
    store = FakeStore(before)
    reader, seen = follower(store)
    reader.step()  # nothing new: the events saved before it started are not live
    assert seen.live == [] and reader.cursor == 3
    later = _recent(6)
    store.add(*later)
    reader.step()
    reader.step()
    assert seen.live == [e.event_id for e in later]  # two pages of four and two
    assert reader.reached(9) and not reader.reached(10)


def test_a_rewind_replays_only_unacknowledged_events_once_then_goes_on_live() -> None:
    events = _recent(6)
    store = FakeStore(events)
    store.mark_published([events[0].event_id, events[2].event_id])  # acknowledged
    reader, seen = follower(store)
    reader.step()  # start: live from the end
    reader.rewind()  # (re)connected
    store.add(extra := make_event())  # saved before the replay ends: replayed, not read twice
    reader.step()
    reader.step()
    want = [e.event_id for e in (events[1], *events[3:], extra)]
    assert seen.replayed == want and seen.live == []
    assert reader.rewinds == 1 and reader.cursor == 7
    store.add(live := make_event())
    reader.step()
    assert seen.live == [live.event_id]


def test_with_replay_window_zero_nothing_is_read_again() -> None:
    store = FakeStore(_recent(3))
    reader, seen = follower(store, window_s=0)
    reader.step()
    reader.rewind()
    reader.step()
    assert seen.replayed == [] and reader.rewinds == 0


def test_a_failed_read_keeps_the_position() -> None:
    class Flaky(FakeStore):
        down = False

        def events_after(self, after: int, **kw: object) -> list[tuple[int, Event]]:  # type: ignore[override]
            if self.down:
                raise ConnectionError("store away")
            return super().events_after(after, **kw)  # type: ignore[arg-type]

    store = Flaky()
    reader, seen = follower(store)
    reader.step()
    store.down = True
    store.add(first := make_event())
    with pytest.raises(ConnectionError):
        reader.step()
    store.down = False
    reader.step()
    assert seen.live == [first.event_id] and reader.cursor == 1


def test_a_store_whose_sequence_went_back_is_followed_from_its_end() -> None:
    store = FakeStore(_recent(5))
    reader, _seen = follower(store)
    reader.step()
    assert reader.cursor == 5
    store.events = store.events[:2]  # emptied and refilled (a store moved aside)
    reader.rewind()
    reader.step()
    assert reader.cursor == 2


def test_a_replay_longer_than_the_stores_page_cap_is_read_to_its_end() -> None:
    class Capped(FakeStore):
        def events_after(self, after: int, **kw: object) -> list[tuple[int, Event]]:  # type: ignore[override]
            kw["limit"] = min(int(kw["limit"]), 3)  # type: ignore[call-overload]
            return super().events_after(after, **kw)  # type: ignore[arg-type]

    store = Capped()
    reader, seen = follower(store, page=10)
    reader.step()
    store.add(*(events := _recent(8)))
    reader.rewind()
    for _ in range(5):
        reader.step()
    assert seen.replayed == [e.event_id for e in events]  # not only the first three


def test_an_unacknowledged_event_outside_the_window_not_yet_read_live_is_not_skipped() -> None:
    class Windowed(FakeStore):
        def delivery_cursor(self, max_age_s: float) -> tuple[int, int]:
            last = len(self.events)
            return (4, last) if max_age_s > 0 else (last, last)  # seq 4: older than the window

    store = Windowed(_recent(3))
    reader, seen = follower(store)
    reader.step()  # live from 3
    store.events.extend([old := make_event(), new := make_event()])  # saved, not read live yet
    reader.rewind()
    reader.step()
    assert seen.replayed == [old.event_id, new.event_id] and reader.cursor == 5


def test_a_page_that_makes_publishing_raise_is_not_read_again_and_again() -> None:
    store = FakeStore()
    calls: list[list[str]] = []

    def live(events: list[Event]) -> None:
        calls.append([e.event_id for e in events])
        if len(calls) == 1:
            raise RuntimeError("a broken event")

    replayed: list[str] = []
    reader = FeedFollower(
        store,
        window_s=3600,
        page=4,
        live=live,
        replay=lambda events: replayed.extend(e.event_id for e in events),
        long_poll_s=0.05,
    )
    reader.step()
    store.add(*(events := _recent(2)))
    reader.step()  # raises inside: logged, the position moves on, a replay is asked for
    reader.step()
    assert calls == [[e.event_id for e in events]]  # read once live
    assert replayed == [e.event_id for e in events]  # then once by the replay (unacknowledged)
