"""The `shutdown` section: how a stop drains the pipeline."""

from __future__ import annotations

from pydantic import Field

from pipelines.config.base import StrictModel


class ShutdownConfig(StrictModel):
    """How a stop (Ctrl-C, SIGTERM, `liveobject stop`) drains the pipeline."""

    drain_timeout_s: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="Time to finish queued and in-flight events; then fallback text is stored.",
    )
