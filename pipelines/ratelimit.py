"""Per-key token buckets: how often a doorbell ring is accepted from one surface (HTTP, MQTT).

Plain Python, thread-safe (MQTT calls it on paho's thread, the API on its event loop). The
number of keys is bounded: beyond `max_keys` the least recently used bucket is forgotten, so a
flood of made-up camera ids cannot grow memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimiter"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allow `per_minute` events per key, in bursts of up to `burst` (default: per_minute)."""

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate_per_s = per_minute / 60.0
        self.burst = float(burst if burst is not None else per_minute)
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self.max_keys = max(1, max_keys)
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()
        self.allowed = 0
        self.limited = 0

    def allow(self, key: str) -> bool:
        """Take a token for key: True when allowed, False (counted) when over the rate."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(self.burst, now)
                self._buckets[key] = bucket
                while len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate_per_s)
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                self.allowed += 1
                return True
            self.limited += 1
            return False

    def retry_after_s(self, key: str) -> float:
        """Seconds until key has a token again (0 when it has one now)."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            elapsed = max(0.0, self._clock() - bucket.updated)
            tokens = min(self.burst, bucket.tokens + elapsed * self.rate_per_s)
            return max(0.0, (1.0 - tokens) / self.rate_per_s)

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)
