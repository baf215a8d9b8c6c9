"""Flow control and retry pacing of the camera actor, as plain Python: PendingEvents, Backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pipelines.ingest.segment import PendingEvents, Segment, merge_segments
from pipelines.ingest.sources import Backoff

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def seg(
    start: float, end: float, *, frames: int = 5, merged: int = 0, score: float = 0.1
) -> Segment:
    key = np.full((4, 4, 3), int(start) % 256, dtype=np.uint8)
    return Segment(
        start_wall=T0 + timedelta(seconds=start),
        end_wall=T0 + timedelta(seconds=end),
        start_pts=start,
        end_pts=end,
        key_frames=(key, key + 1),
        peak_index=0,
        frame_count=frames,
        merged_motion=merged,
        best_frame=key,
        peak_score=score,
    )


def test_queue_is_fifo_until_full_then_merges_into_newest() -> None:
    queue = PendingEvents(2)
    assert not queue.push(seg(0, 1))
    assert not queue.push(seg(2, 3))
    assert queue.push(seg(4, 5, frames=3, merged=1))
    assert queue.push(seg(6, 7, frames=2))
    assert queue.depth == 2 and queue.max_depth == 2
    assert queue.pushed == 4 and queue.merged == 2
    first = queue.pop()
    assert first is not None and first[0].start_pts == 0 and first[1] is False
    second = queue.pop()
    assert second is not None
    newest = second[0]
    # the older key frames are kept; the end, frame count and merge count grow
    assert newest.start_pts == 2 and newest.end_pts == 7
    assert newest.end_wall == T0 + timedelta(seconds=7)
    assert newest.frame_count == 5 + 3 + 2
    assert newest.merged_motion == 0 + (1 + 1) + 1
    assert int(newest.key_frames[0][0, 0, 0]) == 2
    assert queue.pop() is None and len(queue) == 0
    # room again: no merge
    assert not queue.push(seg(8, 9))


def test_rings_jump_the_queue_and_at_most_one_waits() -> None:
    queue = PendingEvents(1)
    queue.push(seg(0, 1))
    assert queue.push_ring(seg(5, 5, frames=1)) is False
    assert queue.ring_pending
    # a second ring while one waits replaces it (the newer frame): one ring, one frame held
    assert queue.push_ring(seg(6, 6, frames=1)) is True
    for k in range(1000):
        queue.push_ring(seg(7 + k, 7 + k, frames=1))
    assert queue.depth == 1 and len(queue) == 2 and queue.merged == 0
    assert queue.rings_merged == 1001
    order = [queue.pop() for _ in range(3)]
    assert [(item[0].start_pts, item[1]) for item in order if item is not None] == [
        (1006, True),
        (0, False),
    ]
    assert order[2] is None and not queue.ring_pending


def test_merge_keeps_the_better_thumbnail() -> None:
    weak, strong = seg(0, 1, score=0.1), seg(2, 3, score=0.9)
    assert merge_segments(weak, strong).best_frame is strong.best_frame
    assert merge_segments(strong, weak).best_frame is strong.best_frame
    with pytest.raises(ValueError):
        PendingEvents(0)


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    backoff = Backoff(1.0, 60.0)
    delays = [backoff.next_delay() for _ in range(9)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    backoff.reset()
    assert backoff.next_delay() == 1.0
    with pytest.raises(ValueError):
        Backoff(0, 1)
