"""Every camera placed, or told why not: a 2-CPU local cluster with the default requests runs
sixteen file cameras (two ingest actors of eight), a seventeenth that asks for more than is
free is `unplaceable` — with what it needs and what is free — at start, in the live output,
`/api/v1/cameras` and on MQTT; a VLM that needs a GPU on a cluster without one fails at once.

The VLM is an OpenAI-compatible fake with the default `vlm.num_cpus` (1, whatever the backend):
what is placed is tested, not the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipelines.samples import generate_sample_video
from tests.support.cli import CLI, Run, cameras_of, cli_env, events_of
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import retained
from tests.support.network import free_port
from tests.support.openai_server import FakeOpenAI
from tests.support.ray_head import run_watched

pytestmark = [pytest.mark.integration, pytest.mark.heavy(50)]

CAMERAS = 16


def _config(folder: Path, vlm_url: str, broker: int, api_port: int, cameras: str) -> Path:
    path = folder / "liveobject.yaml"
    path.write_text(
        f"""
ray: {{num_cpus: 2, namespace: placement, placement_timeout_s: 3}}
cameras:
{cameras}
vlm: {{backend: openai, model: fast, base_url: '{vlm_url}', image_size: 96}}
storage: {{path: {folder / "store"}}}
mqtt: {{host: 127.0.0.1, port: {broker}, topic_prefix: place}}
api: {{host: 127.0.0.1, port: {api_port}, base_url: "http://127.0.0.1:{api_port}"}}
"""
    )
    return path


def _api_camera(api_port: int, camera_id: str) -> dict[str, Any] | None:
    found = [c for c in cameras_of(api_port) if c["camera_id"] == camera_id]
    return found[0] if found and found[0]["status"] == "unplaceable" else None


def test_sixteen_default_cameras_run_and_a_seventeenth_is_unplaceable(
    tmp_path: Path,
    fake_vlm: FakeOpenAI,
    mosquitto: Mosquitto,
) -> None:
    clips = [
        generate_sample_video(
            tmp_path / f"c{i}.mp4", seconds=4, motion_windows=[(1.0, 2.5)], seed=i
        )
        for i in range(CAMERAS)
    ]
    cameras = "\n".join(f"  - {{id: c{i}, source: {clip}}}" for i, clip in enumerate(clips))
    cameras += f"\n  - {{id: huge, source: {clips[0]}, num_cpus: 1.5}}"  # defaults elsewhere
    api_port = free_port()
    config = _config(tmp_path, fake_vlm.base_url, mosquitto.port, api_port, cameras)
    run = Run(config, "--until-done", "--linger", "300s", "--no-dashboard")
    try:
        run.wait_for(lambda: "events: " in run.output, 420, "the run's summary")
        unplaceable = run.wait_for(lambda: _api_camera(api_port, "huge"), 30, "API status")
        status = retained(mosquitto.port, "place/camera/huge/status")
        for i in range(CAMERAS):
            assert events_of(api_port, f"c{i}"), f"camera c{i} produced no event\n{run.output}"
        children = psutil.Process(run.proc.pid).children(recursive=True)
        run.end()
        assert run.proc.returncode == 0, run.output[-3000:]
        _gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"left behind: {[p.pid for p in alive]}"
    finally:
        run.end()
    reason = unplaceable["reason"]
    assert "needs CPU 1.5" in reason and "free: CPU" in reason, reason
    assert "camera huge cannot be placed now: needs CPU 1.5" in run.output, run.output[-3000:]
    assert "camera=huge status=unplaceable" in run.output  # the live output (plain lines)
    payload = json.loads(status["place/camera/huge/status"])
    assert payload["status"] == "unplaceable" and "needs CPU 1.5" in payload["reason"]
    summary = next(line for line in run.lines if line.startswith("events: "))
    assert int(summary.split()[1]) >= CAMERAS, summary


def test_gpu_vlm_on_a_cluster_without_gpu_fails_fast(tmp_path: Path) -> None:
    clip = generate_sample_video(tmp_path / "a.mp4", seconds=2, motion_windows=[(0.5, 1.0)])
    config = tmp_path / "gpu.yaml"
    config.write_text(
        f"ray: {{num_cpus: 1, namespace: nogpu}}\n"
        f"cameras: [{{id: a, source: {clip}}}]\n"
        "vlm: {num_gpus: 1}\n"
        f"storage: {{path: {tmp_path / 'store'}}}\n"
        "mqtt: {enabled: false}\n"
        f"api: {{host: 127.0.0.1, port: {free_port()}}}\n"
    )
    done, left = run_watched(
        [*CLI, "run", "--config", str(config), "--no-dashboard"], env=cli_env(), timeout=300
    )
    assert not left, f"Ray processes left behind: {left}"
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "vlm.num_gpus is 1 but no node of this Ray cluster has a GPU" in done.stderr
    assert "set vlm.num_gpus: 0" in done.stderr and "Traceback" not in done.stderr
