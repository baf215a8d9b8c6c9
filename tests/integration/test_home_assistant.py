"""liveobject's notification blueprint in a real Home Assistant core (no Ray).

What runs: a mosquitto of this test; the API app under uvicorn over a real DuckDB `EventStore`
(with an API key, so thumbnail links carry signed tokens); the product's `EventPublisher`
(discovery, events, retained states) on that broker; Home Assistant 2024.3 from `.venv-ha` with
its MQTT integration, three automations built from
`configs/home_assistant/blueprints/automation/liveobject/notify_camera_event.yaml` and a test
notify platform that records each call. Home Assistant discovers the cameras' entities from the
publisher's discovery messages; the automations fire on the event entities.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.config import Config
from pipelines.events import Event
from pipelines.mqtt.publishing import EventPublisher
from pipelines.storage import EventStore
from serve_apps.api import build_api
from serve_apps.api.local import LocalStoreClient
from tests.support.home_assistant import (
    HomeAssistant,
    blueprint_automation,
    screenshot_notifications,
)
from tests.support.media import jpeg
from tests.support.network import free_port
from tests.support.publisher_ports import FakeCameras, FakeMetrics
from tests.support.uvicorn_server import Uvicorn
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

KEY = "ha-blueprint-test-key-0123456789"
PREFIX = "liveobject"
# where the screenshot of the notifications goes when set (`make screenshot`:
# docs/ha-notification.png); else tmp_path, so a test run leaves the tracked file alone
SCREENSHOT_ENV = "LIVEOBJECT_HA_SCREENSHOT"
CAMERAS = ["event.front_door_event", "event.garage_event"]
# model output is untrusted: a template and Markdown that must reach no notify service as such
HOSTILE = "A cat {{ 6 * 7 }} walks past [the gate](http://evil.invalid/x.png) <b>now</b>."


def _config(api_port: int, mqtt_port: int, storage: Path) -> Config:
    return Config.model_validate(
        {
            "cameras": [
                {"id": "front_door", "name": "Front door", "source": "f.mp4", "doorbell": True},
                {"id": "garage", "name": "Garage", "source": "g.mp4"},
            ],
            "api": {"base_url": f"http://127.0.0.1:{api_port}", "api_key": KEY},
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": PREFIX},
            "storage": {"path": str(storage)},
        }
    )


def _event(camera: str, description: str, age_s: float = 0, **fields: Any) -> Event:
    return Event(
        camera_id=camera,
        camera_name={"front_door": "Front door", "garage": "Garage"}[camera],
        description=description,
        objects_detected=(fields.get("smart_detection_type") or "person",),
        confidence=80,
        source_type="rtsp",
        timestamp=datetime.now(UTC) - timedelta(seconds=age_s),
        **fields,
    )


def _subscribed(broker_log: Path, topics: list[str]) -> bool:
    """Whether Home Assistant has subscribed to each topic (its entities exist)."""
    text = broker_log.read_text(errors="replace")
    return all(f"\t{topic} (QoS" in text for topic in topics)


def _quiet(hours_ahead: int) -> dict[str, str]:
    """Two hours of quiet starting an hour before now plus `hours_ahead` (0: now is quiet;
    2: it starts an hour from now). Near midnight UTC they cross it."""
    start = datetime.now(UTC) + timedelta(hours=hours_ahead - 1)
    return {
        "quiet_from": start.strftime("%H:%M:%S"),
        "quiet_until": (start + timedelta(hours=2)).strftime("%H:%M:%S"),
    }


def _neutralised(text: str) -> str:
    """What the blueprint sends of a description: no braces, square or angle brackets, and
    "Motion" for none (or a bare "None")."""
    text = re.sub(r"[{}<>\[\]]", " ", text)[:500].strip()
    return "Motion" if text in ("", "None", "none", "null") else text


def test_blueprint_notifies_once_per_published_event(
    mosquitto: Any, browser: Any, tmp_path: Path
) -> None:
    api_port = free_port()
    config = _config(api_port, mosquitto.port, tmp_path / "data")
    store = EventStore(config.storage.path)
    api = Uvicorn(build_api(LocalStoreClient(store, config), config), port=api_port)
    publisher = EventPublisher(
        config, store=None, cameras=FakeCameras(), metrics=FakeMetrics(), sw_version="test"
    )
    ha = HomeAssistant(
        tmp_path / "ha",
        mosquitto.port,
        [
            blueprint_automation("every_event", CAMERAS, "notify.phone"),
            blueprint_automation("vehicles_only", CAMERAS, "notify.car", event_types=["vehicle"]),
            blueprint_automation("quiet_now", CAMERAS, "notify.quiet", **_quiet(0)),
            blueprint_automation("quiet_later", CAMERAS, "notify.awake", **_quiet(2)),
            blueprint_automation("cooldown", CAMERAS, "notify.cooled", cooldown_s=3600),
            blueprint_automation(
                "in_home_assistant",
                CAMERAS,
                "notify.persistent_notification",
                event_types=["person", "vehicle", "doorbell"],
            ),
        ],
        notify_services=("phone", "car", "quiet", "awake", "cooled"),
    )
    try:
        publisher.start()
        assert publisher.core.wait_connected(10), publisher.status()
        for camera in config.cameras:  # what the camera actors say while they run
            publisher.set_camera_status(camera.id, "online", "rtsp")
            publisher.set_activity(camera.id, False)
        ha.start()
        ha.wait_started()
        wait_for(
            lambda: _subscribed(
                mosquitto.log_path, [f"{PREFIX}/camera/{c}/event" for c in ("front_door", "garage")]
            ),
            60,
            "Home Assistant to discover both cameras' event entities",
            abort=ha.exited,
            context=lambda: ha.log()[-3000:],
        )

        person = _event(
            "front_door", "A courier leaves a parcel on the step.", smart_detection_type="person"
        )
        vehicle = _event(
            "garage", "A grey van parks in front of the garage.", smart_detection_type="vehicle"
        )
        ring = _event("front_door", "A woman in a red coat rings the bell.", is_doorbell_ring=True)
        cat = _event("garage", HOSTILE, smart_detection_type="animal")  # model text, untrusted
        # a bare "None" would become Python's None in Home Assistant's variables
        nothing = _event("garage", "None", smart_detection_type="animal")
        old = _event("garage", "A replayed event from an hour ago.", age_s=3600)
        events = [person, vehicle, ring, cat, nothing, old]
        stored = store.save_batch(
            events,
            {e.event_id: jpeg((50 * i, 90, 160), (320, 180)) for i, e in enumerate(events)},
            0,
        )

        def sent_to(service: str) -> list[dict[str, Any]]:
            return [n for n in ha.notifications() if n["service"] == service]

        def send(event: Event, expected: int) -> None:
            """Publish; wait until both all-events automations have sent `expected` in all.
            (For an event that must send nothing this returns at once: the next event's
            notification, and the exact lists checked at the end, show it sent nothing.)"""
            assert publisher.publish_events([event]) == 1
            wait_for(
                lambda: min(len(sent_to("awake")), len(sent_to("phone"))) >= expected,
                30,
                f"notification {expected}",
                abort=ha.exited,
                context=lambda: ha.log()[-3000:],
            )

        send(stored[0], 1)
        send(stored[0], 1)  # the same event again (a QoS 1 duplicate): no second notification
        send(stored[1], 2)
        send(stored[2], 3)
        send(stored[3], 4)
        send(stored[4], 5)
        send(stored[5], 5)  # older than max_age_min: no notification
        publisher.flush(10)

        # the same person, vehicle and ring as persistent notifications, rendered by Home
        # Assistant's frontend (the README's screenshot)
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "ha-notification.png")
        texts = screenshot_notifications(browser, ha, 3, shot)
        for event in stored[:3]:
            assert any(event.description in text for text in texts), texts
        send(stored[0], 6)  # a later replay of an earlier event notifies again (documented)

        wanted = [*stored[:5], stored[0]]
        got = sent_to("phone")
        assert [n["title"] for n in got] == [
            "Front door: person",
            "Garage: vehicle",
            "Front door: doorbell",
            "Garage: animal",
            "Garage: animal",
            "Front door: person",
        ]
        assert [n["message"] for n in got] == [_neutralised(e.description) for e in wanted]
        assert "42" not in got[3]["message"] and "[" not in got[3]["message"]
        assert got[4]["message"] == "Motion"  # not None, and the call did not fail
        for note, event in zip(got, wanted, strict=True):
            data = note["data"]  # the event payload's thumbnail_url, signed when it was sent
            thumbnail = f"http://127.0.0.1:{api_port}/api/v1/events/{event.event_id}/thumbnail"
            assert data["image"].startswith(f"{thumbnail}?token=")
            assert (
                data["url"]
                == data["clickAction"]
                == f"http://127.0.0.1:{api_port}/#event={event.event_id}"
            )
            image = httpx.get(data["image"], timeout=10)
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
            assert image.content[:2] == b"\xff\xd8"
            bare = httpx.get(data["image"].split("?")[0], timeout=10)
            assert bare.status_code == 401  # the link's token is what opens it
        assert [n["message"] for n in got] == [n["message"] for n in sent_to("awake")]
        assert [n["message"] for n in sent_to("car")] == [vehicle.description]
        assert [n["message"] for n in sent_to("cooled")] == [person.description]
        assert sent_to("quiet") == []
        errors = [line for line in ha.log().splitlines() if " ERROR " in line]
        assert not errors, errors
        ha.stop()
        # the entity ids the docs' dashboard card and the README use
        registry = json.loads((ha.config_dir / ".storage/core.entity_registry").read_text())
        ids = {e["entity_id"] for e in registry["data"]["entities"]}
        expected = {"image.front_door_last_thumbnail", "sensor.front_door_last_event", *CAMERAS}
        assert expected <= ids, sorted(ids)
    finally:
        ha.stop()
        publisher.shutdown()
        api.stop()
        store.close()
