"""Correlation groups compared between runs: ids differ, the grouping must not."""

from __future__ import annotations


def partition(groups: list[str | None]) -> list[int | None]:
    """Group ids as the order each first appears (None stays None): two runs group alike when
    their partitions are equal."""
    seen: dict[str, int] = {}
    return [None if g is None else seen.setdefault(g, len(seen)) for g in groups]
