"""The `cameras[].motion` section: motion detection and event segmentation."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipelines.config.base import StrictModel
from pipelines.config.validators import _invalid


class MotionConfig(StrictModel):
    """Motion detection and event segmentation for one camera."""

    threshold: int = Field(default=25, ge=1, le=255, description="Pixel difference threshold.")
    contour_area: int = Field(
        default=40, ge=1, le=1_000_000, description="Min contour area (px, motion frame)."
    )
    frame_height: int = Field(default=180, ge=60, le=1080, description="Motion frame height.")
    min_motion_frames: int = Field(
        default=2, ge=1, le=1000, description="Consecutive motion frames that start an event."
    )
    end_after_s: float = Field(
        default=2.0, ge=0, le=600, description="Still time that ends an event."
    )
    max_event_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest event; longer motion is split."
    )
    cooldown_s: float = Field(default=0.0, ge=0, le=3600, description="Quiet time between events.")
    max_frames: int = Field(default=3, ge=1, le=16, description="Key frames sent to the VLM.")
    mask: list[list[tuple[int, int]]] = Field(
        default_factory=list,
        max_length=64,
        description="Polygons (motion-frame pixel coordinates) where motion is ignored.",
    )
    recalibrate_ratio: float = Field(
        default=0.5, gt=0, le=1, description="Changed fraction that resets the background."
    )

    @field_validator("mask")
    @classmethod
    def _polygons(cls, mask: list[list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
        for index, polygon in enumerate(mask):
            if not 3 <= len(polygon) <= 256:
                raise _invalid("a mask polygon needs 3 to 256 [x, y] points", index)
            if any(not (0 <= c <= 10_000) for point in polygon for c in point):
                raise _invalid("mask coordinates must be between 0 and 10000", index)
        return mask
