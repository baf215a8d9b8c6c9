"""The `correlation` section: grouping events of several cameras."""

from __future__ import annotations

from pydantic import Field

from pipelines.config.base import StrictModel


class CorrelationConfig(StrictModel):
    """Cross-camera correlation of events."""

    window_s: float = Field(
        default=10, ge=0, le=3600, description="Events starting this close share a group; 0: off."
    )
