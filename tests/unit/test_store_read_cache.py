"""Repeated list and search reads answered from the store's read cache (a read storm of the same
few questions costs one DuckDB query per write, not one per request), never with an answer
older than the last acknowledged write."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest

from pipelines.storage import EventStore, ReadTimeoutError
from pipelines.storage.readcache import ReadCache, wait_pending
from tests.unit.test_storage import BASE, make_event


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "data", retention_days=30)
    yield s
    s.close()


def ids(answer: tuple[list, str | None]) -> list[str]:
    return [e.event_id for e in answer[0]]


def test_the_cache_answers_only_at_the_version_it_was_read_at_and_holds_a_bounded_number() -> None:
    cache = ReadCache(max_events=100)
    cache.put("a", 1, "answer a", size=10)
    assert cache.get("a", 1) == "answer a"
    assert cache.get("a", 2) is None  # written since: asked again
    assert cache.get("a", 1) is None  # and the old answer is gone
    cache.put("b", 3, "newer", size=10)
    cache.put("b", 2, "older", size=10)  # a slower read that began before a write
    assert cache.get("b", 3) == "newer"
    cache.put("huge", 3, "26 events", size=26)  # over a quarter of the bound: not kept
    assert cache.get("huge", 3) is None
    for k in range(12):  # 12 x 10 events > 100: the least recently used go first
        cache.put(k, 3, k, size=10)
        cache.get("b", 3)  # "b" stays in use
    stats = cache.stats()
    assert stats["events"] <= 100 and stats["entries"] == 10
    assert cache.get("b", 3) == "newer" and cache.get(0, 3) is None and cache.get(11, 3) == 11


def test_a_repeated_list_is_answered_without_duckdb_until_a_save(store: EventStore) -> None:
    store.append([make_event(i) for i in range(5)])
    first = store.query(camera_id="front", limit=3)
    hits = store.read_cache.hits
    again = store.query(camera_id="front", limit=3)
    assert ids(again) == ids(first) and store.read_cache.hits == hits + 1
    kept = store.pending_query(camera_id="front", limit=3)  # the actor's loop path
    assert kept is not None and ids(kept.result(0)) == ids(first)
    assert store.pending_query(camera_id="front", limit=4) is None  # another question
    newest = make_event(9)
    store.append([newest])
    assert store.pending_query(camera_id="front", limit=3) is None
    assert ids(store.query(camera_id="front", limit=3))[0] == newest.event_id
    # publishing is not part of a listed event: the answer stays
    store.query(camera_id="front", limit=3)
    store.mark_published([newest.event_id])
    assert store.pending_query(camera_id="front", limit=3) is not None


def test_a_correlation_update_and_retention_change_the_answer(store: EventStore) -> None:
    old = make_event(1, camera="front")
    store.save_batch([old], None, window_s=10)
    assert store.query(limit=10)[0][0].correlation_group_id is None
    # another camera's event within the window gives the stored one a group (an update, before
    # the new event is appended)
    (other,) = store.assign_correlation([make_event(2, camera="side")], window_s=10)
    (listed,) = store.query(limit=10)[0]
    assert listed.correlation_group_id == other.correlation_group_id is not None
    store.append([other])
    assert len(store.query(limit=10)[0]) == 2
    store.apply_retention(now=BASE + timedelta(days=31))
    assert store.query(limit=10)[0] == []


def test_a_read_that_began_before_a_save_never_answers_after_it(store: EventStore) -> None:
    """The version is read before the snapshot: a read that took its snapshot before a save and
    returns after it is kept under the old version, which no later question asks for."""
    one, two = make_event(1), make_event(2)
    store.append([one])
    read_done, saved = threading.Event(), threading.Event()
    plain_query = store._query

    def slow_query(*args: object) -> tuple[list, str | None]:
        answer = plain_query(*args)  # the snapshot without event 2
        read_done.set()
        assert saved.wait(30)
        return answer

    store._query = slow_query  # type: ignore[method-assign]
    slow: list[list[str]] = []
    reader = threading.Thread(target=lambda: slow.append(ids(store.query(limit=10))))
    reader.start()
    try:
        assert read_done.wait(30)
        store.append([two])
    finally:
        saved.set()
        reader.join(30)
    store._query = plain_query  # type: ignore[method-assign]
    assert slow == [[one.event_id]]
    assert ids(store.query(limit=10)) == [two.event_id, one.event_id]


def held(store: EventStore) -> tuple[threading.Event, threading.Event, list[int]]:
    """Make store's DuckDB reads wait for `release` once `started`; `calls` counts them."""
    plain_query = store._query
    started, release, calls = threading.Event(), threading.Event(), []

    def held_query(*args: object) -> tuple[list, str | None]:
        calls.append(1)
        started.set()
        assert release.wait(30)
        return plain_query(*args)

    store._query = held_query  # type: ignore[method-assign]
    return started, release, calls


def test_read_cache_events_0_turns_it_off_sharing_included(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "off", read_cache_events=0)
    try:
        store.append([make_event(1)])
        started, release, calls = held(store)
        first = threading.Thread(target=store.query, kwargs={"limit": 5})
        first.start()
        assert started.wait(30)
        assert store.pending_query(limit=5) is None  # nothing to wait for: the cache is off
        second = threading.Thread(target=store.query, kwargs={"limit": 5})
        second.start()
        deadline = time.monotonic() + 30
        while len(calls) < 2:  # the second asker reads on its own, it does not wait
            assert time.monotonic() < deadline, "the second asker waited for the first"
            time.sleep(0.01)
        release.set()
        first.join(30)
        second.join(30)
        store.query(limit=5)
        stats = store.read_cache.stats()
        assert stats == {"entries": 0, "events": 0, "hits": 0, "misses": 3, "joined": 0}
    finally:
        store.close()


def test_a_cancelled_or_late_waiter_leaves_the_read_to_the_others(store: EventStore) -> None:
    """The store actor's path: tasks on an event loop wait for another's read (wait_pending);
    one cancelled does not cancel the read, one past its deadline gets ReadTimeoutError."""
    store.append([make_event(i) for i in range(3)])
    started, release, calls = held(store)
    leader: list[list[str]] = []
    thread = threading.Thread(target=lambda: leader.append(ids(store.query(limit=5))))
    thread.start()
    assert started.wait(30)

    async def waiters() -> tuple[object, ...]:
        flights = [store.pending_query(limit=5) for _ in range(3)]
        assert all(f is not None and not f.done() for f in flights)
        cancelled = asyncio.create_task(wait_pending(flights[0], 30))
        late = asyncio.create_task(wait_pending(flights[1], 0.2))
        patient = asyncio.create_task(wait_pending(flights[2], 30))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(ReadTimeoutError):
            await late
        release.set()
        answer = await patient
        return cancelled.cancelled(), answer

    try:
        was_cancelled, answer = asyncio.run(waiters())
    finally:
        release.set()
        thread.join(30)
    assert was_cancelled and calls == [1]
    assert leader and ids(answer) == leader[0]  # the leader finished its read normally


def test_empty_answers_are_bounded_and_a_write_drops_older_answers() -> None:
    cache = ReadCache(max_events=100)
    for k in range(1_000):  # every poll a new `since`, every answer empty
        cache.put(("since", k), 1, ([], None), size=0)
    assert cache.stats()["entries"] == 100  # each counts as one
    cache.put("after a write", 2, ([], None), size=0)
    assert cache.stats()["entries"] == 1


def test_an_asker_at_an_older_version_keeps_a_newer_answer() -> None:
    cache = ReadCache()
    cache.put("list", 6, "answer at 6", size=1)
    assert cache.get("list", 5) is None  # began before the write: no answer for it
    assert cache.get("list", 6) == "answer at 6"  # and the newer one is still kept


def test_the_key_tells_apart_two_local_times_of_a_repeated_hour(store: EventStore) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("America/New_York")
    early = datetime(2026, 11, 1, 1, 30, tzinfo=zone)  # 05:30 UTC
    late = early.replace(fold=1)  # the same wall time an hour later: 06:30 UTC
    assert early == late  # Python says equal
    store.append([make_event(1, ts=early.astimezone(UTC) + timedelta(minutes=30))])
    assert len(store.query(since=early, limit=5)[0]) == 1
    assert store.query(since=late, limit=5)[0] == []


def test_askers_of_one_question_share_one_read_and_its_error(store: EventStore) -> None:
    """While one read of a question is under way, the others asking it wait for that read
    (threads block; an event loop gets its Future) instead of querying DuckDB again."""
    store.append([make_event(i) for i in range(3)])
    plain_query = store._query
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    fail = {"on": False}

    def held_query(*args: object) -> tuple[list, str | None]:
        calls.append(1)
        started.set()
        assert release.wait(30)
        if fail["on"]:
            raise RuntimeError("the read failed")
        return plain_query(*args)

    store._query = held_query  # type: ignore[method-assign]
    try:
        for failing in (False, True):
            fail["on"], question = failing, f"event {int(failing)}"
            answers: list[list[str]] = []
            errors: list[str] = []
            started.clear()
            release.clear()
            calls.clear()

            def ask(q: str, answers: list = answers, errors: list = errors) -> None:
                try:
                    answers.append(ids(store.query(q=q, limit=5)))
                except RuntimeError as exc:
                    errors.append(str(exc))

            threads = [threading.Thread(target=ask, args=(question,)) for _ in range(4)]
            threads[0].start()
            assert started.wait(30)
            for thread in threads[1:]:
                thread.start()
            flight = store.pending_query(q=question, limit=5)
            assert flight is not None and not flight.done()  # an event loop would await it
            deadline = time.monotonic() + 30
            while store.read_cache.stats()["joined"] < 4 * (1 + int(failing)):
                assert time.monotonic() < deadline, store.read_cache.stats()
                time.sleep(0.01)
            release.set()
            for thread in threads:
                thread.join(30)
            assert calls == [1], "one DuckDB read for the four askers"
            if failing:
                assert errors == ["the read failed"] * 4 and not answers
                assert isinstance(flight.exception(0), RuntimeError)
            else:
                assert len(answers) == 4 and all(a == answers[0] for a in answers)
                assert flight.result(0)[0] and not errors
    finally:
        store._query = plain_query  # type: ignore[method-assign]
