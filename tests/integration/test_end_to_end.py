"""End to end: `liveobject run --until-done` and `liveobject demo --until-done`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import jsonschema
import paho.mqtt.client as mqtt
import pytest
from PIL import Image

from pipelines.events import event_schema
from pipelines.samples import generate_sample_video
from pipelines.vlm.tiny import build_tiny_vlm
from tests.conftest import Mosquitto, free_port

LIVEOBJECT = [sys.executable, "-m", "cluster.cli"]
RUN_TIMEOUT_S = 420


class Subscriber:
    """A real QoS-2 subscriber that fetches each event's thumbnail as soon as it arrives."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, int, bool, dict[str, Any]]] = []
        self.thumbnails: dict[str, tuple[int, str, bytes]] = {}
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._client.subscribe(topic, qos=2)
        assert subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        payload = json.loads(msg.payload)
        with self._lock:
            self.messages.append((msg.topic, msg.qos, bool(msg.retain), payload))
        try:
            resp = httpx.get(payload["thumbnail_url"], timeout=10)
            self.thumbnails[payload["event_id"]] = (
                resp.status_code,
                resp.headers.get("content-type", ""),
                resp.content,
            )
        except Exception as exc:  # recorded, asserted on below
            self.thumbnails[payload["event_id"]] = (0, repr(exc), b"")

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-vlm")


def write_config(
    folder: Path,
    model: Path,
    broker_port: int | None,
    api_port: int,
    qos: int,
    clips: list[Path],
    *,
    namespace: str = "liveobject-e2e",
    storage_extra: str = "",
) -> Path:
    """A `liveobject run` config: one camera per clip, the tiny VLM, MQTT off when no broker."""
    cameras = "\n".join(
        f"  - id: cam_{i}\n    name: Camera {i}\n    source: {clip}\n    detect_fps: 5"
        for i, clip in enumerate(clips)
    )
    mqtt = (
        "{enabled: false}"
        if broker_port is None
        else f"{{host: 127.0.0.1, port: {broker_port}, qos: {qos}, topic_prefix: e2e}}"
    )
    config = folder / "liveobject.yaml"
    config.write_text(
        f"""
ray: {{namespace: {namespace}, num_cpus: 4}}
cameras:
{cameras}
vlm:
  model: {model}
  num_cpus: 0.5
  max_batch_size: 4
  max_new_tokens: 12
  image_size: 96
storage: {{path: {folder / "store"}{storage_extra}}}
mqtt: {mqtt}
api: {{host: 127.0.0.1, port: {api_port}, base_url: "http://127.0.0.1:{api_port}"}}
"""
    )
    return config


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [*LIVEOBJECT, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def test_run_until_done_publishes_every_stored_event(
    tmp_path: Path, tiny_model: Path, mosquitto: Mosquitto
) -> None:
    clips = [
        generate_sample_video(tmp_path / "a.mp4", seconds=6, motion_windows=[(1.0, 3.0)], seed=3),
        generate_sample_video(tmp_path / "b.mp4", seconds=6, motion_windows=[(1.5, 4.0)], seed=4),
    ]
    api_port = free_port()
    config = write_config(tmp_path, tiny_model, mosquitto.port, api_port, 2, clips)
    subscriber = Subscriber(mosquitto.port, "e2e/camera/+/event")
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
