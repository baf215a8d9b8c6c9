"""The event model and its MQTT serializer against the shipped JSON Schema (AC2, AC7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import jsonschema
import pytest
from pydantic import ValidationError

from pipelines.auth import check_thumbnail_token
from pipelines.events import (
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    Event,
    event_json,
    event_payload,
    event_schema,
    smart_detection_type,
)

BASE = "http://ha-host:8000"


def minimal_event() -> Event:
    return Event(
        camera_id="front_door",
        camera_name="Front Door",
        description="Motion detected on Front Door",
        confidence=0,
        source_type="file",
        timestamp=datetime(2026, 11, 27, 14, 30, tzinfo=UTC),
    )


def full_event() -> Event:
    return Event(
        camera_id="front_door",
        camera_name="Front Door",
        description="Person approaching front door with package",
        objects_detected=("person", "package"),
        confidence=85,
        source_type="rtsp",
        timestamp=datetime(2026, 11, 27, 14, 30, tzinfo=timezone(timedelta(hours=2))),
        smart_detection_type="person",
        is_doorbell_ring=False,
        provider_used="transformers:HuggingFaceTB/SmolVLM-256M-Instruct",
        analysis_mode="multi_frame",
        ai_confidence=92,
        correlation_group_id="4b0c8a1e-0d7a-4a8e-9f0f-7b7f0c2d9e11",
        zones=("driveway", "front path"),
        reused_from="9c1f0e2a-3b4c-4d5e-8f60-718293a4b5c6",
    )


def test_minimal_event_validates_and_has_no_optional_fields() -> None:
    payload = event_payload(minimal_event(), BASE)
    jsonschema.validate(payload, event_schema())
    assert set(payload) == set(REQUIRED_FIELDS)
    assert None not in payload.values()


def test_full_event_validates_with_every_optional_field() -> None:
    payload = event_payload(full_event(), BASE)
    jsonschema.validate(payload, event_schema())
    assert set(payload) == set(REQUIRED_FIELDS) | set(OPTIONAL_FIELDS)
    assert payload["timestamp"] == "2026-11-27T12:30:00.000Z"  # normalised to UTC
    assert payload["is_doorbell_ring"] is False  # a known False is kept, not dropped


def test_thumbnail_url_uses_base_url_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    event = minimal_event()
    monkeypatch.delenv("API_BASE_URL", raising=False)
    assert event_payload(event, BASE + "/")["thumbnail_url"] == (
        f"{BASE}/api/v1/events/{event.event_id}/thumbnail"
    )
    monkeypatch.setenv("API_BASE_URL", "https://cams.example.org")
    url = event_payload(event, BASE)["thumbnail_url"]
    assert url.startswith("https://cams.example.org/api/v1/events/")


def test_thumbnail_url_carries_a_signed_token_with_api_key() -> None:
    event = minimal_event()
    payload = event_payload(event, BASE, api_key="s3cret", ttl_s=60)
    jsonschema.validate(payload, event_schema())
    token = payload["thumbnail_url"].split("?token=", 1)[1]
    assert "s3cret" not in payload["thumbnail_url"]
    assert check_thumbnail_token(token, event.event_id, "s3cret") is None
    assert check_thumbnail_token(token, event.event_id, "other") == "invalid"


def test_schema_rejects_a_payload_missing_a_required_field() -> None:
    payload = event_payload(minimal_event(), BASE)
    del payload["thumbnail_url"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, event_schema())


def test_event_json_is_compact_json() -> None:
    text = event_json(full_event(), BASE)
    assert text.startswith('{"event_id":')


@pytest.mark.parametrize(
    "bad",
    [
        {"confidence": 101},
        {"confidence": -1},
        {"source_type": "protect"},
        {"event_id": "../../etc/passwd"},
        {"unknown_field": 1},
    ],
)
def test_event_model_rejects_bad_values(bad: dict[str, object]) -> None:
    data = minimal_event().model_dump()
    data.update(bad)
    with pytest.raises(ValidationError):
        Event(**data)


def test_event_is_frozen() -> None:
    event = minimal_event()
    with pytest.raises(ValidationError):
        event.description = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        (["animal", "person"], "person"),
        (["package", "vehicle"], "vehicle"),
        (["tree", "package"], "package"),
        (["cat"], None),
        (["animal"], "animal"),
        ([], None),
    ],
)
def test_smart_detection_type_priority(objects: list[str], expected: str | None) -> None:
    assert smart_detection_type(objects) == expected
