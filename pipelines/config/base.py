"""The strict base of every config section model: unknown keys are errors, values are frozen.

Relative paths resolve against the `base_dir` validation context (set by
`pipelines.config.loading`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config section: unknown keys are validation errors and instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
