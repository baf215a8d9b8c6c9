"""The `cameras[].zones` entries: named polygons that gate motion and label events."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from pipelines.config.base import StrictModel
from pipelines.config.validators import _invalid, _short_repr
from pipelines.events import SmartDetectionType

ZONE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,63}$"
_ZONE_NAME = re.compile(ZONE_NAME_RE)


class ZoneConfig(StrictModel):
    """A named zone: a polygon in normalised image coordinates (0-1, any stream resolution)."""

    name: str = Field(
        description="Zone name (letters, digits, space, '_', '-'); recorded in events' `zones`."
    )
    polygon: list[tuple[float, float]] = Field(
        description="[[x, y], ...]: 3-256 points, x and y fractions (0-1) of width and height."
    )
    objects: list[SmartDetectionType] | None = Field(
        default=None,
        min_length=1,
        description="Publish events in this zone only with one of these objects (null: camera's).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ZONE_NAME.match(value):
            raise _invalid(
                f"invalid zone name {_short_repr(value)}: use 1-64 letters, digits, spaces, "
                "'_' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, polygon: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if not 3 <= len(polygon) <= 256:
            raise _invalid(f"a zone polygon needs 3 to 256 [x, y] points, got {len(polygon)}")
        for index, point in enumerate(polygon):
            if any(not (0.0 <= c <= 1.0) for c in point):
                raise _invalid(
                    "zone coordinates are fractions of the image: each x and y between 0 and 1",
                    index,
                )
        return polygon
