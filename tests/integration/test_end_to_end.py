"""End to end: `liveobject run --until-done` and `liveobject demo --until-done`."""

from __future__ import annotations

import io
import time
from pathlib import Path

import duckdb
import jsonschema
from PIL import Image

from pipelines.events import event_schema
from pipelines.samples import generate_sample_video
from tests.support.cli import run_cli, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import EventSubscriber
from tests.support.network import free_port


def test_run_until_done_publishes_every_stored_event(
    tmp_path: Path, tiny_model: Path, mosquitto: Mosquitto
) -> None:
    clips = [
        generate_sample_video(tmp_path / "a.mp4", seconds=6, motion_windows=[(1.0, 3.0)], seed=3),
        generate_sample_video(tmp_path / "b.mp4", seconds=6, motion_windows=[(1.5, 4.0)], seed=4),
    ]
    api_port = free_port()
    config = write_config(tmp_path, tiny_model, mosquitto.port, api_port, 2, clips)
    subscriber = EventSubscriber(mosquitto.port, "e2e/camera/+/event")
    try:
        proc = run_cli(
            ["run", "--config", str(config), "--until-done", "--no-dashboard", "--linger", "5s"],
            tmp_path,
        )
        time.sleep(0.5)
    finally:
        subscriber.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("events: ")]
    assert summary, proc.stdout[-3000:]

    with duckdb.connect(str(tmp_path / "store" / "events.duckdb"), read_only=True) as db:
        rows = db.execute("SELECT event_id, camera_id FROM events").fetchall()
        stored = {event_id: camera_id for event_id, camera_id in rows}
    assert stored, "no event was stored"
    assert summary[-1] == f"events: {len(stored)} stored, {len(stored)} published"
    assert {"cam_0", "cam_1"} <= set(stored.values())

    received = {
        payload["event_id"]: (topic, qos, retain, payload)
        for topic, qos, retain, payload in subscriber.messages
    }
    assert set(received) == set(stored)
    assert len(subscriber.messages) == len(stored)  # one message per stored event
    for event_id, (topic, qos, retain, payload) in received.items():
        jsonschema.validate(payload, event_schema())
        assert topic == f"e2e/camera/{stored[event_id]}/event"
        assert qos == 2 and not retain
        status, content_type, body = subscriber.thumbnails[event_id]
        assert status == 200, (status, content_type)
        assert content_type.startswith("image/jpeg")
        assert Image.open(io.BytesIO(body)).size[0] > 0


def test_demo_until_done_without_a_broker(tmp_path: Path) -> None:
    mqtt_port = free_port()  # nothing listens here: the demo must start its own broker
    proc = run_cli(
        [
            "demo",
            "--until-done",
            "--no-dashboard",
            "--data",
            str(tmp_path / "demo"),
            "--mqtt-port",
            str(mqtt_port),
            "--api-port",
            str(free_port()),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "embedded" in proc.stdout
    summary = [line for line in proc.stdout.splitlines() if line.startswith("events: ")]
    stored = int(summary[-1].split()[1])
    published = int(summary[-1].split()[3])
    assert stored >= 2 and published == stored, summary
    assert (tmp_path / "demo" / "store" / "events.duckdb").exists()
