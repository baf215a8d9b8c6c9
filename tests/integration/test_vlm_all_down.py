"""All VLM backends down: `liveobject run --until-done` still publishes every event, on time.

The primary is a local OpenAI-compatible server (the test fake) that never answers, the first
fallback the same server answering 500, the second a port nothing listens on. Every stored event
must reach a real MQTT subscriber with the fallback description, no `provider_used`, and a VLM
wait bounded by `vlm.deadline_s` (the hung primary's own timeout is far longer than the deadline).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import jsonschema
import pytest

from pipelines.events import event_schema
from pipelines.samples import generate_sample_video
from tests.support.cli import run_cli
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import EventSubscriber
from tests.support.network import free_port
from tests.support.openai_server import ChatRequest, FakeOpenAI, Reply, serve_fake

pytestmark = [pytest.mark.integration, pytest.mark.heavy(30)]

DEADLINE_S = 5.0
# the camera measures the VLM wait around one Serve call; allow for scheduling on a busy box
LATENCY_SLACK_S = 1.5


def down(request: ChatRequest) -> Reply:
    """Model `hang` never answers in time (120 s, far past the deadline and the client
    timeout); every answer is a 500."""
    return Reply("down", status=500, delay_s=120 if request.model == "hang" else 0)


@pytest.fixture
def down_server() -> Iterator[FakeOpenAI]:
    yield from serve_fake(down)


def write_config(folder: Path, clip: Path, base_url: str, broker_port: int, api_port: int) -> Path:
    config = folder / "liveobject.yaml"
    config.write_text(
        f"""
ray: {{namespace: liveobject-vlm-down, num_cpus: 4}}
cameras:
  - id: porch
    name: Back Porch
    source: {clip}
    detect_fps: 5
vlm:
  backend: openai
  model: hang
  base_url: {base_url}
  timeout_s: 60
  num_cpus: 0.25
  deadline_s: {DEADLINE_S}
  bench_after_failures: 1   # bench the hung primary at its first miss, then walk the fallbacks
  image_size: 96
  fallback:
    - {{backend: openai, model: fail-500, base_url: "{base_url}", timeout_s: 60}}
    - {{backend: openai, model: gone, base_url: "http://127.0.0.1:{free_port()}/v1"}}
storage: {{path: {folder / "store"}}}
mqtt: {{host: 127.0.0.1, port: {broker_port}, qos: 1, topic_prefix: down}}
api: {{host: 127.0.0.1, port: {api_port}, base_url: "http://127.0.0.1:{api_port}"}}
"""
    )
    return config


def test_all_backends_down_events_arrive_with_fallback_text_within_deadline(
    tmp_path: Path, mosquitto: Mosquitto, down_server: FakeOpenAI
) -> None:
    clip = generate_sample_video(
        tmp_path / "porch.mp4", seconds=8, motion_windows=[(0.5, 2.0), (4.5, 6.0)], seed=5
    )
    config = write_config(tmp_path, clip, down_server.base_url, mosquitto.port, free_port())
    subscriber = EventSubscriber(mosquitto.port, "down/camera/+/event")
    try:
        proc = run_cli(["run", "--config", str(config), "--until-done", "--no-dashboard"], tmp_path)
    finally:
        subscriber.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    with duckdb.connect(str(tmp_path / "store" / "events.duckdb"), read_only=True) as db:
        rows = db.execute(
            "SELECT event_id, description, provider_used, vlm_latency_ms FROM events"
        ).fetchall()
    assert len(rows) >= 2, f"expected two motion events, stored {rows}"
    for _event_id, description, provider_used, latency_ms in rows:
        assert description == "Motion detected on Back Porch"
        assert provider_used is None
        assert latency_ms <= (DEADLINE_S + LATENCY_SLACK_S) * 1000, latency_ms

    received = {payload["event_id"]: payload for _t, _q, _r, payload in subscriber.messages}
    assert set(received) == {row[0] for row in rows}
    for payload in received.values():
        jsonschema.validate(payload, event_schema())
        assert payload["description"] == "Motion detected on Back Porch"
        assert "provider_used" not in payload and "ai_confidence" not in payload
        assert payload["objects_detected"] == [] and payload["confidence"] == 0
    summary = [line for line in proc.stdout.splitlines() if line.startswith("events: ")]
    assert summary and summary[-1] == f"events: {len(rows)} stored, {len(rows)} published"
    # the hung primary was tried (and benched), then the fallback list was walked
    assert {"hang", "fail-500"} <= set(down_server.models_called())
