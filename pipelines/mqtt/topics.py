"""MQTT topics, Home Assistant discovery configs and retained payloads.

This module is the only place in the project that formats a topic or a discovery payload.
Every camera id that reaches a topic passes :func:`safe_topic_level`, so a hostile id can
never produce a wildcard, a `$SYS`-like level or an extra level.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

# Re-exported: the one topic-prefix rule lives in config (mqtt may import config, not back).
from pipelines.config.validators import check_topic_prefix as check_topic_prefix
from pipelines.events import Event, format_timestamp, thumbnail_url, utcnow

# Same rule as pipelines.config.CAMERA_ID_RE (config rejects bad ids at load; this is the
# last line of defence for ids that reach a topic from anywhere else).
CAMERA_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

DISCOVERY_QOS = 1
STATE_QOS = 1
MAX_DESCRIPTION = 255
EVENT_TYPES: tuple[str, ...] = ("person", "vehicle", "package", "animal", "motion", "doorbell")
CAMERA_STATUSES: tuple[str, ...] = ("online", "offline", "unavailable", "unplaceable")
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("event", "event"),
    ("sensor", "description"),
    ("binary_sensor", "activity"),
    ("image", "thumbnail"),
    ("sensor", "status"),
)
ORIGIN_NAME = "liveobject"
MANUFACTURER = "liveobject"
PAYLOAD_ONLINE = "online"
PAYLOAD_OFFLINE = "offline"

CameraStatus = Literal["online", "offline", "unavailable", "unplaceable"]

# HA's event entity needs a JSON object with `event_type`; doorbell rings win over the
# smart detection type, and an event with neither is plain motion.
EVENT_VALUE_TEMPLATE = (
    "{% set t = 'doorbell' if value_json.get('is_doorbell_ring') "
    "else (value_json.get('smart_detection_type') or 'motion') %}"
    '{"event_type": {{ t | tojson }}, '
    '"event_id": {{ value_json.get("event_id") | tojson }}, '
    '"description": {{ value_json.get("description") | tojson }}, '
    '"thumbnail_url": {{ value_json.get("thumbnail_url") | tojson }}, '
    '"timestamp": {{ value_json.get("timestamp") | tojson }}}'
)
DESCRIPTION_VALUE_TEMPLATE = "{{ (value_json.description | default(''))[:255] }}"
THUMBNAIL_URL_TEMPLATE = "{{ value_json.thumbnail_url }}"
STATUS_VALUE_TEMPLATE = "{{ value_json.status }}"


def safe_topic_level(camera_id: object) -> str:
    """The camera id unchanged when it is safe as one topic level, else ValueError."""
    if not isinstance(camera_id, str) or CAMERA_ID_PATTERN.fullmatch(camera_id) is None:
        raise ValueError(
            f"camera id {camera_id!r} cannot be used in an MQTT topic: it must match "
            "^[a-z0-9][a-z0-9_-]{0,63}$ (lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit, at most 64 characters)"
        )
    return camera_id


@lru_cache(maxsize=4096)
def _checked_level(camera_id: str) -> str:
    """`safe_topic_level` remembered for the ids that passed it (a refusal is not cached)."""
    return safe_topic_level(camera_id)


@dataclass(frozen=True)
class CameraInfo:
    """What discovery needs to know about one camera."""

    camera_id: str
    name: str
    source_type: str = "file"
    doorbell: bool = False

    def __post_init__(self) -> None:
        safe_topic_level(self.camera_id)

    @classmethod
    def from_config(cls, camera: Any) -> CameraInfo:
        """Build from a pipelines.config.CameraConfig (duck-typed to keep this module light)."""
        return cls(
            camera_id=camera.id,
            name=camera.name or camera.id,
            source_type=camera.source_type,
            doorbell=bool(getattr(camera, "doorbell", False)),
        )


class Topics:
    """Every topic liveobject publishes or subscribes to, for one prefix."""

    def __init__(self, prefix: str = "liveobject", discovery_prefix: str = "homeassistant"):
        self.prefix = check_topic_prefix(prefix)
        self.discovery_prefix = check_topic_prefix(discovery_prefix, "discovery prefix")

    def __repr__(self) -> str:
        return f"Topics({self.prefix!r}, {self.discovery_prefix!r})"

    @property
    def status(self) -> str:
        """Availability topic (LWT): `online` / `offline`, retained."""
        return f"{self.prefix}/status"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth/will topic; `online` means: re-send discovery."""
        return f"{self.discovery_prefix}/status"

    def _camera(self, camera_id: str, leaf: str) -> str:
        # a str is checked once (cached); anything else is refused by safe_topic_level
        level = _checked_level(camera_id) if isinstance(camera_id, str) else None
        return f"{self.prefix}/camera/{level or safe_topic_level(camera_id)}/{leaf}"

    def event(self, camera_id: str) -> str:
        """Per-camera event topic (not retained, configured QoS)."""
        return self._camera(camera_id, "event")

    def camera_status(self, camera_id: str) -> str:
        """Per-camera retained status JSON."""
        return self._camera(camera_id, "status")

    def last_event(self, camera_id: str) -> str:
        """Per-camera retained summary of the latest event."""
        return self._camera(camera_id, "last_event")

    def activity(self, camera_id: str) -> str:
        """Per-camera retained `ON`/`OFF` while an event is in progress."""
        return self._camera(camera_id, "activity")

    def ring(self, camera_id: str) -> str:
        """Per-camera doorbell ring command topic."""
        return self._camera(camera_id, "ring")

    @property
    def ring_filter(self) -> str:
        """Subscription filter matching the ring command topic of every camera."""
        return f"{self.prefix}/camera/+/ring"

    def ring_camera(self, topic: str) -> str | None:
        """The camera id of a ring command topic, or None when the topic is not a safe one."""
        head, tail = f"{self.prefix}/camera/", "/ring"
        if not topic.startswith(head) or not topic.endswith(tail):
            return None
        level = topic[len(head) : len(topic) - len(tail)]
        return level if CAMERA_ID_PATTERN.fullmatch(level) else None

    @property
    def cameras(self) -> str:
        """Retained registry of the cameras whose discovery configs we published."""
        return f"{self.prefix}/cameras"

    def discovery(self, component: str, camera_id: str, object_id: str) -> str:
        """Home Assistant discovery config topic of one entity."""
        for what, level in (("component", component), ("object id", object_id)):
            if CAMERA_ID_PATTERN.fullmatch(level) is None:
                raise ValueError(f"discovery {what} {level!r} is not a safe topic level")
        camera = safe_topic_level(camera_id)
        return f"{self.discovery_prefix}/{component}/liveobject_{camera}/{object_id}/config"


def to_json(payload: dict[str, Any]) -> str:
    """Compact JSON text of a payload."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def truncate(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """Text cut to at most `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _common_config(
    camera: CameraInfo, topics: Topics, base_url: str, sw_version: str
) -> dict[str, Any]:
    """Device, origin, availability and QoS: the same in every entity config of a camera."""
    device = {
        "identifiers": [f"liveobject_{camera.camera_id}"],
        "name": camera.name,
        "manufacturer": MANUFACTURER,
        "model": f"{camera.source_type} camera" + (" (doorbell)" if camera.doorbell else ""),
        "sw_version": sw_version,
    }
    return {
        "device": device,
        "origin": {"name": ORIGIN_NAME, "sw": sw_version, "url": base_url},
        "availability": [
            {
                "topic": topics.status,
                "payload_available": PAYLOAD_ONLINE,
                "payload_not_available": PAYLOAD_OFFLINE,
            }
        ],
        "qos": STATE_QOS,
    }


def _specific_configs(camera: CameraInfo, topics: Topics) -> dict[tuple[str, str], dict[str, Any]]:
    """What each entity (keyed by component and object id) adds to the common config."""
    cid = camera.camera_id
    return {
        ("event", "event"): {
            "name": "Event",
            "state_topic": topics.event(cid),
            "event_types": list(EVENT_TYPES),
            "value_template": EVENT_VALUE_TEMPLATE,
            "device_class": "doorbell" if camera.doorbell else "motion",
        },
        ("sensor", "description"): {
            "name": "Last event",
            "state_topic": topics.last_event(cid),
            "value_template": DESCRIPTION_VALUE_TEMPLATE,
            "json_attributes_topic": topics.last_event(cid),
            "icon": "mdi:text-box-outline",
        },
        ("binary_sensor", "activity"): {
            "name": "Activity",
            "state_topic": topics.activity(cid),
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "motion",
        },
        ("image", "thumbnail"): {
            "name": "Last thumbnail",
            "url_topic": topics.last_event(cid),
            "url_template": THUMBNAIL_URL_TEMPLATE,
        },
        ("sensor", "status"): {
            "name": "Camera status",
            "state_topic": topics.camera_status(cid),
            "value_template": STATUS_VALUE_TEMPLATE,
            "json_attributes_topic": topics.camera_status(cid),
            "device_class": "enum",
            "options": list(CAMERA_STATUSES),
            "icon": "mdi:cctv",
        },
    }


def _entity_configs(
    camera: CameraInfo, topics: Topics, base_url: str, sw_version: str
) -> list[tuple[str, str, dict[str, Any]]]:
    common = _common_config(camera, topics, base_url, sw_version)
    specific = _specific_configs(camera, topics)
    configs = []
    for component, object_id in COMPONENTS:
        config = {
            "unique_id": f"liveobject_{camera.camera_id}_{object_id}",
            **specific[(component, object_id)],
            **common,
        }
        configs.append((component, object_id, config))
    return configs


def discovery_messages(
    camera: CameraInfo, topics: Topics, base_url: str, sw_version: str
) -> list[tuple[str, str]]:
    """(topic, JSON config) of every HA entity of one camera; publish retained at QoS 1."""
    return [
        (topics.discovery(component, camera.camera_id, object_id), to_json(config))
        for component, object_id, config in _entity_configs(camera, topics, base_url, sw_version)
    ]


def clear_discovery_messages(camera_id: str, topics: Topics) -> list[tuple[str, str]]:
    """(topic, empty payload) for every entity of one camera: removes them from HA."""
    return [
        (topics.discovery(component, camera_id, object_id), "")
        for component, object_id in COMPONENTS
    ]


def camera_registry_payload(camera_ids: list[str], discovery_prefix: str) -> str:
    """Retained `{prefix}/cameras` JSON: the cameras with discovery configs, and their prefix."""
    ids = sorted({safe_topic_level(cid) for cid in camera_ids})
    return to_json({"discovery_prefix": discovery_prefix, "cameras": ids})


def parse_camera_registry(payload: bytes, max_bytes: int = 1 << 20) -> tuple[str, list[str]]:
    """(discovery prefix, camera ids) of a registry payload; unsafe entries are left out.

    Raises ValueError when the payload is not a registry (the message is then ignored).
    """
    if len(payload) > max_bytes:
        raise ValueError("camera registry payload too large")
    data = json.loads(payload.decode("utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
        raise ValueError("camera registry payload is not an object with a `cameras` list")
    prefix = check_topic_prefix(data.get("discovery_prefix"), "discovery prefix")
    ids = [c for c in data["cameras"] if isinstance(c, str) and CAMERA_ID_PATTERN.fullmatch(c)]
    return prefix, ids


def last_event_payload(
    event: Event, base_url: str, api_key: str | None = None, ttl_s: int = 86400
) -> dict[str, Any]:
    """Retained `last_event` JSON: id, time, short description, thumbnail URL, detection type."""
    payload: dict[str, Any] = {
        "event_id": event.event_id,
        "timestamp": format_timestamp(event.timestamp),
        "description": truncate(event.description),
        "thumbnail_url": thumbnail_url(event.event_id, base_url, api_key, ttl_s),
    }
    if event.smart_detection_type is not None:
        payload["smart_detection_type"] = event.smart_detection_type
    return payload


def last_event_from_event_payload(event_payload: dict[str, Any]) -> dict[str, Any]:
    """The `last_event` JSON derived from an already built event payload."""
    payload: dict[str, Any] = {
        "event_id": event_payload["event_id"],
        "timestamp": event_payload["timestamp"],
        "description": truncate(str(event_payload.get("description", ""))),
        "thumbnail_url": event_payload["thumbnail_url"],
    }
    if event_payload.get("smart_detection_type") is not None:
        payload["smart_detection_type"] = event_payload["smart_detection_type"]
    return payload


def camera_status_payload(
    camera_id: str,
    camera_name: str,
    status: CameraStatus,
    source_type: str,
    last_updated: datetime | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Retained camera status JSON; `reason` (e.g. what an unplaceable camera lacks) if given."""
    if status not in CAMERA_STATUSES:
        raise ValueError(f"camera status must be one of {CAMERA_STATUSES}, got {status!r}")
    payload = {
        "camera_id": safe_topic_level(camera_id),
        "camera_name": camera_name,
        "status": status,
        "source_type": source_type,
        "last_updated": format_timestamp(last_updated or utcnow()),
    }
    if reason:
        payload["reason"] = truncate(reason)
    return payload


def activity_payload(on: bool) -> str:
    """`ON` while an event is in progress, else `OFF`."""
    return "ON" if on else "OFF"
