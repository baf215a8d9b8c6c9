"""The Event model and its MQTT/API payload serializer (the one place a payload is built)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.auth import sign_camera_token, sign_thumbnail_token

SourceType = Literal["file", "rtsp", "http", "udp"]
# URL scheme -> source type for stream sources; anything without "://" (or file://) is a file.
SOURCE_SCHEMES: dict[str, SourceType] = {
    "rtsp": "rtsp",
    "rtsps": "rtsp",
    "http": "http",
    "https": "http",
    "udp": "udp",
}
SmartDetectionType = Literal["person", "vehicle", "package", "animal"]
SMART_DETECTION_PRIORITY: tuple[SmartDetectionType, ...] = (
    "person",
    "vehicle",
    "package",
    "animal",
)
AnalysisMode = Literal["single_frame", "multi_frame"]
FramesFrom = Literal["main", "detect"]

REQUIRED_FIELDS: tuple[str, ...] = (
    "event_id",
    "camera_id",
    "camera_name",
    "description",
    "objects_detected",
    "confidence",
    "source_type",
    "timestamp",
    "thumbnail_url",
)
OPTIONAL_FIELDS: tuple[str, ...] = (
    "smart_detection_type",
    "is_doorbell_ring",
    "provider_used",
    "analysis_mode",
    "ai_confidence",
    "correlation_group_id",
    "zones",
    "reused_from",
)
REUSED_PROVIDER = "reused"  # provider_used of an event that reused an earlier description


def new_event_id() -> str:
    """A fresh server-generated event id (uuid4)."""
    return str(uuid.uuid4())


def is_random_event_id(event_id: str) -> bool:
    """Whether event_id is one `new_event_id` made (uuid4): such an id belongs to one event
    only, so a copy of it stored earlier has the same timestamp (a re-sent save). A derived id
    (a file segment's uuid5, `pipelines.ingest.ids`) comes back with a new timestamp when its
    file is replayed."""
    return event_id[14:15] == "4"


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(UTC)


def smart_detection_type(objects: tuple[str, ...] | list[str]) -> SmartDetectionType | None:
    """The most important of person > vehicle > package > animal among objects, else None."""
    found = set(objects)
    for kind in SMART_DETECTION_PRIORITY:
        if kind in found:
            return kind
    return None


class Event(BaseModel):
    """One analysed motion event; everything the SPEC payload needs plus analysis metadata."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(default_factory=new_event_id, description="Server-generated uuid4.")
    camera_id: str = Field(min_length=1, max_length=64)
    camera_name: str = Field(min_length=1, max_length=200)
    description: str = Field(max_length=2000)
    objects_detected: tuple[str, ...] = ()
    confidence: int = Field(ge=0, le=100)
    source_type: SourceType
    timestamp: datetime = Field(description="Event start, UTC.")
    smart_detection_type: SmartDetectionType | None = None
    is_doorbell_ring: bool | None = None
    provider_used: str | None = None
    analysis_mode: AnalysisMode | None = None
    ai_confidence: int | None = Field(default=None, ge=0, le=100)
    correlation_group_id: str | None = None
    # Analysis metadata: stored and exported to Parquet, not part of the MQTT payload.
    ended_at: datetime | None = None
    frame_count: int = Field(default=0, ge=0)
    merged_motion: int = Field(default=0, ge=0, description="Motion segments merged in.")
    vlm_latency_ms: float | None = Field(default=None, ge=0)
    media_offset_s: float | None = Field(
        default=None, ge=0, description="File sources: media time of the first motion frame."
    )
    # Noise control (payload: zones and reused_from, when set; the rest is metadata).
    zones: tuple[str, ...] | None = Field(
        default=None, description="Zones the event's motion touched (cameras with zones)."
    )
    reused_from: str | None = Field(
        default=None, description="Event whose description was reused (provider 'reused')."
    )
    filtered: bool = Field(
        default=False, description="Stored but not published: no wanted object (object filter)."
    )
    confidence_source: str | None = Field(
        default=None, description="Where confidence came from: tokens|logprobs|stated|default|none."
    )
    throttled: bool = Field(
        default=False,
        description="Over a VLM budget (the camera's or the global): fallback text, no VLM call.",
    )
    frames_from: FramesFrom | None = Field(
        default=None,
        description=(
            "A camera with a detect_source: the stream its thumbnail came from (main; detect "
            "when the main stream was down or behind)."
        ),
    )

    @field_validator("event_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return str(uuid.UUID(value))

    @field_validator("reused_from")
    @classmethod
    def _reused_uuid(cls, value: str | None) -> str | None:
        return None if value is None else str(uuid.UUID(value))

    @field_validator("zones")
    @classmethod
    def _zones(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return value or None  # no zones touched: absent, not an empty list

    @field_validator("timestamp", "ended_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def source_type_of(source: str) -> SourceType:
    """file | rtsp | http | udp for a camera source (ValueError for an unsupported scheme)."""
    if "://" not in source:
        return "file"
    scheme = source.split("://", 1)[0].lower()
    if scheme == "file":
        return "file"
    if scheme not in SOURCE_SCHEMES:
        raise ValueError(f"unsupported source scheme {scheme[:16]!r}")
    return SOURCE_SCHEMES[scheme]


def resolve_base_url(configured: str) -> str:
    """The API base URL for links: env API_BASE_URL overrides the configured one."""
    return (os.environ.get("API_BASE_URL") or configured).rstrip("/")


def thumbnail_url(
    event_id: str,
    base_url: str,
    api_key: str | None = None,
    ttl_s: int = 86400,
    now: float | None = None,
    *,
    resolved: bool = False,
) -> str:
    """URL of an event's thumbnail; carries a signed token when the API has a key.
    `resolved`: base_url is already `resolve_base_url`'s answer (the environment not read)."""
    base = base_url if resolved else resolve_base_url(base_url)
    url = f"{base}/api/v1/events/{event_id}/thumbnail"
    if api_key:
        url += "?token=" + sign_thumbnail_token(event_id, api_key, ttl_s, now=now)
    return url


def camera_thumbnail_url(camera_id: str, event_id: str, base_url: str, api_key: str | None) -> str:
    """URL of an event's thumbnail through its camera's route (the retained last_event): with a
    key it carries a token for that one event, which does not expire, so Home Assistant's image
    of the last event never breaks (see pipelines.auth)."""
    url = f"{resolve_base_url(base_url)}/api/v1/cameras/{camera_id}/thumbnail?event_id={event_id}"
    if api_key:
        url += "&token=" + sign_camera_token(camera_id, event_id, api_key)
    return url


def format_timestamp(value: datetime) -> str:
    """ISO 8601 UTC with a Z suffix and millisecond precision."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(
    event: Event,
    base_url: str,
    api_key: str | None = None,
    ttl_s: int = 86400,
    *,
    resolved: bool = False,
) -> dict[str, Any]:
    """The SPEC event JSON: required fields always, optional ones only when known
    (`resolved`: as for `thumbnail_url`)."""
    payload: dict[str, Any] = {
        "event_id": event.event_id,
        "camera_id": event.camera_id,
        "camera_name": event.camera_name,
        "description": event.description,
        "objects_detected": list(event.objects_detected),
        "confidence": event.confidence,
        "source_type": event.source_type,
        "timestamp": format_timestamp(event.timestamp),
        "thumbnail_url": thumbnail_url(event.event_id, base_url, api_key, ttl_s, resolved=resolved),
    }
    for name in OPTIONAL_FIELDS:
        value = getattr(event, name)
        if value is not None:
            payload[name] = list(value) if isinstance(value, tuple) else value
    return payload


def event_json(
    event: Event,
    base_url: str,
    api_key: str | None = None,
    ttl_s: int = 86400,
    *,
    resolved: bool = False,
) -> str:
    """The event payload as compact JSON text (`resolved`: as for `thumbnail_url`)."""
    payload = event_payload(event, base_url, api_key, ttl_s, resolved=resolved)
    return json.dumps(payload, separators=(",", ":"))


@lru_cache(maxsize=1)
def event_schema() -> dict[str, Any]:
    """The shipped JSON Schema of the MQTT event payload."""
    text = resources.files("pipelines").joinpath("schema/event.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
