"""MQTT for liveobject: topics and HA discovery (`topics`), what is published (`client`),
the paho broker link (`transport`) and received messages (`inbound`)."""

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
