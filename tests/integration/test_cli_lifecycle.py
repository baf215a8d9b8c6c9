"""`liveobject run` (until stopped), `status`, `replay`, `stop` and `config check`, as processes;
a full disk in the middle of a run."""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from pipelines.samples import generate_sample_video
from tests.support.cli import Run, cameras_of, cli, events_of, openai_vlm, write_config
from tests.support.disk import fill_disk, mount_tmpfs
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import StatusWatcher, Subscriber
from tests.support.network import free_port, free_udp_port
from tests.support.openai_server import FakeOpenAI
from tests.support.streams import TSServer

pytestmark = [pytest.mark.integration, pytest.mark.heavy(90)]


def test_run_status_replay_a_full_disk_and_stop(
    tmp_path: Path, fake_vlm: FakeOpenAI, mosquitto: Mosquitto
) -> None:
    """`liveobject run` on a live camera, read by `status` and `replay`, and stopped by `stop`.
    In between, the store's volume (a small tmpfs; needs root on Linux, as CI runs) fills
    while the camera sees motion: health, `status` and the console say so, the camera keeps
    its events, and once space returns every event is stored, published and exported once."""
    volume = tmp_path / "volume"
    full_disk = mount_tmpfs(volume, "48m")
    if not full_disk:
        warnings.warn(
            "no size-limited tmpfs (needs root on Linux): disk-full part left out", stacklevel=1
        )
    clip = generate_sample_video(tmp_path / "live.mp4", seconds=5, motion_windows=[(1.0, 2.5)])
    stream = TSServer(clip, free_udp_port())
    api_port = free_port()
    config = write_config(
        volume,
        None,
        mosquitto.port,
        api_port,
        1,
        [f"udp://127.0.0.1:{stream.port}"],
        vlm=openai_vlm(fake_vlm.base_url),
    )  # the config is small; the store is `volume/store`, on the tmpfs
    subscriber = Subscriber(mosquitto.port, ["e2e/camera/+/event"])
    watcher = StatusWatcher(mosquitto.port, "e2e/status")
    stream.start()
    run = Run(config, "--no-dashboard")
    try:
        run.wait_for(lambda: _health(api_port) == (200, "ok"), 180, "a healthy run")
        run.wait_for(lambda: len(events_of(api_port, "cam_0")) >= 2, 120, "events stored")
        state = _status(config)
        assert state["store"]["stored"] >= 2
        assert state["cameras"]["cam_0"]["camera_id"] == "cam_0"
        assert state["mqtt"]["connected"] is True
        replay = cli("replay", "--since", "1h", "--config", str(config))
        assert replay.returncode == 0, replay.stderr[-2000:]
        assert replay.stdout.startswith("replayed ")
        replayed = int(replay.stdout.split()[1])
        assert replayed >= 2

        if full_disk:
            _fill_the_disk_and_free_it(run, volume, api_port, config)

        run.wait_for(lambda: _camera(api_port)["unsaved"] == 0, 120, "the camera's outbox to empty")
        camera = _status(config)["cameras"]["cam_0"]
        assert camera["dropped"] == 0 and camera["save_failures"] >= (1 if full_disk else 0)
        stop = cli("stop", "--config", str(config))
        assert stop.returncode == 0, stop.stderr[-2000:]
        assert run.wait(timeout=180) == 0, run.output[-3000:]
        stored, exported = _stored_and_exported(volume / "store")
    finally:
        run.end()
        stream.kill()
        subscriber.close()
        watcher.stop()
        if full_disk:
            subprocess.run(["umount", "-l", str(volume)], check=False)
    assert len(stored) == len(set(stored)) >= camera["events"] >= 3
    assert f"events: {len(stored)} stored, {len(stored)} published" in run.output
    assert "0 lost" in run.output
    assert f"API: http://127.0.0.1:{api_port}/api/v1" in run.output
    received = subscriber.event_ids("e2e/camera/cam_0/event")
    assert set(received) == set(stored)  # every stored event published, none more...
    assert len(received) == len(stored) + replayed  # ...once each, plus what replay sent again
    assert sorted(exported) == sorted(stored)  # Parquet = DuckDB
    assert watcher.payloads and watcher.payloads[-1] == "offline"  # clean stop says offline


def _fill_the_disk_and_free_it(run: Run, volume: Path, api_port: int, config: Path) -> None:
    filler = fill_disk(volume, keep_free=0)  # the volume is full; the camera keeps seeing motion
    run.wait_for(
        lambda: (h := _health(api_port))[0] == 503 and "disk full" in h[1],
        120,
        "health to say the disk is full",
    )
    run.wait_for(
        lambda: _camera(api_port)["unsaved"] >= 2, 120, "the camera to hold events it cannot save"
    )
    state = _status(config)  # the disk is still full: the camera holds on to them
    assert state["cameras"]["cam_0"]["unsaved"] >= 2
    assert state["store"]["ok"] is False and "disk full" in state["store"]["detail"]
    assert state["cameras"]["cam_0"]["dropped"] == 0
    run.wait_for(lambda: "DEGRADED: disk full" in run.output, 30, "the console to say so")
    filler.unlink()  # space returns: what the camera kept is saved
    run.wait_for(lambda: _health(api_port)[0] == 200, 120, "health to recover")


def _health(api_port: int) -> tuple[int, str]:
    """The status code and the body's text."""
    resp = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health", timeout=5)
    return resp.status_code, str(
        resp.json().get("status")
    ) if resp.status_code == 200 else resp.text


def _camera(api_port: int) -> dict[str, Any]:
    """cam_0's live status as the API lists it: what the waits poll (a `liveobject status`
    is a new process joining Ray, about 1.6 CPU-s each; it is called once a wait is over)."""
    (camera,) = (c for c in cameras_of(api_port) if c["camera_id"] == "cam_0")
    return camera


def _status(config: Path) -> dict[str, Any]:
    """`liveobject status --json`, the command under test."""
    result = cli("status", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(json.loads(result.stdout))


def _stored_and_exported(store: Path) -> tuple[list[str], list[str]]:
    """Every stored event id (DuckDB; each marked published) and every exported one (Parquet)."""
    with duckdb.connect(str(store / "events.duckdb"), read_only=True) as con:
        stored = [r[0] for r in con.execute("SELECT event_id FROM events").fetchall()]
        unpublished = con.execute("SELECT count(*) FROM events WHERE published_at IS NULL")
        assert unpublished.fetchone() == (0,)
    with duckdb.connect() as con:
        pattern = str(store / "parquet" / "**" / "*.parquet")
        rows = con.execute("SELECT event_id FROM read_parquet(?)", [pattern]).fetchall()
    return stored, [r[0] for r in rows]


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
