"""A stop while analyses are in flight loses nothing: SIGINT, SIGTERM, `liveobject stop`, and
Ctrl-C in a real terminal (a pty), each sent to a real `liveobject run` process. SIGTERM (systemd,
`docker stop`) and the others are graceful stops that leave no process of the run's local cluster.

A local OpenAI-compatible server holds the VLM (each answer takes seconds, or never comes), so
when the stop arrives every motion segment of the clip has been cut and some are still queued
or being described. Then: every segment cut is stored, with the VLM's text (or the fallback
text after a second Ctrl-C), each is published (the broker is up), nothing is lost, `offline`
is the last status, and the run exits 0. No subscriber sees a `timestamp` later than the moment
the event reached it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import jsonschema
import psutil
import pytest

from pipelines.events import event_schema
from pipelines.samples import generate_sample_video
from tests.support.cli import CLI, cameras_of, cli, cli_env
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import EventSubscriber, StatusWatcher
from tests.support.network import free_port
from tests.support.openai_server import DESCRIPTION, FakeOpenAI, paced, serve_fake
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.heavy(140)]

WINDOWS = [(1.0 + 2 * k, 1.8 + 2 * k) for k in range(5)]  # five motion events
FALLBACK = "Motion detected on Porch"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("drain-clips")
    return generate_sample_video(folder / "porch.mp4", seconds=12, motion_windows=WINDOWS, seed=7)


@pytest.fixture
def vlm() -> Iterator[FakeOpenAI]:
    # 1.5 s per answer, one at a time: the clip (decoded faster than real time) is cut long
    # before the five are answered, and a drain waits about 7 s for them
    yield from serve_fake(paced(delay_s=1.5, free_requests=1))  # the replica's warm-up: at once


def write_config(
    folder: Path, clip: Path, vlm: FakeOpenAI, model: str, broker: int, api: int
) -> Path:
    config = folder / "liveobject.yaml"
    config.write_text(
        f"""
ray: {{namespace: drain-{folder.name[-12:].lower()}, num_cpus: 4}}
cameras:
  - id: porch
    name: Porch
    source: {clip}
    detect_fps: 5
    motion: {{end_after_s: 0.5}}
vlm:
  backend: openai
  model: {model}
  base_url: {vlm.base_url}
  timeout_s: 300
  deadline_s: 300
  num_cpus: 0.25
  max_batch_size: 4
  image_size: 96
  dedupe: {{enabled: false}}  # every segment goes to the (held) VLM
storage: {{path: {folder / "store"}}}
mqtt: {{host: 127.0.0.1, port: {broker}, qos: 1, topic_prefix: drain}}
api: {{host: 127.0.0.1, port: {api}, base_url: "http://127.0.0.1:{api}"}}
shutdown: {{drain_timeout_s: 120}}
"""
    )
    return config


class Run:
    """`liveobject run` as a process (a pipe, or a pty as its controlling terminal)."""

    def __init__(self, config: Path, *, terminal: bool) -> None:
        self.output = bytearray()
        self._master: int | None = None
        if terminal:
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
            self.proc = subprocess.Popen(
                [*CLI, "run", "--config", str(config), "--no-dashboard"],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env={**cli_env(), "TERM": "xterm"},
                preexec_fn=_controlling_terminal,
            )
            os.close(slave)
            self._master = master
            self._reader = threading.Thread(target=self._read_pty, daemon=True)
        else:
            self.proc = subprocess.Popen(
                [*CLI, "run", "--config", str(config), "--no-dashboard"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=cli_env(),
            )
            self._reader = threading.Thread(target=self._read_pipe, daemon=True)
        self._reader.start()

    def _read_pipe(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output += line

    def _read_pty(self) -> None:
        assert self._master is not None
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO once the child side is closed
                return
            if not chunk:
                return
            self.output += chunk

    def ctrl_c(self) -> None:
        """Type Ctrl-C on the terminal: SIGINT to its whole foreground process group."""
        assert self._master is not None
        os.write(self._master, b"\x03")

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        if self._master is not None:
            os.close(self._master)


def _controlling_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Arrivals(EventSubscriber):
    """The end-to-end subscriber, noting when each message arrived."""

    def __init__(self, port: int, topic: str) -> None:
        self.arrived: dict[str, datetime] = {}
        super().__init__(port, topic)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        import json

        self.arrived.setdefault(json.loads(msg.payload)["event_id"], datetime.now(UTC))
        super()._on_message(client, userdata, msg)


def api_camera(api: int) -> dict[str, Any]:
    """The camera's state from the API; raises when the API does not answer with it."""
    (camera,) = cameras_of(api, timeout=5)
    return camera


def camera_state(api: int) -> dict[str, Any]:
    """The camera's state, or {} while the API does not answer (for polling)."""
    try:
        return api_camera(api)
    except (httpx.HTTPError, ValueError, KeyError):
        return {}


def in_flight_with_all_cut(api: int, run: Run) -> dict[str, Any]:
    """Wait until the whole clip is cut and analyses are still running; the camera state."""

    def ready() -> dict[str, Any] | None:
        assert run.proc.poll() is None, run.text()[-3000:]
        cam = camera_state(api)
        busy = cam.get("in_flight", 0) + cam.get("queue_depth", 0)
        return cam if cam.get("ingest_done") and busy and cam.get("events", 0) < 5 else None

    try:
        state: dict[str, Any] = wait_for(ready, 240, "all segments cut with analyses in flight")
    except AssertionError as exc:
        detail = f"{exc}; camera: {camera_state(api)}; run: {run.text()[-3000:]}"
        raise AssertionError(detail) from None
    return state


def check_nothing_lost(
    folder: Path, run: Run, subscriber: Arrivals, watcher: StatusWatcher, description: str
) -> dict[str, int]:
    """Every segment cut is stored and published; counts for the report."""
    text = run.text()
    (drain,) = [line.strip() for line in text.splitlines() if line.strip().startswith("segments:")]
    cut, stored = int(drain.split()[1]), int(drain.split()[3])
    assert drain.endswith("0 lost"), drain
    assert cut == len(WINDOWS) and stored == cut, drain  # one event per window, none merged
    summary = [line.strip() for line in text.splitlines() if line.strip().startswith("events:")]
    assert summary and summary[-1] == f"events: {stored} stored, {stored} published", text[-2000:]
    with duckdb.connect(str(folder / "store" / "events.duckdb"), read_only=True) as db:
        rows = db.execute(
            "SELECT event_id, description, published_at IS NOT NULL, media_offset_s FROM events"
        ).fetchall()
    assert len(rows) == cut and len({r[0] for r in rows}) == cut
    assert {r[1] for r in rows} == {description}, rows
    assert all(r[2] for r in rows), "every event was published (the broker is up)"
    assert sorted(round(r[3]) for r in rows) == [round(start) for start, _ in WINDOWS]
    received = {payload["event_id"]: payload for _t, _q, _r, payload in subscriber.messages}
    assert set(received) == {r[0] for r in rows}
    for event_id, payload in received.items():
        jsonschema.validate(payload, event_schema())
        stamped = datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
        assert stamped <= subscriber.arrived[event_id], (payload["timestamp"], event_id)
    assert watcher.payloads and watcher.payloads[-1] == "offline"
    counts = {"segments_cut": cut, "stored": len(rows), "published": len(received)}
    print(f"\nstop-mid-run counts: {counts}")
    return counts


def start(
    tmp_path: Path, clip: Path, vlm: FakeOpenAI, model: str, broker: Mosquitto, terminal: bool
) -> tuple[Run, Arrivals, StatusWatcher, int, Path]:
    api = free_port()
    config = write_config(tmp_path, clip, vlm, model, broker.port, api)
    subscriber = Arrivals(broker.port, "drain/camera/+/event")
    watcher = StatusWatcher(broker.port, "drain/status")
    return Run(config, terminal=terminal), subscriber, watcher, api, config


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "liveobject stop"])
def test_stop_with_analyses_in_flight_stores_and_publishes_every_segment(
    how: str, tmp_path: Path, clip: Path, vlm: FakeOpenAI, mosquitto: Mosquitto
) -> None:
    run, subscriber, watcher, api, config = start(tmp_path, clip, vlm, "slow", mosquitto, False)
    try:
        state = in_flight_with_all_cut(api, run)
        assert state["segments"] == len(WINDOWS)
        children = psutil.Process(run.proc.pid).children(recursive=True)
        assert children, "a local Ray cluster has processes"
        if how == "liveobject stop":
            stopped = cli("stop", "--config", str(config))
            assert stopped.returncode == 0, stopped.stderr[-2000:]
        else:
            run.proc.send_signal(getattr(signal, how))
        assert run.proc.wait(timeout=240) == 0, run.text()[-4000:]
        time.sleep(0.5)  # the last messages reach the subscriber
    finally:
        run.close()
        subscriber.stop()
        watcher.stop()
    check_nothing_lost(tmp_path, run, subscriber, watcher, DESCRIPTION)
    assert len(vlm.requests) >= len(WINDOWS)  # each event was described by the VLM, none skipped
    _gone, alive = psutil.wait_procs(children, timeout=30)  # the local cluster ended with the run
    assert not alive, f"left behind: {[p.pid for p in alive]}"


def test_ctrl_c_in_a_terminal_drains_and_a_second_one_stores_pending_with_fallback(
    tmp_path: Path, clip: Path, vlm: FakeOpenAI, mosquitto: Mosquitto
) -> None:
    run, subscriber, watcher, api, _config = start(tmp_path, clip, vlm, "hang", mosquitto, True)
    try:
        in_flight_with_all_cut(api, run)
        run.ctrl_c()
        wait_for(lambda: "stopping: finishing queued" in run.text(), 30, "the first Ctrl-C")
        # the VLM never answers: the first Ctrl-C alone waits (drain_timeout_s 120) ...
        wait_for(lambda: camera_state(api).get("draining"), 30, "the camera to drain")
        assert run.proc.poll() is None
        waiting = api_camera(api)  # a status that does not answer fails here, never passes
        assert waiting["draining"] and waiting["events"] == 0, waiting
        run.ctrl_c()  # ... a second one stops waiting for the VLM and stores them all
        wait_for(lambda: "segments:" in run.text(), 120, "the drain summary")
        vlm.release()  # let the abandoned requests end, so Serve shuts down at once
        assert run.proc.wait(timeout=180) == 0, run.text()[-4000:]
        time.sleep(0.5)
    finally:
        run.close()
        subscriber.stop()
        watcher.stop()
    counts = check_nothing_lost(tmp_path, run, subscriber, watcher, FALLBACK)
    assert f"{counts['stored']} given the fallback text at stop" in run.text()
