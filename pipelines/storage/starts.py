"""The starts a store remembers per camera for correlation, ordered for bisecting.

A start is an integer: microseconds since the Unix epoch, UTC (`cursors.micros`). Comparing
two aware datetimes asks both for their offset, so a bisect over datetimes cost about ten times
one over integers; a batch bisects every camera's starts for each of its events.
"""

from __future__ import annotations

import bisect

REMEMBERED_PER_CAMERA = 256  # recent starts kept per camera (the latest ones)


class CameraStarts:
    """One camera's remembered starts (microseconds) in start order, bisected, never scanned,
    and the group each one has (None until a correlation gives it one)."""

    __slots__ = ("groups", "keys")

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.groups: list[str | None] = []

    def __bool__(self) -> bool:
        return bool(self.keys)

    def copy(self) -> CameraStarts:
        """An independent copy."""
        other = CameraStarts()
        other.keys, other.groups = list(self.keys), list(self.groups)
        return other

    def add(self, start: int, group: str | None) -> None:
        """Remember a start (after those equal to it)."""
        at = bisect.bisect_right(self.keys, start)
        self.keys.insert(at, start)
        self.groups.insert(at, group)

    def near(self, ts: int, window: int) -> list[tuple[int, str | None]]:
        """(start, group) of the starts within window of ts, in start order."""
        first = bisect.bisect_left(self.keys, ts - window)
        last = bisect.bisect_right(self.keys, ts + window)
        return list(zip(self.keys[first:last], self.groups[first:last], strict=True))

    def give(self, start: int, group: str) -> bool:
        """Give the starts equal to start that have no group this one; whether any exists."""
        first = bisect.bisect_left(self.keys, start)
        last = bisect.bisect_right(self.keys, start, first)
        for at in range(first, last):
            if self.groups[at] is None:
                self.groups[at] = group
        return last > first

    def group_of(self, start: int) -> str | None:
        """The first group of a start equal to start, or None."""
        first = bisect.bisect_left(self.keys, start)
        last = bisect.bisect_right(self.keys, start, first)
        return next((g for g in self.groups[first:last] if g is not None), None)

    def keep(self, lo: int, hi: int) -> None:
        """Forget the starts outside [lo, hi], and all but the latest REMEMBERED_PER_CAMERA."""
        first = bisect.bisect_left(self.keys, lo)
        last = bisect.bisect_right(self.keys, hi)
        first = max(first, last - REMEMBERED_PER_CAMERA)
        self.keys, self.groups = self.keys[first:last], self.groups[first:last]
