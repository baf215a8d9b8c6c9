"""Near-duplicate suppression: skip the VLM when an event looks like the last analysed one.

Each event's best frame gets a perceptual fingerprint: the frame in grey, area-averaged down to
`GRID` x `GRID` cells (block means), then normalised to zero mean and unit standard deviation,
so that a brighter or darker exposure of the same scene gives the same fingerprint. The distance
of two fingerprints is the number of cells whose normalised value differs by more than
`CELL_TOLERANCE` (half the frame's contrast). Within `vlm.dedupe.window_s` of the last analysed
event of the same camera and at most `max_distance` cells apart, the event reuses that event's
description, objects and confidence (`provider_used: "reused"`, `reused_from`: its id).

Why block means and not a 64/256-bit dHash: on the sample scenes (320x240 to 1280x720, sensor
noise up to sigma 16 and JPEG quality 60) a 16x16 dHash flipped 0-3 signature for noise alone and
only 2-4 signature for a new small person or car, so no threshold separated "same scene" from "new
object". The normalised block means changed 0 cells for noise and exposure changes, and at least
2 cells for every new object tried; the default `max_distance` of 1 sits between.

Only events the VLM really analysed become references (never a reused, throttled or fallback
one), so a reference is at most `window_s` old: a static scene is described afresh at least
that often. While an event is with the VLM, a near-identical event of the same camera waits for
its answer instead of paying for a second call (`Deduper.lookup`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

import cv2
import numpy as np

from pipelines.events import REUSED_PROVIDER
from pipelines.vlm.types import VLMRequest, VLMResult

__all__ = [
    "CELL_TOLERANCE",
    "GRID",
    "REUSED_PROVIDER",
    "Analysed",
    "Deduper",
    "Lookup",
    "distance",
    "fingerprint",
    "reused_result",
]

GRID = 32
CELL_TOLERANCE = 0.5  # in units of the frame's own standard deviation


def fingerprint(image: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Normalised grey block means (grid x grid float32) of an RGB (H,W,3) or grey image."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    cells = cv2.resize(grey, (grid, grid), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (cells - cells.mean()) / max(float(cells.std()), 1.0)


def distance(a: np.ndarray, b: np.ndarray) -> int:
    """How many cells of two fingerprints differ by more than CELL_TOLERANCE."""
    return int(np.count_nonzero(np.abs(a - b) > CELL_TOLERANCE))


@dataclass(frozen=True, slots=True)
class Analysed:
    """What the VLM said about an event, kept as the reference for the next ones."""

    event_id: str
    at: datetime  # the event's start
    signature: np.ndarray = field(repr=False)
    description: str
    objects: tuple[str, ...]
    confidence: int
    ai_confidence: int | None
    confidence_source: str | None = None


@dataclass(slots=True, eq=False)
class _Ticket:
    """An event being analysed right now: near-identical events wait for its answer."""

    signature: np.ndarray
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of `Deduper.lookup`: a reference to reuse, or a ticket to analyse under."""

    reuse: Analysed | None
    signature: np.ndarray | None
    distance: int | None = None
    ticket: _Ticket | None = field(default=None, repr=False)


class Deduper:
    """The reference (last analysed event) of one camera, and the events in analysis."""

    def __init__(self, window_s: float, max_distance: int, *, enabled: bool = True) -> None:
        self.window_s = float(window_s)
        self.max_distance = int(max_distance)
        self.enabled = enabled
        self.last: Analysed | None = None
        self._in_flight: list[_Ticket] = []
        self.reused = 0
        self.waited = 0

    def _near(self, a: np.ndarray, b: np.ndarray) -> bool:
        return distance(a, b) <= self.max_distance

    def match(self, signature: np.ndarray, at: datetime) -> tuple[Analysed | None, int | None]:
        """The reference when `signature` at `at` is a near duplicate of it, and the distance."""
        ref = self.last
        if ref is None:
            return None, None
        gap = abs((at - ref.at).total_seconds())
        if gap > self.window_s:
            return None, None
        d = distance(signature, ref.signature)
        return (ref if d <= self.max_distance else None), d

    async def lookup(self, image: np.ndarray, at: datetime) -> Lookup:
        """Reuse a reference, or claim the analysis (then call `done` with its outcome)."""
        if not self.enabled:
            return Lookup(None, None)
        signature = fingerprint(image)
        while True:
            ref, d = self.match(signature, at)
            if ref is not None:
                self.reused += 1
                return Lookup(ref, signature, d)
            busy = next((t for t in self._in_flight if self._near(signature, t.signature)), None)
            if busy is None:
                break
            self.waited += 1
            await busy.done.wait()  # `done` always follows: the analysis has a deadline
        ticket = _Ticket(signature)
        self._in_flight.append(ticket)
        return Lookup(None, signature, d, ticket)

    def done(self, lookup: Lookup, analysed: Analysed | None) -> None:
        """The claimed analysis ended: `analysed` (a VLM answer) becomes the reference."""
        if analysed is not None and (self.last is None or analysed.at >= self.last.at):
            self.last = analysed
        ticket = lookup.ticket
        if ticket is not None:
            if ticket in self._in_flight:
                self._in_flight.remove(ticket)
            ticket.done.set()


def reused_result(ref: Analysed, request: VLMRequest) -> VLMResult:
    """The result of a near-duplicate event: the reference's words, `provider_used: reused`."""
    return VLMResult(
        description=ref.description,
        objects=ref.objects,
        confidence=ref.confidence,
        ai_confidence=ref.ai_confidence,
        provider_used=REUSED_PROVIDER,
        analysis_mode=request.analysis_mode,
        request_id=request.request_id,
        confidence_source=ref.confidence_source,
    )
