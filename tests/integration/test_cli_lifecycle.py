"""`liveobject run` (until stopped), `status`, `replay`, `stop` and `config check`, as processes."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.samples import generate_sample_video
from tests.support.cli import CLI, cli, cli_env, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import StatusWatcher
from tests.support.network import free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.heavy(60)]


def wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 180) -> dict[str, Any]:
    """The API's health once it answers 200; fails at once when the run exits."""

    def healthy() -> dict[str, Any] | None:
        resp = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
        return dict(resp.json()) if resp.status_code == 200 else None

    health: dict[str, Any] = wait_for(
        healthy,
        timeout,
        "a healthy API",
        interval=1,
        ignore=(httpx.HTTPError, ValueError),
        abort=lambda: None if proc.poll() is None else "liveobject run exited early",
    )
    return health


def test_run_status_replay_stop(tmp_path: Path, tiny_model: Path, mosquitto: Mosquitto) -> None:
    clip = generate_sample_video(tmp_path / "a.mp4", seconds=4, motion_windows=[(1.0, 2.5)])
    api_port = free_port()
    config = write_config(tmp_path, tiny_model, mosquitto.port, api_port, 1, [clip])
    watcher = StatusWatcher(mosquitto.port, "e2e/status")
    env = cli_env()
    proc = subprocess.Popen(
        [*CLI, "run", "--config", str(config), "--no-dashboard"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        health = wait_healthy(api_port, proc)
        assert health["status"] == "ok"

        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{api_port}/api/v1/events", timeout=5).json()[
                "events"
            ],
            120,
            "an event to reach the API",
            interval=1,
        )

        status = cli("status", "--json", "--config", str(config))
        assert status.returncode == 0, status.stderr[-2000:]
        state = json.loads(status.stdout)
        assert state["cameras"]["cam_0"]["camera_id"] == "cam_0"
        assert state["mqtt"]["connected"] is True
        assert state["store"]["stored"] >= 1

        replay = cli("replay", "--since", "1h", "--config", str(config))
        assert replay.returncode == 0, replay.stderr[-2000:]
        assert replay.stdout.startswith("replayed ")
        assert int(replay.stdout.split()[1]) >= 1

        stop = cli("stop", "--config", str(config))
        assert stop.returncode == 0, stop.stderr[-2000:]
        assert proc.wait(timeout=120) == 0, "".join(output)[-3000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        watcher.stop()
    reader.join(timeout=5)
    text = "".join(output)
    assert f"API: http://127.0.0.1:{api_port}/api/v1" in text
    assert any(line.startswith("events: ") for line in text.splitlines()), text[-2000:]
    assert watcher.payloads and watcher.payloads[-1] == "offline"  # clean stop says offline


def test_status_without_a_cluster_fails_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"cameras: [{{id: a, source: {tmp_path}/x.mp4}}]\n"
        f"ray: {{address: '127.0.0.1:{free_port()}'}}\n"
        f"storage: {{path: {tmp_path}}}\n"
    )
    result = cli("status", "--config", str(config), timeout=120)
    assert result.returncode == 1
    assert "no running liveobject cluster" in result.stderr


def test_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"cameras:\n  - id: porch\n    source: {tmp_path}/porch.mp4\n")
    ok = cli("config", "check", str(good))
    assert ok.returncode == 0 and ok.stdout.startswith("ok")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  - id: porch\n    source: x.mp4\n    colour: red\n")
    result = cli("config", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:4:" in result.stderr and "colour" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["run", "--config", "/nonexistent.yaml"]])
def test_run_with_missing_config_is_a_clear_error(args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert "nonexistent.yaml" in result.stderr and "Traceback" not in result.stderr


# SIGTERM as a graceful stop that leaves no process: tests/integration/test_stop_drain.py
