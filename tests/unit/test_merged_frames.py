"""Motion merged into a queued event is seen: its key frames reach the VLM request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from pipelines.ingest.segment import PendingEvents, Segment, merge_segments

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def seg(start: float, n: int, *, peak: int = 0, score: float = 0.1, zones: tuple = ()) -> Segment:
    """A segment whose key frame k is filled with the value start*10 + k (to tell them apart)."""
    frames = tuple(np.full((4, 4, 3), int(start * 10 + k), np.uint8) for k in range(n))
    return Segment(
        start_wall=T0 + timedelta(seconds=start),
        end_wall=T0 + timedelta(seconds=start + 1),
        start_pts=start,
        end_pts=start + 1,
        key_frames=frames,
        peak_index=peak,
        frame_count=5,
        merged_motion=0,
        best_frame=frames[peak],
        peak_score=score,
        zones=zones,
    )


def ids(segment: Segment) -> list[int]:
    return [int(f[0, 0, 0]) for f in segment.key_frames]


def test_merged_segment_keeps_key_frames_of_both_within_max_frames() -> None:
    older, newer = seg(1, 3, peak=1, score=0.2), seg(5, 3, peak=2, score=0.6)
    merged = merge_segments(older, newer, 4)
    assert len(merged.key_frames) == 4
    frames = ids(merged)
    assert frames == sorted(frames)  # time order
    assert 11 in frames and 52 in frames  # both peaks
    assert any(f >= 50 for f in frames) and any(f < 50 for f in frames)
    assert ids(merged)[merged.peak_index] == 52  # the stronger peak
    assert merged.best_frame is newer.best_frame
    # room for all: nothing dropped
    assert ids(merge_segments(older, newer, 16)) == [10, 11, 12, 50, 51, 52]
    # one frame only: the stronger peak
    assert ids(merge_segments(older, newer, 1)) == [52]
    # no limit given: as many as the larger segment holds, still from both
    default = merge_segments(older, newer)
    assert len(default.key_frames) == 3 and {11, 52} <= set(ids(default))


def test_queue_merges_newer_frames_and_zones_into_the_newest_event() -> None:
    queue = PendingEvents(1, max_frames=3)
    queue.push(seg(1, 3, zones=("driveway",)))
    for start in (3, 5, 7):
        assert queue.push(seg(start, 3, peak=1, score=0.1 + start / 10, zones=("porch",)))
    item = queue.pop()
    assert item is not None
    merged = item[0]
    assert len(merged.key_frames) == 3
    assert ids(merged)[merged.peak_index] == 71  # the strongest, newest motion is shown
    assert merged.zones == ("driveway", "porch")
    assert merged.merged_motion == 3 and merged.end_pts == 8
