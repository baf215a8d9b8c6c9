"""All VLM backends down: `liveobject run --until-done` still publishes every event, on time.

The primary is an OpenAI-compatible server (written here) that never answers, the first fallback
the same server answering 500, the second a port nothing listens on. Every stored event must
reach a real MQTT subscriber with the fallback description, no `provider_used`, and a VLM wait
bounded by `vlm.deadline_s` (the hung primary's own timeout is far longer than the deadline).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pytest

from pipelines.events import event_schema
from pipelines.samples import generate_sample_video
from tests.conftest import Mosquitto, free_port
from tests.integration.test_end_to_end import Subscriber, run_cli

pytestmark = pytest.mark.integration

DEADLINE_S = 5.0
# the camera measures the VLM wait around one Serve call; allow for scheduling on a busy box
LATENCY_SLACK_S = 1.5


class DownServer:
    """Speaks /v1/chat/completions badly: model `hang` never answers, `fail-500` answers 500."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.calls.append(body["model"])
                if body["model"] == "hang":
                    server.release.wait(120)  # far past the deadline and the client timeout
                raw = b'{"error": "down"}'
                try:
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up and went away

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def down_server() -> Iterator[DownServer]:
    server = DownServer()
    try:
        yield server
    finally:
        server.close()


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
    tmp_path: Path, mosquitto: Mosquitto, down_server: DownServer
) -> None:
    clip = generate_sample_video(
        tmp_path / "porch.mp4", seconds=8, motion_windows=[(0.5, 2.0), (4.5, 6.0)], seed=5
    )
    config = write_config(tmp_path, clip, down_server.base_url, mosquitto.port, free_port())
    subscriber = Subscriber(mosquitto.port, "down/camera/+/event")
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
    assert "hang" in down_server.calls and "fail-500" in down_server.calls
