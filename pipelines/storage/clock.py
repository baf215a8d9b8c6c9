"""Whether the wall clock can be trusted to expire data: a step forward or back skips retention.

Retention deletes what is older than `retention_days` by the wall clock, so a board that boots
with a clock years ahead, or an NTP step, would delete every row at the next pass, and a clock
that went back would stamp new rows in the past. `ClockGuard` compares the wall clock with the
monotonic clock between passes and with the latest wall time the store has seen (kept in its
`meta` table across restarts):

- **Back:** the wall clock is more than TOLERANCE_S behind the latest time seen: skip.
- **Forward:** more than TOLERANCE_S ahead of where the monotonic clock says it should be (or,
  after a restart, more than `max_gap_s` ahead of the latest time seen): skip, and trust the
  new clock only once it has run steadily for TRUST_AFTER_S of monotonic time (a real jump
  was a real jump; a wrong clock gets a day to be noticed and fixed — it is logged).

A skipped pass deletes nothing; the next trusted one catches up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from pipelines.events import as_utc, utcnow

logger = logging.getLogger(__name__)

TOLERANCE_S = 3600.0  # clock drift and adjustments smaller than this are normal
TRUST_AFTER_S = 86_400.0  # a stepped clock is trusted after running steadily this long


def _since_boot() -> float:
    """A monotonic clock that keeps counting through a suspend (Linux); else time.monotonic."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class ClockGuard:
    """Says, before each retention pass, whether the wall clock looks sane (see module doc)."""

    def __init__(
        self,
        seen: datetime | None,
        *,
        max_gap_s: float,
        wall: Callable[[], datetime] | None = None,
        mono: Callable[[], float] | None = None,
    ) -> None:
        self.seen = None if seen is None else as_utc(seen)  # the latest trusted wall time
        self._max_gap_s = max(max_gap_s, TOLERANCE_S)
        self._wall = wall or (lambda: utcnow())  # looked up at each call (tests patch it)
        self._mono = mono or _since_boot
        self._last: tuple[datetime, float] | None = None  # (wall, mono) of the last check
        self._suspect_since: float | None = None  # mono time a step was first seen
        self.skipped = 0

    def check(self) -> tuple[datetime, str | None]:
        """(now, None) when retention may use now; (now, why) when this pass is skipped."""
        now, mono = as_utc(self._wall()), self._mono()
        why = self._step(now, mono)
        self._last = (now, mono)
        if why is None:
            self._suspect_since = None
            self.seen = now if self.seen is None else max(self.seen, now)
            return now, None
        if self._suspect_since is None:
            self._suspect_since = mono
        if mono - self._suspect_since >= TRUST_AFTER_S:
            logger.warning("retention: trusting the wall clock again after a step (%s)", why)
            self._suspect_since = None
            self.seen = now
            return now, None
        self.skipped += 1
        logger.warning("retention skipped: %s", why)
        return now, why

    def _step(self, now: datetime, mono: float) -> str | None:
        tolerance = timedelta(seconds=TOLERANCE_S)
        if self.seen is not None and now < self.seen - tolerance:
            return (
                f"the wall clock ({now:%Y-%m-%d %H:%M}) is behind this store's "
                f"({self.seen:%Y-%m-%d %H:%M})"
            )
        if self._last is not None:
            last_wall, last_mono = self._last
            expected = last_wall + timedelta(seconds=mono - last_mono)
            if now > expected + tolerance:
                return f"the wall clock stepped forward by {now - expected} since the last pass"
            if self._suspect_since is not None:
                return (
                    "the wall clock stepped recently; it is trusted after a day of steady running"
                )
        elif self.seen is not None and now > self.seen + timedelta(seconds=self._max_gap_s):
            return (
                f"the wall clock ({now:%Y-%m-%d %H:%M}) is far ahead of this store's last time "
                f"({self.seen:%Y-%m-%d %H:%M}); it is trusted after a day of steady running"
            )
        return None
