"""Replay of unpublished events: the retry timer, ids sent lately, paced republishing.

Events handed over while connected but not sent (paho's queue full: `dropped`; a client error
or a broker that refused the message: `failed`) stay unpublished in the store and are retried
on a timer (`mqtt.retry_interval_s`, at most half of `replay_window_s`) by the same replay that
follows every (re)connect, so a broker that stays connected for days never strands them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pipelines.config import MQTTConfig
    from pipelines.events import Event

RECENT_IDS = 20_000  # ids sent lately: not replayed again on reconnect; the oldest go first
PACE_STEP_S = 0.01  # how often a replay looks at the pending queue while it is full
PACE_MAX_S = 30.0  # the longest a replay waits for room before it sends the next event anyway


def retry_interval(mqtt_config: MQTTConfig) -> float:
    """Seconds between retries of unsent events (0: never, as with replay_window_s 0)."""
    window = mqtt_config.replay_window_s
    return min(mqtt_config.retry_interval_s, window / 2) if window > 0 else window


class RetryTimer:
    """A one-shot timer armed by an unsent event; due only while connected. Thread-safe."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._at: float | None = None
        self.passes = 0  # replays the timer started

    def arm(self) -> None:
        """Start the timer unless it runs already (no-op with interval 0)."""
        if self._interval_s <= 0:
            return  # replay_window_s 0: the seed's behaviour, unsent events are dropped
        with self._lock:
            if self._at is None:
                self._at = self._clock() + self._interval_s

    def due(self, connected: bool) -> bool:
        """Whether it ran out while connected; then it is disarmed and the pass counted."""
        with self._lock:
            if self._at is None or self._clock() < self._at or not connected:
                return False
            self._at = None
            self.passes += 1
            return True

    def left_s(self) -> float | None:
        """Seconds until it is due (0 when overdue), or None when not armed."""
        with self._lock:
            at = self._at
        return None if at is None else max(0.0, at - self._clock())


class RecentIds:
    """Ids of events sent lately, at most `bound` (the oldest go first). Thread-safe."""

    def __init__(self, bound: int = RECENT_IDS) -> None:
        self._bound = bound
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        with self._lock:
            return event_id in self._ids

    def add(self, event_id: str) -> None:
        """Note an event as sent now."""
        with self._lock:
            self._ids[event_id] = None
            self._ids.move_to_end(event_id)
            while len(self._ids) > self._bound:
                self._ids.popitem(last=False)

    def discard(self, event_ids: Iterable[str]) -> None:
        """Forget events (the broker refused them: they are to be replayed)."""
        with self._lock:
            for event_id in event_ids:
                self._ids.pop(event_id, None)


class Link(Protocol):
    """The broker link as a replay sees it."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        ...

    @property
    def pending(self) -> int:
        """Messages handed over and not yet acknowledged."""
        ...


def republish(
    events: list[Event],
    send: Callable[[Event], bool],
    link: Link,
    *,
    limit: int,
    skip: Callable[[str], bool] = lambda _event_id: False,
    stopped: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send events in order while connected, waiting while `limit` are pending; how many sent."""
    sent = 0
    for event in events:
        if stopped() or not link.connected:
            break
        if skip(event.event_id):
            continue
        waited = 0.0
        while link.pending >= limit and waited < PACE_MAX_S and link.connected:
            sleep(PACE_STEP_S)
            waited += PACE_STEP_S
        if send(event):
            sent += 1
    return sent
