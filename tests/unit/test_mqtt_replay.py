"""Replay of unpublished events (pipelines.mqtt.replay): the retry timer, recent ids, pacing."""

from __future__ import annotations

from pipelines.mqtt.replay import RecentIds, RetryTimer, republish, retry_interval
from tests.support.mqtt import make_event, mqtt_settings


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def test_retry_interval_is_at_most_half_the_replay_window() -> None:
    assert retry_interval(mqtt_settings(1883, "t", retry_interval_s=60, replay_window_s=3600)) == 60
    assert retry_interval(mqtt_settings(1883, "t", retry_interval_s=60, replay_window_s=20)) == 10
    assert retry_interval(mqtt_settings(1883, "t", replay_window_s=0)) == 0


def test_retry_timer_is_armed_once_and_due_only_while_connected() -> None:
    clock = Clock()
    timer = RetryTimer(5.0, clock)
    assert timer.left_s() is None and not timer.due(connected=True)
    timer.arm()
    clock.now += 3
    timer.arm()  # armed already: the first deadline stands
    assert timer.left_s() == 2.0
    clock.now += 2
    assert not timer.due(connected=False)  # a replay needs the broker
    assert timer.due(connected=True) and timer.passes == 1
    assert timer.left_s() is None and not timer.due(connected=True)  # disarmed


def test_retry_timer_with_interval_zero_never_arms() -> None:
    timer = RetryTimer(0.0)
    timer.arm()
    assert timer.left_s() is None


def test_recent_ids_are_bounded_oldest_first() -> None:
    recent = RecentIds(bound=2)
    for event_id in "abc":
        recent.add(event_id)
    assert "a" not in recent and "b" in recent and "c" in recent
    recent.discard(["b"])
    assert "b" not in recent


class Link:
    """The broker link as a replay sees it: pending drains by one each time the replay sleeps."""

    def __init__(self, pending: int = 0, connected: bool = True) -> None:
        self.pending = pending
        self.connected = connected
        self.sleeps = 0

    def sleep(self, _s: float) -> None:
        self.sleeps += 1
        self.pending = max(0, self.pending - 1)


def test_republish_sends_in_order_pacing_on_the_pending_queue() -> None:
    events = [make_event() for _ in range(4)]
    link = Link(pending=3)
    sent: list[str] = []

    def send(event: object) -> bool:
        sent.append(event.event_id)  # type: ignore[attr-defined]
        return True

    skipped = events[1].event_id
    count = republish(events, send, link, limit=2, skip=lambda i: i == skipped, sleep=link.sleep)
    assert count == 3 and sent == [e.event_id for e in events if e.event_id != skipped]
    assert link.sleeps == 2  # it waited until fewer than `limit` were pending


def test_republish_stops_when_the_link_drops_or_the_publisher_stops() -> None:
    events = [make_event() for _ in range(3)]
    link = Link()
    sent: list[object] = []

    def send(event: object) -> bool:
        sent.append(event)
        link.connected = len(sent) < 2
        return True

    assert republish(events, send, link, limit=10) == 2
    assert republish(events, send, Link(), limit=10, stopped=lambda: True) == 0
