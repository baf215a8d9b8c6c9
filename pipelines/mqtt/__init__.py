"""MQTT for liveobject: topics and HA discovery (`topics`), what is published (`client`),
the paho broker link (`transport`), received messages (`inbound`), and the event publisher
(`publishing`, over `ports`, with `acks`, `replay` and `rings`)."""

from pipelines.mqtt.topics import (
    CameraInfo,
    Topics,
    camera_status_payload,
    clear_discovery_messages,
    discovery_messages,
    last_event_payload,
    safe_topic_level,
)

__all__ = [
    "CameraInfo",
    "Topics",
    "camera_status_payload",
    "clear_discovery_messages",
    "discovery_messages",
    "last_event_payload",
    "safe_topic_level",
]
