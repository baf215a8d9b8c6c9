"""A whole `liveobject run` whose store volume (a small tmpfs) fills while a live camera sees
motion: health, `liveobject status` and the console say so, the camera keeps its events, and
once space returns every event is stored once, published once and exported once; the run
stops with exit 0. Needs root on Linux to mount the tmpfs (CI runs as root)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from pipelines.samples import generate_sample_video
from tests.support.cli import Run, cli, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Subscriber
from tests.support.network import free_port
from tests.support.streams import TSServer
from tests.unit.test_storage import _fill, _mount_tmpfs

pytestmark = [pytest.mark.integration, pytest.mark.heavy(90)]


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(api_port: int) -> tuple[int, dict[str, Any]]:
    resp = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health", timeout=5)
    return resp.status_code, resp.json()


def _status(config: Path) -> dict[str, Any]:
    result = cli("status", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(json.loads(result.stdout))


def test_the_store_volume_fills_mid_run_and_every_event_lands_once(
    tmp_path: Path, tiny_model: Path, mosquitto: Mosquitto
) -> None:
    volume = tmp_path / "volume"
    if not _mount_tmpfs(volume, "48m"):
        pytest.skip("cannot mount a size-limited tmpfs here (needs root on Linux)")
    clip = generate_sample_video(tmp_path / "live.mp4", seconds=5, motion_windows=[(1.0, 2.5)])
    stream = TSServer(clip, _free_udp_port())
    api_port = free_port()
    config = write_config(
        volume, tiny_model, mosquitto.port, api_port, 1, [f"udp://127.0.0.1:{stream.port}"]
    )  # the config is small; the store is `volume/store`, on the tmpfs
    subscriber = Subscriber(mosquitto.port, ["e2e/camera/+/event"])
    stream.start()
    run = Run(config, "--no-dashboard")
    try:
        run.wait_for(lambda: _health(api_port)[0] == 200, 180, "a healthy run")
        run.wait_for(lambda: _status(config)["store"]["stored"] >= 2, 120, "events stored")

        filler = _fill(volume, keep_free=0)  # the volume is full; the camera keeps seeing motion
        run.wait_for(
            lambda: (h := _health(api_port))[0] == 503 and "disk full" in json.dumps(h[1]) and h,
            120,
            "health to say the disk is full",
        )
        state = run.wait_for(
            lambda: (s := _status(config))["cameras"]["cam_0"]["unsaved"] >= 2 and s,
            120,
            "the camera to hold events it cannot save",
        )
        assert state["store"]["ok"] is False and "disk full" in state["store"]["detail"]
        assert state["cameras"]["cam_0"]["dropped"] == 0
        run.wait_for(lambda: "DEGRADED: disk full" in run.output, 30, "the console to say so")

        filler.unlink()  # space returns: what the camera kept is saved
        run.wait_for(lambda: _health(api_port)[0] == 200, 120, "health to recover")
        final = run.wait_for(
            lambda: (s := _status(config))["cameras"]["cam_0"]["unsaved"] == 0 and s,
            120,
            "the camera's outbox to empty",
        )
        camera = final["cameras"]["cam_0"]
        assert camera["dropped"] == 0 and camera["save_failures"] >= 1

        stop = cli("stop", "--config", str(config))
        assert stop.returncode == 0, stop.stderr[-2000:]
        assert run.wait(timeout=180) == 0, run.output[-3000:]
        stored, exported = _stored_and_exported(volume / "store")
    finally:
        run.end()
        stream.kill()
        subscriber.close()
        subprocess.run(["umount", "-l", str(volume)], check=False)
    assert len(stored) == len(set(stored)) >= camera["events"] >= 3
    assert f"events: {len(stored)} stored, {len(stored)} published" in run.output
    assert "0 lost" in run.output
    received = subscriber.event_ids("e2e/camera/cam_0/event")
    assert sorted(received) == sorted(stored)  # each published once, none missing
    assert sorted(exported) == sorted(stored)  # Parquet = DuckDB


def _stored_and_exported(store: Path) -> tuple[list[str], list[str]]:
    """Every stored event id (DuckDB) and every exported one (the Parquet files)."""
    with duckdb.connect(str(store / "events.duckdb"), read_only=True) as con:
        stored = [r[0] for r in con.execute("SELECT event_id FROM events").fetchall()]
        published = con.execute("SELECT count(*) FROM events WHERE published_at IS NULL")
        assert published.fetchone() == (0,)
    with duckdb.connect() as con:
        pattern = str(store / "parquet" / "**" / "*.parquet")
        rows = con.execute("SELECT event_id FROM read_parquet(?)", [pattern]).fetchall()
    return stored, [r[0] for r in rows]
