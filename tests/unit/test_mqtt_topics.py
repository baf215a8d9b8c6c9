"""Topics, Home Assistant discovery configs and retained payloads (pipelines.mqtt.topics)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import jinja2
import pytest

from pipelines.config import ConfigError, parse_config_text
from pipelines.config.validators import check_topic_prefix as config_check_topic_prefix
from pipelines.events import Event, event_payload
from pipelines.mqtt.topics import (
    COMPONENTS,
    EVENT_TYPES,
    CameraInfo,
    Topics,
    camera_registry_payload,
    camera_status_payload,
    check_topic_prefix,
    clear_discovery_messages,
    discovery_messages,
    last_event_from_event_payload,
    last_event_payload,
    parse_camera_registry,
    safe_topic_level,
)

BASE = "http://api.example:8000"
HOSTILE_IDS = [
    "a/b",
    "#",
    "+",
    "front+door",
    "cam#1",
    "$SYS",
    "$sys",
    "cam\x00",
    "",
    "a" * 200,
    "a" * 65,
    "kamera-über",
    "камера",
    "Front",
    "-lead",
    "_lead",
    "cam\n",
    "cam ",
    " cam",
    "../x",
]


def _event(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "camera_id": "front_door",
        "camera_name": "Front Door",
        "description": "A person walks to the door.",
        "objects_detected": ("person",),
        "confidence": 80,
        "source_type": "rtsp",
        "timestamp": datetime(2025, 12, 11, 14, 30, tzinfo=UTC),
        "smart_detection_type": "person",
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def _wildcard_free(topic: str) -> bool:
    return not any(c in topic for c in "+#\x00") and "//" not in topic and topic[0] not in "$/"


def test_topics_for_normal_ids() -> None:
    t = Topics("liveobject")
    assert t.status == "liveobject/status"
    assert t.ha_status == "homeassistant/status"
    assert t.event("front_door") == "liveobject/camera/front_door/event"
    assert t.camera_status("cam-2") == "liveobject/camera/cam-2/status"
    assert t.last_event("0") == "liveobject/camera/0/last_event"
    assert t.activity("a" * 64) == f"liveobject/camera/{'a' * 64}/activity"
    assert t.ring("door") == "liveobject/camera/door/ring"
    assert (
        t.discovery("binary_sensor", "door", "activity")
        == "homeassistant/binary_sensor/liveobject_door/activity/config"
    )
    custom = Topics("site/a", "ha")
    assert custom.event("x") == "site/a/camera/x/event"
    assert custom.discovery("event", "x", "event") == "ha/event/liveobject_x/event/config"


@pytest.mark.parametrize("camera_id", HOSTILE_IDS, ids=repr)
def test_hostile_camera_ids_raise(camera_id: str) -> None:
    t = Topics("liveobject")
    with pytest.raises(ValueError, match="cannot be used in an MQTT topic"):
        safe_topic_level(camera_id)
    for build in (t.event, t.camera_status, t.last_event, t.activity, t.ring):
        with pytest.raises(ValueError):
            build(camera_id)
    with pytest.raises(ValueError):
        t.discovery("sensor", camera_id, "status")
    with pytest.raises(ValueError):
        clear_discovery_messages(camera_id, t)
    with pytest.raises(ValueError):
        CameraInfo(camera_id=camera_id, name="x")
    with pytest.raises(ValueError):
        camera_status_payload(camera_id, "x", "online", "file")


def test_error_message_never_echoes_control_chars_raw() -> None:
    with pytest.raises(ValueError) as info:
        safe_topic_level("cam\x00\x1b[31m")
    assert "\x00" not in str(info.value) and "\x1b" not in str(info.value)


@pytest.mark.parametrize("value", [None, 5, b"cam"])
def test_non_string_ids_raise(value: object) -> None:
    with pytest.raises(ValueError):
        safe_topic_level(value)


@pytest.mark.parametrize(
    "prefix", ["", "a/+", "#", "$SYS", "/lead", "trail/", "a//b", "nul\x00", "tab\there"]
)
def test_bad_prefixes_raise(prefix: str) -> None:
    with pytest.raises(ValueError):
        check_topic_prefix(prefix)
    with pytest.raises(ValueError):
        Topics(prefix)
    with pytest.raises(ValueError):
        Topics("liveobject", prefix)


# The one topic-prefix rule (pipelines.config.validators): stricter than either old copy.
STRICTER_PREFIXES = [
    "a\x1bb",  # C0 control (ESC)
    "a\x7fb",  # DEL
    "a\x85b",  # C1 control (NEL): the old mqtt copy let it through
    "a//b/",  # empty level and trailing '/' together: the old config copy named only one
    "a" * 1025,  # over 1024 bytes
    "é" * 513,  # 513 characters, 1026 bytes of UTF-8
]


@pytest.mark.parametrize("prefix", STRICTER_PREFIXES, ids=range(len(STRICTER_PREFIXES)))
def test_topic_prefix_rule_is_one_and_the_stricter_union(prefix: str) -> None:
    assert check_topic_prefix is config_check_topic_prefix  # one definition, re-exported
    text = "cameras:\n  - {id: cam, source: /videos/cam.mp4}\n"
    text += f"mqtt:\n  topic_prefix: {json.dumps(prefix)}\n"
    with pytest.raises(ConfigError) as info:  # config load rejects it...
        parse_config_text(text, "cfg.yaml", {})
    assert "mqtt.topic_prefix" in str(info.value)
    with pytest.raises(ValueError):  # ...and so does every MQTT-side use
        check_topic_prefix(prefix)
    with pytest.raises(ValueError):
        Topics(prefix)
    with pytest.raises(ValueError):
        Topics("liveobject", prefix)
    assert not any(ch in str(info.value) for ch in "\x1b\x7f\x85")  # never echoed raw


def test_topic_prefix_problems_are_all_named_without_echoing_the_prefix() -> None:
    with pytest.raises(ValueError) as info:
        check_topic_prefix("/a//b\x85", "discovery prefix")
    text = str(info.value)
    assert text.startswith("invalid discovery prefix: ")
    for problem in ("control characters", "start or end with '/'", "empty level"):
        assert problem in text
    assert "\x85" not in text
    with pytest.raises(ValueError, match="at most 1024 bytes"):
        check_topic_prefix("é" * 513)


def test_discovery_component_and_object_levels_are_checked() -> None:
    t = Topics()
    for component, object_id in (("sen/sor", "x"), ("sensor", "#"), ("+", "x")):
        with pytest.raises(ValueError):
            t.discovery(component, "cam", object_id)


def test_camera_id_rule_matches_config() -> None:
    config = pytest.importorskip("pipelines.config")
    rule = re.compile(config.CAMERA_ID_RE)
    for camera_id in [*HOSTILE_IDS, "front_door", "cam-2", "0", "a" * 64]:
        expected = rule.fullmatch(camera_id) is not None and not camera_id.endswith("\n")
        try:
            safe_topic_level(camera_id)
            ok = True
        except ValueError:
            ok = False
        assert ok == expected, repr(camera_id)


def test_discovery_configs_complete_and_consistent() -> None:
    t = Topics("liveobject")
    cam = CameraInfo("front_door", "Front Door", "rtsp", doorbell=True)
    messages = discovery_messages(cam, t, BASE, "0.1.0")
    assert len(messages) == 5
    components = [topic.split("/")[1] for topic, _ in messages]
    assert sorted(components) == sorted(["event", "sensor", "binary_sensor", "image", "sensor"])
    assert [(c, o) for c, o in COMPONENTS] == [
        (topic.split("/")[1], topic.split("/")[3]) for topic, _ in messages
    ]
    unique_ids = set()
    for topic, text in messages:
        assert re.fullmatch(
            r"homeassistant/(event|sensor|binary_sensor|image)/liveobject_front_door/\w+/config",
            topic,
        )
        config = json.loads(text)
        unique_ids.add(config["unique_id"])
        assert config["unique_id"].startswith("liveobject_front_door_")
        assert config["device"] == {
            "identifiers": ["liveobject_front_door"],
            "name": "Front Door",
            "manufacturer": "liveobject",
            "model": "rtsp camera (doorbell)",
            "sw_version": "0.1.0",
        }
        assert config["origin"] == {"name": "liveobject", "sw": "0.1.0", "url": BASE}
        assert config["availability"] == [
            {
                "topic": "liveobject/status",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]
        for key in ("state_topic", "json_attributes_topic", "url_topic"):
            if key in config:
                assert config[key].startswith("liveobject/camera/front_door/")
                assert _wildcard_free(config[key])
        assert config["name"]
    assert len(unique_ids) == 5
    by_object = {topic.split("/")[3]: json.loads(text) for topic, text in messages}
    assert by_object["event"]["event_types"] == list(EVENT_TYPES)
    assert by_object["event"]["state_topic"] == t.event("front_door")
    assert by_object["description"]["state_topic"] == t.last_event("front_door")
    assert by_object["description"]["json_attributes_topic"] == t.last_event("front_door")
    assert by_object["activity"]["state_topic"] == t.activity("front_door")
    assert (by_object["activity"]["payload_on"], by_object["activity"]["payload_off"]) == (
        "ON",
        "OFF",
    )
    assert by_object["thumbnail"]["url_topic"] == t.last_event("front_door")
    assert by_object["status"]["state_topic"] == t.camera_status("front_door")
    assert by_object["status"]["options"] == ["online", "offline", "unavailable", "unplaceable"]


def test_unique_ids_differ_across_cameras() -> None:
    t = Topics()
    a = discovery_messages(CameraInfo("a", "A"), t, BASE, "1")
    b = discovery_messages(CameraInfo("b", "B"), t, BASE, "1")
    ids = [json.loads(p)["unique_id"] for _, p in a + b]
    assert len(ids) == len(set(ids)) == 10


def _render(template: str, payload: dict[str, object]) -> str:
    env = jinja2.Environment(autoescape=False)  # HA renders with jinja2 too
    return env.from_string(template).render(value_json=payload)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "person"),
        ({"smart_detection_type": "vehicle"}, "vehicle"),
        ({"smart_detection_type": None, "objects_detected": ()}, "motion"),
        ({"is_doorbell_ring": True}, "doorbell"),
        ({"is_doorbell_ring": False, "smart_detection_type": "animal"}, "animal"),
    ],
)
def test_event_value_template_maps_event_type(overrides: dict[str, object], expected: str) -> None:
    t = Topics()
    config = json.loads(discovery_messages(CameraInfo("door", "Door"), t, BASE, "1")[0][1])
    payload = event_payload(_event(description='Say "hi" {x}', **overrides), BASE)
    rendered = json.loads(_render(config["value_template"], payload))
    assert rendered["event_type"] == expected
    assert rendered["event_type"] in config["event_types"]
    assert rendered["description"] == 'Say "hi" {x}'
    assert rendered["event_id"] == payload["event_id"]
    assert rendered["timestamp"] == payload["timestamp"]  # the blueprint skips old replays


def test_sensor_and_image_templates_render() -> None:
    t = Topics()
    configs = {
        topic.split("/")[3]: json.loads(text)
        for topic, text in discovery_messages(CameraInfo("door", "Door"), t, BASE, "1")
    }
    long = {"description": "x" * 600, "thumbnail_url": "http://h/t.jpg"}
    assert _render(configs["description"]["value_template"], long) == "x" * 255
    assert _render(configs["thumbnail"]["url_template"], long) == "http://h/t.jpg"
    assert _render(configs["status"]["value_template"], {"status": "offline"}) == "offline"


def test_clear_discovery_messages_same_topics_empty_payloads() -> None:
    t = Topics("lo", "ha")
    cam = CameraInfo("door", "Door")
    configs = discovery_messages(cam, t, BASE, "1")
    cleared = clear_discovery_messages("door", t)
    assert [topic for topic, _ in cleared] == [topic for topic, _ in configs]
    assert all(payload == "" for _, payload in cleared)


def test_last_event_payload_truncates_description() -> None:
    event = _event(description="d" * 1000)
    payload = last_event_payload(event, BASE, api_key=None)
    assert set(payload) == {
        "event_id",
        "timestamp",
        "description",
        "thumbnail_url",
        "smart_detection_type",
    }
    assert len(payload["description"]) == 255
    assert payload["description"].startswith("d" * 254)
    assert payload["timestamp"] == "2025-12-11T14:30:00.000Z"
    assert payload["thumbnail_url"] == f"{BASE}/api/v1/events/{event.event_id}/thumbnail"
    assert payload == last_event_from_event_payload(event_payload(event, BASE))
    short = last_event_payload(_event(description="ok", smart_detection_type=None), BASE)
    assert short["description"] == "ok" and "smart_detection_type" not in short
    exact = last_event_payload(_event(description="e" * 255), BASE)
    assert exact["description"] == "e" * 255


def test_last_event_payload_signs_thumbnail_with_key() -> None:
    payload = last_event_payload(_event(), BASE, api_key="k" * 32, ttl_s=60)
    assert "?token=" in payload["thumbnail_url"]
    assert "k" * 32 not in payload["thumbnail_url"]


def test_camera_status_payload() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    payload = camera_status_payload("door", "Door", "unavailable", "rtsp", when)
    assert payload == {
        "camera_id": "door",
        "camera_name": "Door",
        "status": "unavailable",
        "source_type": "rtsp",
        "last_updated": "2025-01-02T03:04:05.000Z",
    }
    assert camera_status_payload("door", "Door", "online", "file")["last_updated"].endswith("Z")
    with pytest.raises(ValueError):
        camera_status_payload("door", "Door", "broken", "file")  # type: ignore[arg-type]


def test_ring_filter_and_ring_camera() -> None:
    t = Topics("site/a")
    assert t.ring_filter == "site/a/camera/+/ring"
    assert t.ring_camera(t.ring("front_door")) == "front_door"
    assert t.cameras == "site/a/cameras"


@pytest.mark.parametrize("camera_id", [*HOSTILE_IDS, "x/y", ""], ids=repr)
def test_ring_camera_rejects_hostile_levels(camera_id: str) -> None:
    t = Topics("liveobject")
    assert t.ring_camera(f"liveobject/camera/{camera_id}/ring") is None


@pytest.mark.parametrize(
    "topic",
    ["other/camera/door/ring", "liveobject/camera/door/ring/x", "liveobject/camera/door/event"],
)
def test_ring_camera_rejects_other_topics(topic: str) -> None:
    assert Topics("liveobject").ring_camera(topic) is None


def test_camera_registry_round_trip() -> None:
    payload = camera_registry_payload(["garage", "front_door", "garage"], "ha")
    assert json.loads(payload) == {"discovery_prefix": "ha", "cameras": ["front_door", "garage"]}
    assert parse_camera_registry(payload.encode()) == ("ha", ["front_door", "garage"])
    with pytest.raises(ValueError):
        camera_registry_payload(["a/b"], "ha")


def test_camera_registry_parse_skips_unsafe_ids() -> None:
    raw = {"discovery_prefix": "ha", "cameras": ["ok", "a/b", "#", 3, None, "Bad"]}
    assert parse_camera_registry(json.dumps(raw).encode()) == ("ha", ["ok"])


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"cameras": "x", "discovery_prefix": "ha"}',
        b'{"cameras": [], "discovery_prefix": "ha/#"}',
        b'{"cameras": []}',
        b"\xff\xfe",
        b'{"cameras": [], "discovery_prefix": "ha", "pad": "' + b"x" * (1 << 20) + b'"}',
    ],
)
def test_camera_registry_parse_rejects_garbage(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_camera_registry(payload)
