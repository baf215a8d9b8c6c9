"""Retention and the wall clock (pipelines.storage.clock): a step forward or back deletes nothing,
within a run and across a restart; a steadily running clock is trusted again after a day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pipelines.storage.clock as clock_module
from pipelines.events import Event, utcnow
from pipelines.storage import EventStore
from pipelines.storage.clock import TRUST_AFTER_S, ClockGuard

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


class Clocks:
    """A wall and a monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = NOW
        self.mono = 1000.0

    def advance(self, seconds: float, *, wall_step: timedelta = timedelta()) -> None:
        self.mono += seconds
        self.now += timedelta(seconds=seconds) + wall_step


def guard(clocks: Clocks, seen: datetime | None = None) -> ClockGuard:
    return ClockGuard(seen, max_gap_s=7 * 86400, wall=lambda: clocks.now, mono=lambda: clocks.mono)


def test_a_steady_clock_is_trusted() -> None:
    clocks = Clocks()
    g = guard(clocks)
    for _ in range(3):
        assert g.check()[1] is None
        clocks.advance(86400)
    assert g.seen == clocks.now - timedelta(days=1)


def test_a_step_forward_is_skipped_until_the_clock_ran_steadily_for_a_day() -> None:
    clocks = Clocks()
    g = guard(clocks)
    assert g.check()[1] is None
    clocks.advance(3600, wall_step=timedelta(days=3 * 365))  # NTP step, or a bad RTC
    assert "stepped forward" in str(g.check()[1])
    clocks.advance(TRUST_AFTER_S / 2)
    assert "stepped recently" in str(g.check()[1])
    clocks.advance(TRUST_AFTER_S / 2)
    assert g.check()[1] is None and g.skipped == 2


def test_a_clock_behind_what_the_store_has_seen_is_skipped() -> None:
    clocks = Clocks()
    g = guard(clocks, seen=NOW + timedelta(days=2))
    assert "behind" in str(g.check()[1])


def test_after_a_restart_a_clock_far_ahead_of_the_store_waits() -> None:
    clocks = Clocks()
    g = guard(clocks, seen=NOW - timedelta(days=30))
    assert "far ahead" in str(g.check()[1])
    near = guard(clocks, seen=NOW - timedelta(days=2))  # a weekend off: fine
    assert near.check()[1] is None


def _event(at: datetime) -> Event:
    return Event(
        camera_id="front",
        camera_name="Front",
        description="x",
        objects_detected=(),
        confidence=1,
        source_type="rtsp",
        timestamp=at,
    )


def test_a_clock_jump_does_not_delete_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()  # rows are stored at the real time: the guard's first mark
    wall = {"now": now}
    monkeypatch.setattr(clock_module, "utcnow", lambda: wall["now"])
    store = EventStore(tmp_path / "data", retention_days=30)
    store.append([_event(now - timedelta(days=40)), _event(now - timedelta(days=1))], {})
    assert store.apply_retention() == 1  # a sane clock: the 40-day-old event goes
    wall["now"] = now + timedelta(days=5 * 365)  # the clock jumps five years ahead
    assert store.apply_retention() == 0 and store.counts()["stored"] == 1
    store.close()
    reopened = EventStore(tmp_path / "data", retention_days=30)  # and across a restart
    try:
        assert reopened.apply_retention() == 0 and reopened.counts()["stored"] == 1
        wall["now"] = now - timedelta(days=3)  # a clock that went back deletes nothing either
        reopened._clock = None
        assert reopened.apply_retention() == 0 and reopened.counts()["stored"] == 1
    finally:
        reopened.close()


def test_the_first_pass_on_a_store_from_before_the_mark_is_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `clock_seen` yet (a store older than the guard): the newest row's storing time
    stands in, so a clock years ahead at the first pass deletes nothing."""
    store = EventStore(tmp_path / "data", retention_days=30)
    store.append([_event(utcnow() - timedelta(days=1))], {})
    monkeypatch.setattr(clock_module, "utcnow", lambda: utcnow() + timedelta(days=3 * 365))
    try:
        assert store.apply_retention() == 0 and store.counts()["stored"] == 1
    finally:
        store.close()
