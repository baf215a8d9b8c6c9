"""The statements a save and a publish run read only recent rows, and stay exact.

The writer looks a file segment's derived id up in the whole table (a replay brings it back
with a new timestamp); a batch's random ids only when its insert meets a stored one (a re-send):
the batch is rolled back, its correlation undone, and it is redone after a lookup in its time
span, then after a whole-table lookup. mark_published
bounds its update by the seqs the store gave its recent saves. Each test stores what the
bounded statement would miss if the bound were wrong.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.events import Event
from pipelines.ingest.ids import segment_event_id
from pipelines.storage import EventStore, correlation, writes
from pipelines.storage.cursors import micros
from pipelines.storage.errors import DuplicateEventError
from pipelines.storage.writer import GroupCommitWriter
from tests.support.groups import partition
from tests.support.mqtt import make_event

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore(tmp_path / "data")
    yield s
    s.close()


class Handed:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, events: list[Event]) -> None:
        self.ids += [event.event_id for event in events]


def saved(
    store: EventStore, items: list[tuple[Event, bytes | None]], handed: Handed
) -> list[tuple[Event, bool] | None]:
    """One save_many through a fresh writer over store."""
    writer = GroupCommitWriter(store, max_queued=100, window_s=5.0, on_saved=handed)

    async def scenario() -> list[tuple[Event, bool] | None]:
        try:
            return await writer.save_many(items)
        finally:
            await writer.close(5)

    return asyncio.run(scenario())


def test_a_replayed_file_segment_with_a_new_timestamp_is_answered_as_stored(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    event_id = segment_event_id("yard", "/clips/yard.mp4|100|1", 12.5)
    first = make_event("yard", event_id=event_id, timestamp=NOW - timedelta(days=2))
    handed = Handed()
    assert saved(store, [(first, None)], handed) == [(first, False)]
    # the file is replayed after a restart: the same segment, cut again two days later
    replay = first.model_copy(update={"timestamp": NOW, "description": "again"})
    with caplog.at_level(logging.WARNING, logger="pipelines.storage.writer"):
        answers = saved(store, [(replay, None), (make_event("yard", timestamp=NOW), None)], handed)
    assert not caplog.text, "found by the lookup, not by an insert that failed"
    answer = answers[0]
    assert answer is not None and answer[1], "answered as stored already"
    assert answer[0].timestamp == first.timestamp and answer[0].description == first.description
    assert handed.ids.count(event_id) == 1, "handed on (published) once"
    assert store.counts()["stored"] == 2


def test_a_random_id_resent_with_another_timestamp_is_stored_once_and_its_file_kept(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Not a product path (a random id is re-sent only with its own event): the writer's
    # insert meets the stored id outside the span it looked in, and must still not fail.
    first = make_event("gate", timestamp=NOW - timedelta(days=1))
    handed = Handed()
    assert saved(store, [(first, b"\xff\xd8first")], handed) == [(first, False)]
    odd = first.model_copy(update={"timestamp": NOW})
    other = make_event("gate", timestamp=NOW + timedelta(seconds=1))
    with caplog.at_level(logging.WARNING, logger="pipelines.storage.writer"):
        answers = saved(store, [(odd, b"\xff\xd8second"), (other, b"\xff\xd8other")], handed)
    assert answers[0] is not None and answers[0][1] and answers[0][0].timestamp == first.timestamp
    assert answers[1] == (other, False)
    assert "outside its time span" in caplog.text
    assert store.counts()["stored"] == 2
    assert handed.ids == [first.event_id, other.event_id]
    path = store.thumbnail_path(first.event_id)
    assert path is not None and path.read_bytes() == b"\xff\xd8first"  # never rewritten


def test_known_ids_in_a_span_sees_only_the_events_in_it(store: EventStore) -> None:
    old, new = make_event(timestamp=NOW - timedelta(hours=3)), make_event(timestamp=NOW)
    store.append([old, new])
    store.mark_published([new.event_id])
    ids = [old.event_id, new.event_id, make_event().event_id]
    assert store.known_ids(ids) == {old.event_id: False, new.event_id: True}
    span = (NOW - timedelta(hours=1), NOW)  # inclusive at both ends
    assert store.known_ids(ids, span) == {new.event_id: True}


def test_mark_published_marks_recent_saves_and_older_events_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writes, "RECENT_SEQS", 6)  # forget all but the latest few
    before = EventStore(tmp_path / "data")
    older = [make_event(timestamp=NOW - timedelta(minutes=i)) for i in range(3)]
    before.save_batch(older, None, 5.0, set())
    before.close()
    store = EventStore(tmp_path / "data")  # a restart: it gave none of them a seq
    try:
        batches = [[make_event(camera_id=f"c{i}", timestamp=NOW)] for i in range(10)]
        for batch in batches:
            store.save_batch(batch, None, 5.0, set())
        recent = [batch[0].event_id for batch in batches]
        assert store.mark_published(recent[-3:]) == 3  # all recent: the bounded update
        assert store.mark_published(recent[:3]) == 3  # forgotten by now: the whole table
        assert store.mark_published([e.event_id for e in older] + recent[3:5]) == 5
        assert store.mark_published(recent) == 2  # only the two not marked yet
        published = store.known_ids(recent + [e.event_id for e in older])
        assert len(published) == 13 and all(published.values())
        # the bound is the recorded seqs: a wrong one would miss the row
        checked, unchecked = make_event(timestamp=NOW), make_event(timestamp=NOW)
        store.save_batch([checked], None, 5.0, set())
        store.append([unchecked])  # ON CONFLICT DO NOTHING: its seq may be unused, not kept
        assert checked.event_id in store._recent_seqs
        assert unchecked.event_id not in store._recent_seqs
        store._recent_seqs[checked.event_id] += 1000
        assert store.mark_published([checked.event_id]) == 0
        assert store.mark_published([checked.event_id, unchecked.event_id]) == 2
    finally:
        store.close()


def test_spans_cover_every_window_disjoint_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    def us(seconds: float) -> int:  # microseconds since NOW
        return round(seconds * 1_000_000)

    w = us(10)
    at = [us(s) for s in (0, 5, 100, 19.9, 300, 321, 400)]
    assert correlation._spans(at, w) == [
        (-w, us(29.9)),
        (us(90), us(110)),
        (us(290), us(310)),
        (us(311), us(331)),
        (us(390), us(410)),
    ]
    monkeypatch.setattr(correlation, "MAX_SPANS", 3)
    capped = correlation._spans(at, w)  # the narrowest gaps (1 s, then 59 s) closed
    assert capped == [(-w, us(29.9)), (us(90), us(110)), (us(290), us(410))]


@pytest.mark.parametrize("max_spans", [64, 1, 2])
def test_a_backlog_batch_is_correlated_as_one_event_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_spans: int
) -> None:
    # A store catching up: one batch spans hours; stored rows lie near some of its events,
    # in the gaps between them and outside. Only rows within the window of an event count.
    monkeypatch.setattr(correlation, "MAX_SPANS", max_spans)
    cams = ["front", "back", "side"]

    def at(k: int, cam: str, seconds: float) -> Event:
        return make_event(cam, description=f"e{k}", timestamp=NOW + timedelta(seconds=seconds))

    history = [at(k, cams[k % 3], s) for k, s in enumerate((3, 1800, 3600, 3605, 7203, 9000))]
    batch = [at(100 + k, cams[(k + 1) % 3], s) for k, s in enumerate((0, 1, 3604, 7200, 7201))]
    one_by_one, batched = EventStore(tmp_path / "a"), EventStore(tmp_path / "b")
    try:
        for s in (one_by_one, batched):
            s.append(history)
        for ev in batch:
            one_by_one.save_batch([ev], None, 5.0)
        batched.save_batch(batch, None, 5.0)
        ids = [e.event_id for e in history + batch]
        want = [one_by_one.get(i).correlation_group_id for i in ids]  # type: ignore[union-attr]
        have = [batched.get(i).correlation_group_id for i in ids]  # type: ignore[union-attr]
        assert sum(g is not None for g in have) == 8  # 3 groups; 1800 s and 9000 s alone
        assert partition(have) == partition(want)
    finally:
        one_by_one.close()
        batched.close()


def test_a_resent_event_leaves_no_trace_of_the_attempt_its_insert_refused(
    store: EventStore,
) -> None:
    # A stored event comes back in a batch with another camera's event beside it. The first
    # attempt's insert meets the stored id: what its correlation did is undone, so the groups
    # are those of a batch without the re-send, and each start is remembered once.
    first = make_event("front", description="stored", timestamp=NOW)
    store.save_batch([first], None, 5.0)  # its start is remembered (no group)
    beside = make_event("back", description="new", timestamp=NOW + timedelta(seconds=1))
    starts = store._starts
    remembered = (list(starts.keys), list(starts.cameras), list(starts.groups))
    assert remembered == ([micros(first.timestamp)], ["front"], [None])
    with pytest.raises(DuplicateEventError):
        store.save_batch([first, beside], None, 5.0, stored=set())
    starts = store._starts  # the copy put back
    assert (starts.keys, starts.cameras, starts.groups) == remembered
    assert store.get(first.event_id).correlation_group_id is None  # type: ignore[union-attr]
    assert store.counts()["stored"] == 1

    handed = Handed()
    answers = saved(store, [(first, None), (beside, None)], handed)
    assert [(a[0].event_id, a[1]) for a in answers if a] == [
        (first.event_id, True),
        (beside.event_id, False),
    ]
    assert handed.ids == [beside.event_id]
    group = store.get(beside.event_id).correlation_group_id  # type: ignore[union-attr]
    assert group is not None
    assert store.get(first.event_id).correlation_group_id == group  # type: ignore[union-attr]
    assert [start for start, _group in store._starts.of("back")] == [micros(beside.timestamp)]


def test_a_resent_batch_with_nothing_to_insert_still_gives_stored_rows_their_groups(
    store: EventStore,
) -> None:
    # Rows stored without correlation (or before the window grew) meet a re-sent save: the
    # batch inserts nothing, yet the stored row it pulls into a group gets that group, the
    # one the store now remembers for both starts.
    first = make_event("front", description="stored", timestamp=NOW)
    beside = make_event("back", description="beside", timestamp=NOW + timedelta(seconds=1))
    store.append([first, beside])
    (again,) = store.save_batch([first], None, 5.0, stored={first.event_id})
    group = store.get(beside.event_id).correlation_group_id  # type: ignore[union-attr]
    assert group is not None and again.correlation_group_id == group
    assert store._starts.group_of("back", micros(beside.timestamp)) == group
    assert store.counts()["stored"] == 2
