"""The `cameras` section: one camera's source, limits, motion settings and zones."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipelines.config.base import StrictModel
from pipelines.config.motion import MotionConfig
from pipelines.config.validators import _CONTROL, _invalid, _resolve_path, _short_repr
from pipelines.config.zones import ZoneConfig
from pipelines.events import SOURCE_SCHEMES, SmartDetectionType, SourceType
from pipelines.redact import redact_url

CAMERA_ID_RE = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_CAMERA_ID = re.compile(CAMERA_ID_RE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class CameraConfig(StrictModel):
    """One camera: its source and how motion events are found on it."""

    id: str = Field(description="Stable id used in MQTT topics and paths; matches CAMERA_ID_RE.")
    name: str = Field(default="", max_length=100, description="Display name (default: from id).")
    source: str = Field(
        min_length=1,
        max_length=4096,
        description="File path or rtsp://, http(s)://, udp:// URL; may contain ${ENV} secrets.",
    )
    detect_source: str | None = Field(
        default=None,
        max_length=4096,
        description=(
            "A live camera's low-resolution sub-stream (rtsp://, http(s)://, udp://): motion "
            "runs on it, key frames and the thumbnail come from `source` (the main stream), "
            "decoded only at its key frames while nothing moves; null: one stream."
        ),
    )
    detect_fps: float = Field(default=5, ge=0.1, le=60, description="Frames analysed per second.")
    doorbell: bool = Field(default=False, description="A doorbell camera (ring events).")
    prompt: str | None = Field(
        default=None, max_length=4000, description="Extra VLM instructions for this camera."
    )
    enabled: bool = Field(default=True, description="Disabled cameras are not started.")
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Motion settings.")
    stall_timeout_s: float = Field(
        default=10,
        ge=0.5,
        le=600,
        description="Live streams: no new frame for this long means the stream is offline.",
    )
    max_pending_events: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Events waiting for the VLM; when full, new motion merges into the newest.",
    )
    num_cpus: float = Field(
        default=0.05,
        gt=0,
        le=64,
        description=(
            "CPUs the camera adds to its ingest actor's Ray request (measured in a group of 16 "
            "at detect_fps 5: 0.04-0.06 for 640x360, 0.08 for 720p; see README)."
        ),
    )
    max_unsaved_events: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Events kept for retry while the store cannot save; beyond, the oldest drop.",
    )
    ring_merge_s: float = Field(
        default=10,
        ge=0,
        le=3600,
        description="Doorbell: a ring this soon after the last accepted one merges into it.",
    )
    zones: list[ZoneConfig] = Field(
        default_factory=list,
        max_length=32,
        description="Named zones; when any are set, motion must touch one to start an event.",
    )
    objects: list[SmartDetectionType] | None = Field(
        default=None,
        min_length=1,
        description="Publish only events with one of these objects (all are stored); null: all.",
    )
    unsure_min_motion: float | None = Field(
        default=0.04,
        ge=0,
        le=1,
        description=(
            "With `objects` set: an analysed event with no objects at all whose peak motion "
            "covered at least this share of the frame is published anyway; null: never."
        ),
    )
    vlm: str | None = Field(
        default=None,
        max_length=32,
        description="A named chain of `vlm.backends` for this camera; null: the vlm section's own.",
    )
    vlm_max_per_hour: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="VLM calls per hour for this camera (token bucket); null: no own limit.",
    )

    @model_validator(mode="after")
    def _detect_source_needs_a_stream(self) -> CameraConfig:
        if self.detect_source is not None and self.source_type == "file":
            raise _invalid(
                "detect_source needs a live stream as `source` (the main stream); a file "
                "camera has one stream",
                "detect_source",
            )
        return self

    @model_validator(mode="after")
    def _zones_consistent(self) -> CameraConfig:
        seen: set[str] = set()
        for index, zone in enumerate(self.zones):
            if zone.name in seen:
                raise _invalid(f"duplicate zone name {zone.name!r}", "zones", index, "name")
            seen.add(zone.name)
            if self.objects is not None and zone.objects is not None:
                extra = sorted(set(zone.objects) - set(self.objects))
                if extra:
                    raise _invalid(
                        f"zone objects {extra} are not in the camera's objects: a zone's "
                        "objects narrow the camera's list",
                        "zones",
                        index,
                        "objects",
                    )
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        camera_id = data.get("id") if isinstance(data, dict) else None
        if isinstance(camera_id, str) and _CAMERA_ID.match(camera_id) and not data.get("name"):
            data = {**data, "name": re.sub(r"[_-]+", " ", data["id"]).strip().title()}
        return data

    @field_validator("id")
    @classmethod
    def _camera_id(cls, value: str) -> str:
        if not _CAMERA_ID.match(value):
            raise _invalid(
                f"invalid camera id {_short_repr(value)}: use 1-64 characters of lowercase a-z, "
                "0-9, '_' or '-', starting with a letter or digit (ids become MQTT topic levels "
                "and file names)"
            )
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise _invalid("name must not contain control characters")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str, info: ValidationInfo) -> str:
        if _CONTROL.search(value):
            raise _invalid("source must not contain control characters")
        match = _SCHEME.match(value)
        if match is None:
            resolved = _resolve_path(Path(value), info)
            return str(resolved)
        scheme = match.group(1).lower()
        if scheme == "file":
            resolved = _resolve_path(Path(value[len("file://") :]), info)
            return str(resolved)
        if scheme not in SOURCE_SCHEMES:
            raise _invalid(
                f"unsupported source scheme {_short_repr(scheme, 16)}: use a file path or an "
                "rtsp://, rtsps://, http://, https:// or udp:// URL"
            )
        if len(value) == match.end():
            raise _invalid("source URL has no host")
        return value

    @field_validator("detect_source")
    @classmethod
    def _detect_source(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _CONTROL.search(value):
            raise _invalid("detect_source must not contain control characters")
        match = _SCHEME.match(value)
        scheme = match.group(1).lower() if match else ""
        if scheme not in SOURCE_SCHEMES:
            raise _invalid(
                "detect_source must be a live stream URL: rtsp://, rtsps://, http://, https:// "
                "or udp://"
            )
        if match is not None and len(value) == match.end():
            raise _invalid("detect_source URL has no host")
        return value

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            secret = key in ("source", "detect_source") and isinstance(value, str)
            yield key, redact_url(value) if secret else value

    @property
    def source_type(self) -> SourceType:
        """file | rtsp | http | udp (https counts as http, rtsps as rtsp)."""
        match = _SCHEME.match(self.source)
        if match is None:
            return "file"
        return SOURCE_SCHEMES.get(match.group(1).lower(), "file")
