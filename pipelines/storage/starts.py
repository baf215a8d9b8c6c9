"""The starts a store remembers for correlation: one index over every camera, in start order.

A start is an integer: microseconds since the Unix epoch, UTC (`cursors.micros`). Comparing
two aware datetimes asks both for their offset, so a bisect over datetimes cost about ten times
one over integers. The index is one list for all cameras: an event looks up the other cameras'
starts within its window with two bisects and reads only those (and the camera's own starts
that lie there), so the cost does not grow with the number of cameras.
"""

from __future__ import annotations

import bisect
from collections import Counter

REMEMBERED_PER_CAMERA = 256  # recent starts kept per camera (the latest ones)

# (distance from the start being correlated, camera_id, start, group or None); microseconds
Near = tuple[int, str, int, str | None]


def between(keys: list[int], lo: int, hi: int) -> tuple[int, int]:
    """The slice [first, last) of the sorted keys that lie in [lo, hi]; first == last: none
    (the usual event's window: two comparisons after one bisect)."""
    first = bisect.bisect_left(keys, lo)
    if first == len(keys) or keys[first] > hi:
        return first, first
    return first, bisect.bisect_right(keys, hi, first)


class RememberedStarts:
    """Every camera's remembered starts in start order (equal starts in the order they were
    added), the camera of each and the group each has (None until a correlation gives it one);
    bisected, scanned only to prune (`keep`) and by `of`."""

    __slots__ = ("cameras", "groups", "keys")

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.cameras: list[str] = []
        self.groups: list[str | None] = []

    def __bool__(self) -> bool:
        return bool(self.keys)

    def copy(self) -> RememberedStarts:
        """An independent copy."""
        other = RememberedStarts()
        other.keys, other.cameras = list(self.keys), list(self.cameras)
        other.groups = list(self.groups)
        return other

    def add(self, camera_id: str, start: int, group: str | None) -> None:
        """Remember a start of camera_id (after those equal to it)."""
        at = bisect.bisect_right(self.keys, start)
        self.keys.insert(at, start)
        self.cameras.insert(at, camera_id)
        self.groups.insert(at, group)

    def near(self, camera_id: str, ts: int, window: int) -> list[Near]:
        """The other cameras' starts within window of ts, in start order."""
        keys = self.keys
        first, last = between(keys, ts - window, ts + window)
        if first == last:
            return []  # the usual event: none near, no list made
        cameras, groups = self.cameras, self.groups
        return [
            (abs(keys[i] - ts), cameras[i], keys[i], groups[i])
            for i in range(first, last)
            if cameras[i] != camera_id
        ]

    def give(self, camera_id: str, start: int, group: str) -> bool:
        """Give camera_id's starts equal to start that have no group this one; whether the
        camera has such a start."""
        first, last = between(self.keys, start, start)
        found = False
        for at in range(first, last):
            if self.cameras[at] == camera_id:
                found = True
                if self.groups[at] is None:
                    self.groups[at] = group
        return found

    def group_of(self, camera_id: str, start: int) -> str | None:
        """The first group of camera_id's starts equal to start, or None."""
        first, last = between(self.keys, start, start)
        return next(
            (
                self.groups[at]
                for at in range(first, last)
                if self.cameras[at] == camera_id and self.groups[at] is not None
            ),
            None,
        )

    def keep(self, lo: int, hi: int) -> None:
        """Forget the starts outside [lo, hi], and of each camera all but the latest
        REMEMBERED_PER_CAMERA."""
        first, last = between(self.keys, lo, hi)
        keys, cameras = self.keys[first:last], self.cameras[first:last]
        groups = self.groups[first:last]
        counts = Counter(cameras)
        if counts and max(counts.values()) > REMEMBERED_PER_CAMERA:
            seen: Counter[str] = Counter()
            kept = [False] * len(keys)
            for at in range(len(keys) - 1, -1, -1):  # the latest first
                seen[cameras[at]] += 1
                kept[at] = seen[cameras[at]] <= REMEMBERED_PER_CAMERA
            keys = [k for k, ok in zip(keys, kept, strict=True) if ok]
            cameras = [c for c, ok in zip(cameras, kept, strict=True) if ok]
            groups = [g for g, ok in zip(groups, kept, strict=True) if ok]
        self.keys, self.cameras, self.groups = keys, cameras, groups

    def of(self, camera_id: str) -> list[tuple[int, str | None]]:
        """(start, group) of camera_id's starts, in start order (a scan: for tests and
        diagnostics, not the correlation's path)."""
        return [
            (start, group)
            for start, camera, group in zip(self.keys, self.cameras, self.groups, strict=True)
            if camera == camera_id
        ]
