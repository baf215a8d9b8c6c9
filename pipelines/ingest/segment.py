"""Motion events from per-frame motion results: start, merge, end, cut, cooldown, key frames.

Rules (times are media times, `Frame.pts_s`):
- an event starts after `min_motion_frames` consecutive motion frames (it starts at the first);
- it ends once no motion was seen for `end_after_s` (it ends at the last motion frame); motion
  that resumes before then is merged in and counted in `merged_motion`;
- it is cut at `max_event_s`; continuing motion then starts a new event;
- after an event ends, no new event starts for `cooldown_s` (measured from its end).
Key frames (at most `max_frames`) are the peak-motion frame, the first, the last, then frames
spread evenly in between, in time order, downscaled so the long side is `key_frame_side`.

`PendingEvents` is the bounded queue of closed segments waiting for the VLM: when it is full, a
new segment is merged into the newest queued one (key frames of both, within `max_frames`, its
end extended), so detection never waits for the VLM and no motion is lost or unseen. It holds at
most one doorbell ring: a ring arriving while another waits replaces it (the newer frame) and is
counted as merged.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from pipelines.imaging import resize_long_side

if TYPE_CHECKING:
    from pipelines.config import MotionConfig
    from pipelines.ingest.motion import MotionResult
    from pipelines.ingest.sources import Frame

logger = logging.getLogger(__name__)

__all__ = ["EventSegmenter", "PendingEvents", "Segment", "ring_segment"]

_EPS = 1e-6


@dataclass(frozen=True)
class Segment:
    """One closed motion event with its key frames (time-ordered) and the peak frame."""

    start_wall: datetime
    end_wall: datetime
    start_pts: float
    end_pts: float
    key_frames: tuple[np.ndarray, ...] = field(repr=False)
    peak_index: int  # index into key_frames of the peak-motion frame
    frame_count: int  # frames from the first to the last motion frame, inclusive
    merged_motion: int  # motion bursts merged in after a short pause (0: one continuous burst)
    best_frame: np.ndarray = field(repr=False)  # the peak frame, for the thumbnail
    peak_score: float = 0.0
    zones: tuple[str, ...] = ()  # zones its motion touched, in first-touched order
    from_main: bool = False  # best frame from the main stream (a camera with a detect_source)

    @property
    def duration_s(self) -> float:
        """Media-time length of the event."""
        return self.end_pts - self.start_pts


LAZY_MAX_FRAMES = 8  # unscaled frames (pictures or RGB arrays) an open event's pool holds
LAZY_MAX_PIXELS = 1920 * 1080  # a larger picture is scaled as it is pooled


class _Kept:
    """A frame that may become a key frame, downscaled when it is chosen (`lazy`) or at once.

    Most pooled frames are never chosen, and scaling each as it comes costs more than decoding
    it (a decoder's picture), or more than motion (decord's RGB arrays). So a frame of at most
    1080p that is not a main stream's is kept unscaled: the decoder's picture (PyAV) or the
    frame's RGB array (decord's frames each own theirs, see `FileSource`); a pool holds at most
    LAZY_MAX_FRAMES of them, each up to 3 MB as a picture or 6 MB as RGB at 1080p. Other frames
    are scaled as they are pooled."""

    __slots__ = ("_frame", "_image", "_side", "pts", "wall")

    def __init__(self, frame: Frame, side: int, lazy: bool) -> None:
        self.pts, self.wall, self._side = frame.pts_s, frame.wall, side
        self._frame: Frame | None = None
        self._image: np.ndarray | None = None
        if lazy:
            self._frame = frame
        else:
            self._image = frame.fitted(side)

    @property
    def lazy(self) -> bool:
        """Whether the frame is still unscaled."""
        return self._image is None

    @property
    def image(self) -> np.ndarray:
        """The frame with its long side at most `side` pixels, made on first use."""
        if self._image is None:
            assert self._frame is not None
            self._image, self._frame = self._frame.fitted(self._side), None
        return self._image


@dataclass
class _OpenEvent:
    first: _Kept
    start_pts: float
    start_wall: datetime
    last_motion_pts: float
    last_motion_wall: datetime
    last_frame: Frame
    peak_frame: Frame
    peak_score: float
    frame_count: int  # frames seen so far (trailing still frames included)
    frames_at_last_motion: int
    merged: int = 0
    in_burst: bool = True
    pool: list[_Kept] = field(default_factory=list)
    zones: dict[str, None] = field(default_factory=dict)  # ordered set of zones touched
    stride: int = 1


class EventSegmenter:
    """Turns a stream of (frame, motion result) into closed motion `Segment`s."""

    def __init__(
        self,
        settings: MotionConfig,
        fps: float,
        *,
        key_frame_side: int = 384,
        best_frame_side: int | None = 1280,
        pool_size: int = 32,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.settings = settings
        self.fps = float(fps)
        self.key_frame_side = key_frame_side
        self.best_frame_side = best_frame_side
        self.pool_size = max(4, pool_size)
        # Frames beyond peak, first and last are picked evenly from the pool: twice the
        # picks is spread enough, and bounds the unscaled frames an open event holds.
        self._pool_cap = min(self.pool_size, max(4, 2 * int(settings.max_frames)))
        self._event: _OpenEvent | None = None
        self._run: list[tuple[Frame, MotionResult]] = []
        self._cooldown_until = float("-inf")
        self.events = 0

    @property
    def active(self) -> bool:
        """True while an event is open (the activity sensor is ON)."""
        return self._event is not None

    def _small(self, frame: Frame, pool: list[_Kept] | None = None) -> _Kept:
        # scaled only if it is chosen (see _Kept); at most LAZY_MAX_FRAMES unscaled in a pool
        lazy = (
            not frame.from_main  # a main stream's picture: often 4K, one per frame
            and frame.width * frame.height <= LAZY_MAX_PIXELS
            and (pool is None or sum(k.lazy for k in pool) < LAZY_MAX_FRAMES)
        )
        return _Kept(frame, self.key_frame_side, lazy)

    def feed(self, frame: Frame, result: MotionResult) -> list[Segment]:
        """Account for one frame; returns the events that this frame closed (usually none)."""
        closed: list[Segment] = []
        event = self._event
        if event is not None:
            # _EPS: pts differences like 4.1 - 2.1 must count as the full 2.0 s
            if frame.pts_s - event.start_pts >= self.settings.max_event_s - _EPS:
                closed.append(self._close(event, cut=True, frame=frame, result=result))
                event = None
            elif (
                not result.motion
                and frame.pts_s - event.last_motion_pts >= self.settings.end_after_s - _EPS
            ):
                closed.append(self._close(event, cut=False))
                event = None
            else:
                self._extend(event, frame, result)
                return closed
        if frame.pts_s < self._cooldown_until - _EPS:
            self._run.clear()
            return closed
        if not result.starts_event:  # with zones: motion in none of them starts nothing
            self._run.clear()
            return closed
        self._run.append((frame, result))
        if len(self._run) >= max(1, int(self.settings.min_motion_frames)):
            self._start()
        return closed

    def flush(self) -> list[Segment]:
        """Close the open event at the end of the stream (returns it, or nothing)."""
        self._run.clear()
        if self._event is None:
            return []
        return [self._close(self._event, cut=False)]

    def _start(self) -> None:
        run, self._run = self._run, []
        first_frame, first_result = run[0]
        event = _OpenEvent(
            first=self._small(first_frame),
            start_pts=first_frame.pts_s,
            start_wall=first_frame.wall,
            last_motion_pts=first_frame.pts_s,
            last_motion_wall=first_frame.wall,
            last_frame=first_frame,
            peak_frame=first_frame,
            peak_score=first_result.score,
            frame_count=1,
            frames_at_last_motion=1,
        )
        event.pool.append(event.first)
        event.zones.update(dict.fromkeys(first_result.zones))
        self._event = event
        for frame, result in run[1:]:
            self._extend(event, frame, result)
        logger.debug("motion event started at pts %.2f", event.start_pts)

    def _extend(self, event: _OpenEvent, frame: Frame, result: MotionResult) -> None:
        event.frame_count += 1
        if not result.motion:
            event.in_burst = False
            return
        if not event.in_burst:
            event.merged += 1
            event.in_burst = True
        event.last_motion_pts = frame.pts_s
        event.last_motion_wall = frame.wall
        event.last_frame = frame
        event.frames_at_last_motion = event.frame_count
        event.zones.update(dict.fromkeys(result.zones))
        if result.score > event.peak_score:
            event.peak_score = result.score
            event.peak_frame = frame
        if (event.frame_count - 1) % event.stride == 0:
            event.pool.append(self._small(frame, event.pool))
            if len(event.pool) > self._pool_cap:
                # keep memory bounded: halve the pool and sample half as often from now on
                event.pool = event.pool[::2]
                event.stride *= 2

    def _close(
        self,
        event: _OpenEvent,
        *,
        cut: bool,
        frame: Frame | None = None,
        result: MotionResult | None = None,
    ) -> Segment:
        self._event = None
        if cut and frame is not None and result is not None and result.motion:
            # the cutting frame belongs to this event
            self._extend(event, frame, result)
        end_pts, end_wall = event.last_motion_pts, event.last_motion_wall
        segment = self._build(event, end_pts, end_wall)
        self._cooldown_until = end_pts + float(self.settings.cooldown_s)
        if cut:
            # motion still in progress after a cut restarts immediately (cooldown permitting)
            self._cooldown_until = max(self._cooldown_until, end_pts + 2 * _EPS)
        self.events += 1
        logger.debug(
            "motion event %.2f-%.2f closed (%s, %d frames)",
            segment.start_pts,
            segment.end_pts,
            "cut" if cut else "still",
            segment.frame_count,
        )
        return segment

    def _build(self, event: _OpenEvent, end_pts: float, end_wall: datetime) -> Segment:
        max_frames = max(1, int(self.settings.max_frames))
        peak = self._small(event.peak_frame)
        last = self._small(event.last_frame) if event.last_frame is not event.peak_frame else peak
        chosen: dict[float, _Kept] = {peak.pts: peak}
        for candidate in (event.first, last):
            if len(chosen) < max_frames:
                chosen.setdefault(candidate.pts, candidate)
        remaining = [k for k in event.pool if k.pts not in chosen]
        need = max_frames - len(chosen)
        if need > 0 and remaining:
            picks = np.linspace(0, len(remaining) - 1, num=min(need, len(remaining)))
            for i in sorted({round(float(p)) for p in picks}):
                chosen[remaining[i].pts] = remaining[i]
        ordered = [chosen[pts] for pts in sorted(chosen)]
        peak_index = next(i for i, k in enumerate(ordered) if k.pts == peak.pts)
        peak_frame = event.peak_frame
        if self.best_frame_side is None:
            best = peak_frame.image
        else:
            best = peak_frame.fitted(self.best_frame_side)
        return Segment(
            start_wall=event.start_wall,
            end_wall=end_wall,
            start_pts=event.start_pts,
            end_pts=end_pts,
            key_frames=tuple(np.ascontiguousarray(k.image) for k in ordered),
            peak_index=peak_index,
            frame_count=event.frames_at_last_motion,
            merged_motion=event.merged,
            best_frame=np.ascontiguousarray(best),
            peak_score=event.peak_score,
            zones=tuple(event.zones),
            from_main=peak_frame.from_main,
        )


class PendingEvents:
    """Bounded FIFO of segments waiting for analysis; when full, new motion merges into the newest.

    Doorbell rings go to the front of the queue and do not count against `max_pending` (the
    user is waiting for them), but at most one ring waits: a newer one replaces it (one frame
    held, however often the button is pressed) and counts in `rings_merged`.
    """

    def __init__(self, max_pending: int, *, max_frames: int | None = None) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.max_pending = max_pending
        self.max_frames = max_frames  # key frames a merged segment keeps (None: as many as each)
        self._motion: deque[Segment] = deque()
        self._ring: Segment | None = None
        self.pushed = 0  # motion segments accepted (queued or merged)
        self.merged = 0  # of those, merged into a queued segment because the queue was full
        self.max_depth = 0  # high-water mark of queued motion segments
        self.rings_merged = 0  # rings that replaced a ring still waiting

    def __len__(self) -> int:
        return len(self._motion) + (self._ring is not None)

    @property
    def ring_pending(self) -> bool:
        """Whether a doorbell ring waits for analysis."""
        return self._ring is not None

    @property
    def depth(self) -> int:
        """Queued motion segments (rings excluded); never above max_pending."""
        return len(self._motion)

    def push(self, segment: Segment) -> bool:
        """Queue a motion segment; True when it was merged into the newest queued one."""
        self.pushed += 1
        if len(self._motion) < self.max_pending:
            self._motion.append(segment)
            self.max_depth = max(self.max_depth, len(self._motion))
            return False
        self._motion[-1] = merge_segments(self._motion[-1], segment, self.max_frames)
        self.merged += 1
        return True

    def push_ring(self, segment: Segment) -> bool:
        """Queue a doorbell ring ahead of every motion segment; True when it replaced one."""
        merged = self._ring is not None
        if merged:
            self.rings_merged += 1
        self._ring = segment
        return merged

    def pop(self) -> tuple[Segment, bool] | None:
        """The next (segment, is_ring) to analyse, rings first; None when empty."""
        if self._ring is not None:
            ring, self._ring = self._ring, None
            return ring, True
        if self._motion:
            return self._motion.popleft(), False
        return None


def ring_segment(
    image: np.ndarray,
    at: datetime,
    key_frame_side: int,
    best_frame_side: int | None,
    *,
    from_main: bool = False,
) -> Segment:
    """A doorbell ring as a one-frame segment of the newest frame, at wall clock `at`."""
    return Segment(
        start_wall=at,
        end_wall=at,
        start_pts=0.0,
        end_pts=0.0,
        key_frames=(np.ascontiguousarray(resize_long_side(image, key_frame_side)),),
        peak_index=0,
        frame_count=1,
        merged_motion=0,
        best_frame=np.ascontiguousarray(
            image if best_frame_side is None else resize_long_side(image, best_frame_side)
        ),
        from_main=from_main,
    )


def merge_segments(older: Segment, newer: Segment, max_frames: int | None = None) -> Segment:
    """One segment spanning both: key frames of both (at most `max_frames`, default the larger
    of the two counts), the later end, counts added up, zones joined."""
    best, score, from_main = older.best_frame, older.peak_score, older.from_main
    if newer.peak_score > older.peak_score:
        best, score, from_main = newer.best_frame, newer.peak_score, newer.from_main
    limit = max_frames or max(len(older.key_frames), len(newer.key_frames))
    frames, peak_index = _merged_key_frames(older, newer, limit)
    return replace(
        older,
        end_wall=max(older.end_wall, newer.end_wall),
        end_pts=max(older.end_pts, newer.end_pts),
        key_frames=frames,
        peak_index=peak_index,
        frame_count=older.frame_count + newer.frame_count,
        merged_motion=older.merged_motion + newer.merged_motion + 1,
        best_frame=best,
        peak_score=score,
        zones=tuple(dict.fromkeys(older.zones + newer.zones)),
        from_main=from_main,
    )


def _merged_key_frames(
    older: Segment, newer: Segment, limit: int
) -> tuple[tuple[np.ndarray, ...], int]:
    """Both segments' key frames in time order, thinned to `limit`: each segment's peak first,
    then frames spread evenly over the rest (so the newer motion is seen, not only counted)."""
    frames = older.key_frames + newer.key_frames
    newer_peak = len(older.key_frames) + newer.peak_index
    peak = newer_peak if newer.peak_score > older.peak_score else older.peak_index
    limit = max(1, limit)
    chosen = [peak]
    if limit > 1:
        chosen.append(older.peak_index if peak == newer_peak else newer_peak)
    rest = [i for i in range(len(frames)) if i not in chosen]
    need = limit - len(chosen)
    if need > 0 and rest:
        picks = np.linspace(0, len(rest) - 1, num=min(need, len(rest)))
        chosen += [rest[round(float(p))] for p in picks]
    kept = sorted(chosen)  # distinct: the peaks are excluded from `rest`
    return tuple(frames[i] for i in kept), kept.index(peak)
