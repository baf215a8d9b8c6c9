"""End to end: `liveobject run --until-done` and `liveobject demo --until-done`.

One finished run is shared by the tests that only read its results (what reached MQTT, the
notebook on its Parquet export, the events of a camera whose every backend is down): a run
costs half a minute, its reading a second. cam_0 uses the tiny local model (transformers),
cam_1 a `vlm.backends` chain on an OpenAI-compatible server (a local one speaking the real
protocol), cam_2 a chain whose backends are all down, so it has no provider (see
`test_all_backends_down_events_arrive_with_fallback_text_within_deadline`).
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import jsonschema
import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from pipelines.events import event_schema
from pipelines.samples import generate_sample_video
from pipelines.vlm.types import REPLY_GRACE_S
from tests.support.cli import run_cli, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import EventSubscriber
from tests.support.network import free_port
from tests.support.openai_server import ChatRequest, FakeOpenAI, Reply

pytestmark = [pytest.mark.integration, pytest.mark.heavy(70)]
CLOUD_ANSWER = (
    '{"description": "A courier leaves a parcel", "objects": ["person"], "confidence": 90}'
)
DOWN_DEADLINE_S = 5.0  # cam_2's chain's own deadline
# the camera measures the VLM wait around one Serve call, which may take REPLY_GRACE_S past
# the deadline; allow as much again for scheduling on a busy box
LATENCY_SLACK_S = 1.5
DOWN_FALLBACK = "Motion detected on Camera 2"


def answer(request: ChatRequest) -> Reply:
    """`cloud-vlm` answers; of cam_2's chain, `fail-500` answers 500 and `hang` never answers in
    time (120 s, far past the chain's deadline and its client timeout)."""
    if request.model == "cloud-vlm":
        return Reply(CLOUD_ANSWER)
    return Reply("down", status=500, delay_s=120 if request.model == "hang" else 0)


def down_chain(base_url: str) -> str:
    """cam_2's chain: a 500, then a port nothing listens on, then a hung backend (asked only
    once the two before it failed), with its own deadline."""
    return (
        f'{{backend: openai, model: fail-500, base_url: "{base_url}", timeout_s: 60, '
        f"deadline_s: {DOWN_DEADLINE_S}, fallback: ["
        f'{{backend: openai, model: gone, base_url: "http://127.0.0.1:{free_port()}/v1"}}, '
        f'{{backend: openai, model: hang, base_url: "{base_url}", timeout_s: 60}}]}}'
    )


NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "event_analysis.ipynb"


@dataclass(frozen=True)
class FinishedRun:
    """A `liveobject run --until-done` that has exited, and what a subscriber received."""

    folder: Path
    stdout: str
    stderr: str
    returncode: int
    subscriber: EventSubscriber
    vlm: FakeOpenAI  # the OpenAI-compatible server of cam_1's and cam_2's chains

    @property
    def store(self) -> Path:
        return self.folder / "store"


@pytest.fixture(scope="module")
def finished_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[FinishedRun]:
    folder = tmp_path_factory.mktemp("finished-run")
    broker = Mosquitto(folder)
    broker.start()
    cloud = FakeOpenAI(answer)
    try:
        clips = [
            generate_sample_video(folder / "a.mp4", seconds=6, motion_windows=[(1.0, 3.0)], seed=3),
            generate_sample_video(folder / "b.mp4", seconds=6, motion_windows=[(1.5, 4.0)], seed=4),
            generate_sample_video(
                folder / "c.mp4", seconds=8, motion_windows=[(0.5, 2.0), (4.5, 6.0)], seed=5
            ),
        ]
        config = write_config(
            folder,
            tiny_model,
            broker.port,
            free_port(),
            2,
            clips,
            storage_extra=", parquet_flush_interval_s: 2",
            chains={
                "cam_1": (
                    "cloud",
                    f'{{backend: openai, model: cloud-vlm, base_url: "{cloud.base_url}"}}',
                ),
                "cam_2": ("down", down_chain(cloud.base_url)),
            },
        )
        subscriber = EventSubscriber(broker.port, "e2e/camera/+/event")
        try:
            args = ["run", "--config", str(config), "--until-done", "--no-dashboard"]
            proc = run_cli([*args, "--linger", "5s"], folder)
            time.sleep(0.5)
        finally:
            subscriber.stop()
        yield FinishedRun(folder, proc.stdout, proc.stderr, proc.returncode, subscriber, cloud)
    finally:
        cloud.close()
        broker.stop()


def test_run_until_done_publishes_every_stored_event(finished_run: FinishedRun) -> None:
    run, subscriber = finished_run, finished_run.subscriber
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    summary = [line for line in run.stdout.splitlines() if line.startswith("events: ")]
    assert summary, run.stdout[-3000:]

    with duckdb.connect(str(run.store / "events.duckdb"), read_only=True) as db:
        rows = db.execute("SELECT event_id, camera_id FROM events").fetchall()
        stored = {event_id: camera_id for event_id, camera_id in rows}
    assert stored, "no event was stored"
    assert summary[-1] == f"events: {len(stored)} stored, {len(stored)} published"
    assert {"cam_0", "cam_1", "cam_2"} <= set(stored.values())
    with duckdb.connect(str(run.store / "events.duckdb"), read_only=True) as db:
        providers = set(db.execute("SELECT camera_id, provider_used FROM events").fetchall())
    # each camera's events name its own backend (a provider per camera; none where all are down)
    assert providers == {
        ("cam_0", "transformers:tiny-vlm"),
        ("cam_1", "openai:cloud-vlm"),
        ("cam_2", None),
    }

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


def test_all_backends_down_events_arrive_with_fallback_text_within_deadline(
    finished_run: FinishedRun,
) -> None:
    """cam_2's chain is all down (a 500, nothing listening, a hung backend): every one of its
    events still reaches MQTT with the fallback description, no `provider_used`, and a VLM wait
    bounded by the chain's deadline (the hung backend's own timeout is far longer)."""
    run = finished_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    with duckdb.connect(str(run.store / "events.duckdb"), read_only=True) as db:
        rows = db.execute(
            "SELECT event_id, description, provider_used, vlm_latency_ms FROM events "
            "WHERE camera_id = 'cam_2'"
        ).fetchall()
    assert len(rows) >= 2, f"expected two motion events, stored {rows}"
    for _event_id, description, provider_used, latency_ms in rows:
        assert description == DOWN_FALLBACK
        assert provider_used is None
        assert latency_ms <= (DOWN_DEADLINE_S + REPLY_GRACE_S + LATENCY_SLACK_S) * 1000, latency_ms

    received = {
        payload["event_id"]: payload
        for topic, _q, _r, payload in run.subscriber.messages
        if topic == "e2e/camera/cam_2/event"
    }
    assert set(received) == {row[0] for row in rows}
    for payload in received.values():
        jsonschema.validate(payload, event_schema())
        assert payload["description"] == DOWN_FALLBACK
        assert "provider_used" not in payload and "ai_confidence" not in payload
        assert payload["objects_detected"] == [] and payload["confidence"] == 0
    # the whole chain was walked: the 500, the closed port (else `hang` is never asked), and
    # the hung backend, until the deadline
    assert {"fail-500", "hang"} <= set(run.vlm.models_called())


def test_notebook_runs_clean_on_a_real_run(
    finished_run: FinishedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """notebooks/event_analysis.ipynb runs clean (nbclient) on the finished run's data."""
    assert finished_run.returncode == 0, finished_run.stderr[-5000:]
    store = finished_run.store
    with duckdb.connect(str(store / "events.duckdb"), read_only=True) as db:
        stored = db.execute("SELECT count(*) FROM events").fetchall()[0][0]
    assert stored > 0, "the run stored no event"

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # Not saved in the notebook: what the kernel counted, and that it is this venv's python.
    probe = 'import sys\nprint("PROBE", n_events, len(gallery), sys.executable)'
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    monkeypatch.setenv("LIVEOBJECT_DATA", str(store))  # the kernel inherits this environment
    client = NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError when any cell errors

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    probe_line = text.strip().splitlines()[-1].split(" ", 3)
    assert probe_line[0] == "PROBE"
    assert int(probe_line[1]) == stored  # the Parquet export holds every stored event
    assert int(probe_line[2]) > 0  # the gallery found thumbnails
    assert probe_line[3] == sys.executable
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3, "expected the hourly plot, the latency histogram and the gallery"
    assert "of the" in text and "have a thumbnail" in text


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
    # a run that reads cleanly: the product's lines only, the summary last (Ray's and Serve's
    # own lines are in Ray's log folder, named once)
    assert proc.stdout.splitlines()[-1] == summary[-1], proc.stdout[-2000:]
    assert "Ray logs: " in proc.stdout
    for noise in ("(raylet)", "\x1b[", "Started Serve", "is ready", "Token authentication"):
        assert noise not in proc.stdout + proc.stderr, (noise, proc.stdout[-2000:], proc.stderr)
