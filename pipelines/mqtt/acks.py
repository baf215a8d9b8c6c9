"""Ack bookkeeping of the publisher: acked ids on their way to the store, ack latencies.

paho's thread records acks (nothing slow there); the publisher's background thread takes them
in batches, so one `mark_published` call covers many acks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pipelines.mqtt.ports import PublishedStore, PublisherMetrics

logger = logging.getLogger(__name__)

MAX_ACKS_WAITING = 100_000  # acked ids kept while the store is away; older ones are let go
# Hand-over times kept for the latency metric; at the bound the oldest is forgotten (its ack
# latency is then not observed). Entries leave on ack, so only unacked messages pile up here.
MAX_SENT_TIMES = 100_000
# At most this many ack latencies are observed a second (a sample at high rates; counters stay
# exact), so the metric costs little however fast acks come.
LATENCY_SAMPLES_PER_S = 200


class AckBook:
    """Acked ids waiting for the store, and sampled ack latencies; thread-safe."""

    def __init__(
        self,
        *,
        max_waiting: int = MAX_ACKS_WAITING,
        max_sent: int = MAX_SENT_TIMES,
        samples_per_s: int = LATENCY_SAMPLES_PER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_waiting = max_waiting
        self._max_sent = max_sent
        self._samples_per_s = samples_per_s
        self._clock = clock
        self._lock = threading.Lock()
        self._acked: list[str] = []
        self._latency_ms: list[float] = []
        self._fresh = 0  # acks recorded since the last take (kept ids are not counted again)
        self._sent_at: dict[str, float] = {}
        self._window = (0.0, 0)  # (second it started, latency samples taken in it)
        self.let_go = 0  # acked ids dropped at the bound (the store still holds them unpublished)

    @property
    def waiting(self) -> int:
        """Acked ids not yet handed to the store."""
        with self._lock:
            return len(self._acked)

    def sent(self, event_id: str) -> None:
        """Note that an event was handed to the MQTT client now."""
        with self._lock:
            self._sent_at[event_id] = self._clock()
            while len(self._sent_at) > self._max_sent:
                del self._sent_at[next(iter(self._sent_at))]

    def unsent(self, event_id: str) -> None:
        """Forget a hand-over that did not happen (the event was not sent)."""
        with self._lock:
            self._sent_at.pop(event_id, None)

    def acked(self, event_ids: list[str]) -> None:
        """Record acked events (paho's thread: quick, never waits)."""
        now = self._clock()
        with self._lock:
            self._acked.extend(event_ids)
            self._fresh += len(event_ids)
            for event_id in event_ids:
                t0 = self._sent_at.pop(event_id, None)
                if t0 is not None and self._sample(now):
                    self._latency_ms.append((now - t0) * 1000.0)

    def take(self) -> tuple[list[str], list[float], int]:
        """Acked ids waiting, latencies (ms) sampled and acks recorded since the last take."""
        with self._lock:
            ids, self._acked = self._acked, []
            latencies, self._latency_ms = self._latency_ms, []
            fresh, self._fresh = self._fresh, 0
        return ids, latencies, fresh

    def keep(self, event_ids: list[str]) -> int:
        """Put ids back for the next take, keeping at most max_waiting (the oldest are let go:
        they stay unpublished in the store and a replay may send them again); how many went."""
        with self._lock:
            self._acked[:0] = event_ids
            excess = max(0, len(self._acked) - self._max_waiting)
            if excess:
                del self._acked[:excess]
                self.let_go += excess
        return excess

    def forward(self, store: PublishedStore | None, metrics: PublisherMetrics) -> int:
        """Hand what was taken to the store in one call and record the metrics; ids sent."""
        ids, latencies, fresh = self.take()
        for latency_ms in latencies:
            metrics.ack_latency(latency_ms)
        if fresh:
            metrics.acked(fresh)
        if not ids:
            return 0
        try:
            if store is None:  # publisher alone (tests): keep them for a later store
                raise LookupError("no event store")
            store.mark_published(ids)
        except Exception as exc:
            let_go = self.keep(ids)
            logger.debug("acks kept for later (%s): %d", type(exc).__name__, len(ids))
            if let_go:
                logger.warning("store away: %d acks let go (the events may be sent twice)", let_go)
            return 0
        return len(ids)

    def _sample(self, now: float) -> bool:
        """Whether to keep this ack's latency (at most samples_per_s); under the lock."""
        started, taken = self._window
        if now - started >= 1.0:
            started, taken = now, 0
        if taken >= self._samples_per_s:
            return False
        self._window = (started, taken + 1)
        return True
