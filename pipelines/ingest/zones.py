"""Zones: named polygons in normalised coordinates, rasterised for the motion frame.

A zone's polygon is given in fractions of the image (0-1 on both axes), so it means the same
area at any stream resolution: `ZoneMap` draws the polygons onto a label image of the motion
frame's size (rebuilt when that size changes) with one bit per zone, and `touched` reads which
zones a motion mask reaches with one pass over the motion pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from pipelines.config import ZoneConfig

__all__ = ["MAX_ZONES", "ZoneMap", "zone_points"]

MAX_ZONES = 32  # one bit each in a uint32 label image (the config allows 32 per camera)
_SHIFT = 4  # fillPoly sub-pixel bits: polygon corners are placed to 1/16 px


def zone_points(polygon: Sequence[tuple[float, float]], height: int, width: int) -> np.ndarray:
    """The polygon in fixed-point pixel coordinates (`_SHIFT` fraction bits) of a frame."""
    scale = np.array([width, height], dtype=np.float64) * (1 << _SHIFT)
    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2) * scale
    limit = np.array([width, height], dtype=np.float64) * (1 << _SHIFT) - 1
    return np.clip(np.rint(points), 0, limit).astype(np.int32).reshape(-1, 1, 2)


class ZoneMap:
    """The zones of one camera drawn on a motion frame of (height, width)."""

    def __init__(self, zones: Sequence[ZoneConfig], height: int, width: int) -> None:
        if len(zones) > MAX_ZONES:
            raise ValueError(f"at most {MAX_ZONES} zones per camera")
        self.names: tuple[str, ...] = tuple(zone.name for zone in zones)
        self.shape = (height, width)
        self._labels = np.zeros((height, width), dtype=np.uint32)
        for bit, zone in enumerate(zones):
            canvas = np.zeros((height, width), dtype=np.uint8)
            pts = zone_points(zone.polygon, height, width)
            cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=_SHIFT)
            self._labels[canvas > 0] |= np.uint32(1 << bit)

    def __bool__(self) -> bool:
        return bool(self.names)

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask of one zone (for tests and tuning)."""
        bit = np.uint32(1 << self.names.index(name))
        return (self._labels & bit) > 0

    def touched(self, motion: np.ndarray) -> tuple[str, ...]:
        """Names of the zones that any non-zero pixel of `motion` (same shape) falls in."""
        if motion.shape[:2] != self.shape:
            raise ValueError(f"motion mask {motion.shape[:2]} does not match zones {self.shape}")
        hits = self._labels[motion > 0]
        if hits.size == 0:
            return ()
        bits = int(np.bitwise_or.reduce(hits))
        return tuple(name for i, name in enumerate(self.names) if bits & (1 << i))
