"""Motion detection on downscaled grey frames against a running-average background.

In the spirit of Frigate's improved motion detector: downscale to `frame_height` (bilinear, then
grey), blur, compare with a running average (cv2.accumulateWeighted), threshold, dilate, and keep
contours of at least `contour_area` pixels outside the mask polygons. When more than
`recalibrate_ratio` of the frame changes at once (lights switched on, IR mode flip, camera moved)
the background is reset to the current frame and that frame reports no motion.

Zones (`cameras[].zones`, normalised polygons) are drawn on the motion frame at its current size
(`pipelines.ingest.zones`). When a camera has zones, each motion result names the zones its kept
contours touch; motion that touches none is still reported (it may continue an event) but is
flagged `outside_zones`, and only motion with `starts_event` may start one. Masks apply first:
masked motion touches nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipelines.imaging import grey_small
from pipelines.ingest.zones import ZoneMap

if TYPE_CHECKING:
    from pipelines.config import MotionConfig, ZoneConfig
    from pipelines.ingest.sources import Frame

logger = logging.getLogger(__name__)

__all__ = ["Box", "MotionDetector", "MotionResult"]

Box = tuple[int, int, int, int]
"""(x1, y1, x2, y2) in the pixel coordinates of the input image."""


@dataclass(frozen=True, slots=True)
class MotionResult:
    """Motion in one frame: score = changed fraction of the frame (0..1), boxes, motion flag,
    and (cameras with zones) the zones touched; `outside_zones`: motion, but in no zone."""

    score: float
    boxes: tuple[Box, ...] = ()
    motion: bool = False
    zones: tuple[str, ...] = ()
    outside_zones: bool = False

    @property
    def starts_event(self) -> bool:
        """Motion that may start an event: in a zone, or anywhere when there are no zones."""
        return self.motion and not self.outside_zones


_KERNEL = np.ones((3, 3), dtype=np.uint8)  # what cv2.dilate(..., None) uses
NO_MOTION = MotionResult(score=0.0, boxes=(), motion=False)


class MotionDetector:
    """Stateful per-camera motion detector; feed frames in order with update_frame() (a
    decoded Frame) or update() (an array)."""

    def __init__(
        self,
        settings: MotionConfig,
        *,
        zones: Sequence[ZoneConfig] = (),
        alpha: float = 0.1,
        blur: int = 5,
    ) -> None:
        self.settings = settings
        self.zones = tuple(zones)
        self._zone_map: ZoneMap | None = None  # the zones drawn at the motion frame's size
        self.alpha = alpha  # background learning rate per frame
        self.blur = blur | 1  # Gaussian kernel must be odd
        self._avg: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None  # (height, width) of the motion frame
        self._mask: np.ndarray | None = None  # 0 where motion is ignored, 255 elsewhere
        self.recalibrations = 0

    def reset(self) -> None:
        """Forget the background (the next frame becomes the new background)."""
        self._avg = None

    def _motion_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the motion picture for a frame of this size (never upscaled)."""
        target_h = min(int(self.settings.frame_height), height)
        return target_h, max(1, round(width * target_h / height))

    def _prepare(self, grey: np.ndarray) -> np.ndarray:
        shape = (int(grey.shape[0]), int(grey.shape[1]))
        if self._shape != shape:
            self._shape = shape
            self._avg = None
            self._mask = self._build_mask(*shape)
            self._zone_map = ZoneMap(self.zones, *shape) if self.zones else None
        return cv2.GaussianBlur(grey, (self.blur, self.blur), 0)

    def _build_mask(self, height: int, width: int) -> np.ndarray | None:
        polygons = [p for p in self.settings.mask if len(p) >= 3]
        if not polygons:
            return None
        mask = np.full((height, width), 255, dtype=np.uint8)
        pts = [np.array(p, dtype=np.int32).reshape(-1, 1, 2) for p in polygons]
        cv2.fillPoly(mask, pts, 0)
        return mask

    def update(self, image: np.ndarray) -> MotionResult:
        """Compare a frame (H,W,3 RGB or H,W grey uint8) with the background; learn from it."""
        full_h, full_w = int(image.shape[0]), int(image.shape[1])
        height, width = self._motion_size(full_h, full_w)
        return self._detect(grey_small(image, width, height), full_h, full_w)

    def update_frame(self, frame: Frame) -> MotionResult:
        """`update` on a decoded frame: its small grey picture comes from the frame (FFmpeg's
        scaler for PyAV frames, whose RGB image is then never made unless an event needs it)."""
        height, width = self._motion_size(frame.height, frame.width)
        return self._detect(frame.grey(width, height), frame.height, frame.width)

    def _detect(self, small_grey: np.ndarray, full_h: int, full_w: int) -> MotionResult:
        """Motion in the small grey picture; boxes in the full frame's (full_h, full_w) pixels."""
        grey = self._prepare(small_grey)
        if self._avg is None:
            self._avg = grey.astype(np.float32)
            return NO_MOTION
        delta = cv2.absdiff(grey, cv2.convertScaleAbs(self._avg))
        _, thresh = cv2.threshold(delta, int(self.settings.threshold), 255, cv2.THRESH_BINARY)
        if self._mask is not None:
            thresh = cv2.bitwise_and(thresh, self._mask)
        thresh = cv2.dilate(thresh, _KERNEL, iterations=2)
        height, width = grey.shape[:2]
        changed = cv2.countNonZero(thresh) / float(height * width)
        if changed > float(self.settings.recalibrate_ratio):
            # a global change is lighting, not motion: adopt the new scene as background
            self._avg = grey.astype(np.float32)
            self.recalibrations += 1
            logger.debug("motion background recalibrated (%.0f%% of frame changed)", changed * 100)
            return NO_MOTION
        contours, _ = cv2.findContours(thresh, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        scale_x = full_w / width
        scale_y = full_h / height
        boxes: list[Box] = []
        kept = []
        area = 0.0
        for contour in contours:
            contour_area = cv2.contourArea(contour)
            if contour_area < self.settings.contour_area:
                continue
            kept.append(contour)
            area += contour_area
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append(
                (
                    int(x * scale_x),
                    int(y * scale_y),
                    round((x + w) * scale_x),
                    round((y + h) * scale_y),
                )
            )
        cv2.accumulateWeighted(grey, self._avg, self.alpha)
        score = min(1.0, area / float(height * width))
        if self._zone_map is None or not kept:
            return MotionResult(score=score, boxes=tuple(boxes), motion=bool(boxes))
        zones = self._zones_touched(kept, thresh)
        return MotionResult(
            score=score, boxes=tuple(boxes), motion=True, zones=zones, outside_zones=not zones
        )

    def _zones_touched(self, kept: list[np.ndarray], thresh: np.ndarray) -> tuple[str, ...]:
        """Zones reached by the changed pixels of the contours that count as motion."""
        assert self._zone_map is not None
        blobs = np.zeros_like(thresh)
        cv2.drawContours(blobs, kept, -1, 255, thickness=cv2.FILLED)
        return self._zone_map.touched(cv2.bitwise_and(blobs, thresh))
