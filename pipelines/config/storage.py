"""The `storage` section: where events, Parquet files and thumbnails are kept."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from pipelines.config.base import StrictModel
from pipelines.config.validators import _resolve_path


class StorageConfig(StrictModel):
    """DuckDB, Parquet and thumbnail storage."""

    path: Path = Field(
        default=Path("data"),
        validate_default=True,
        description="Data directory; a relative path is relative to the config file.",
    )
    retention_days: int = Field(default=30, ge=0, le=36_500, description="0 keeps forever.")
    parquet_flush_interval_s: float = Field(
        default=30, ge=0.1, le=86_400, description="How often new rows go to Parquet."
    )
    thumbnail_quality: int = Field(default=85, ge=1, le=100, description="JPEG quality.")
    max_queued_saves: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Saves waiting for the writer; past it a save fails with StoreBusyError.",
    )
    read_cache_events: int = Field(
        default=5_000,
        ge=0,
        le=1_000_000,
        description="Events held in answers of repeated lists and searches, kept until the next "
        "save (a read storm asks the same few questions); 0 turns the cache off.",
    )
    node_resource: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description="Custom Ray resource of the node holding `path`; pins the event-store there.",
    )

    _resolve = field_validator("path")(_resolve_path)
