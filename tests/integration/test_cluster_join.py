"""`liveobject run` against a cluster that outlives it: a real `ray start --head` on this
machine (token auth on, or off), run → stop → run again with other cameras → apply in place
(the API key rotated with it), and two local runs side by side. Every Ray process a test starts
is ended by pid and checked.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.samples import generate_sample_video
from tests.support.cli import Run, cli_env, events_of, openai_vlm
from tests.support.cli import cli as run_cli_command
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import retained
from tests.support.network import free_port
from tests.support.openai_server import PACED_ANSWER, Reply, serve_fake
from tests.support.ray_head import RayHead

pytestmark = [pytest.mark.integration, pytest.mark.heavy(150)]

DISCOVERY = "ha_join"
OLD_KEY, NEW_KEY = "join-key-old-0123456789", "join-key-new-9876543210"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with the long timeout a join (or a refused one) may take."""
    return run_cli_command(*args, timeout=300, env=env)


def discovery_of(port: int, camera_id: str) -> dict[str, bytes]:
    return retained(port, f"{DISCOVERY}/+/liveobject_{camera_id}/+/config")


def write_config(
    path: Path,
    *,
    vlm: str,
    address: str | None,
    namespace: str,
    clips: dict[str, Path],
    broker: int,
    api_port: int,
    prefix: str,
    dashboard_port: int = 8265,
    api_key: str | None = None,
) -> Path:
    cameras = "\n".join(f"  - {{id: {cid}, source: {clip}}}" for cid, clip in clips.items())
    key = f", api_key: {api_key}" if api_key else ""
    address_line = f"address: '{address}', " if address else "num_cpus: 2, "
    address_line += f"dashboard_port: {dashboard_port}, "
    path.write_text(
        f"""
ray: {{{address_line}namespace: {namespace}, placement_timeout_s: 5}}
cameras:
{cameras}
vlm: {vlm}
storage: {{path: {path.parent / "store"}, parquet_flush_interval_s: 2}}
mqtt: {{host: 127.0.0.1, port: {broker}, topic_prefix: {prefix},
        discovery: {{prefix: {DISCOVERY}}}}}
api: {{host: 127.0.0.1, port: {api_port}, base_url: "http://127.0.0.1:{api_port}"{key}}}
"""
    )
    return path


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def thumbnail_link(port: int, camera_id: str) -> str:
    """The thumbnail URL in camera_id's retained `last_event` (a link Home Assistant keeps)."""
    (payload,) = retained(port, f"joined/camera/{camera_id}/last_event").values()
    url: str = json.loads(payload)["thumbnail_url"]
    assert "token=" in url, url  # signed: the API has a key
    return url


def camera_status(config: Path, camera_id: str) -> dict[str, Any]:
    done = cli("status", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)["cameras"][camera_id]
    return result


@pytest.fixture(scope="module")
def vlm() -> Iterator[str]:
    """The runs' VLM: a fake OpenAI-compatible server (nothing here is about the model; its
    replica starts in seconds, the tiny model's in 12-20 s, twice at once in the second test)."""
    for server in serve_fake(Reply(PACED_ANSWER)):
        yield openai_vlm(server.base_url)


@pytest.fixture
def head() -> Iterator[RayHead]:
    """A token-auth head (this machine has ~/.ray/auth_token once any local run happened)."""
    ray_head = RayHead(num_cpus=4)
    ray_head.start()
    try:
        yield ray_head
    finally:
        left = ray_head.stop()
        assert not left, f"Ray processes left behind: {left}"


def test_join_stop_rejoin_then_apply_in_place(
    tmp_path: Path,
    vlm: str,
    mosquitto: Mosquitto,
    head: RayHead,
) -> None:
    clips = {
        n: generate_sample_video(tmp_path / f"{n}.mp4", seconds=4, motion_windows=[(1.0, 2.5)])
        for n in ("a", "b", "c", "d")
    }
    api_port = free_port()

    def config(name: str, cams: str, key: str = OLD_KEY) -> Path:
        return write_config(
            tmp_path / name,
            vlm=vlm,
            address=head.address,
            namespace="joined",
            clips={c: clips[c] for c in cams},
            broker=mosquitto.port,
            api_port=api_port,
            prefix="joined",
            api_key=key,
        )

    first, second, third = config("first.yaml", "ab"), config("second.yaml", "ac"), None

    # without this machine's token the head refuses, and the error says so
    home = tmp_path / "home"
    home.mkdir()
    refused = cli("status", "--config", str(first), env=cli_env(HOME=str(home)))
    assert refused.returncode == 1
    assert "uses token authentication and no token was found" in refused.stderr

    run = Run(first)
    try:
        for cam in "ab":
            run.wait_for(lambda c=cam: events_of(api_port, c, OLD_KEY), 180, f"events of {cam}")
        assert discovery_of(mosquitto.port, "b"), "camera b's discovery was published"
        assert cli("stop", "--config", str(first)).returncode == 0
        assert run.wait() == 0, run.output[-3000:]
    finally:
        run.end()

    run = Run(second)  # the same cluster and namespace: a fresh store and publisher
    try:
        run.wait_for(lambda: events_of(api_port, "c", OLD_KEY), 180, "events of the added camera c")
        assert events_of(api_port, "a", OLD_KEY), "the store kept the first run's events"
        assert not discovery_of(mosquitto.port, "b"), "the removed camera's discovery is cleared"
        assert discovery_of(mosquitto.port, "c")

        again = cli("run", "--config", str(second))
        assert again.returncode == 1
        assert "already running in Ray namespace 'joined'" in again.stderr

        before = camera_status(second, "a")
        old_link = thumbnail_link(mosquitto.port, "a")  # a stays: only the key can refuse it
        assert httpx.get(old_link, timeout=10).status_code == 200
        # c removed, d added, a unchanged; and the API key rotated (the old one leaked, say)
        third = config("third.yaml", "ad", key=NEW_KEY)
        applied = cli("apply", "--config", str(third))
        assert applied.returncode == 0, applied.stderr[-3000:] + run.output[-3000:]
        result = json.loads(applied.stdout)
        assert (result["added"], result["removed"], result["unchanged"]) == (["d"], ["c"], ["a"])
        assert not result["redeploy_vlm"]
        run.wait_for(
            lambda: events_of(api_port, "d", NEW_KEY), 120, "events of camera d after apply"
        )
        # the rotation took effect at once, on the API and on the links the publisher signs
        events_url = f"http://127.0.0.1:{api_port}/api/v1/events"
        assert httpx.get(events_url, headers=bearer(OLD_KEY), timeout=10).status_code == 401
        assert httpx.get(events_url, headers=bearer(NEW_KEY), timeout=10).status_code == 200
        assert httpx.get(old_link, timeout=10).status_code in (401, 403)  # revoked
        new_link = thumbnail_link(mosquitto.port, "d")
        thumbnail = httpx.get(new_link, timeout=10)
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
        after = camera_status(third, "a")
        assert after["pid"] == before["pid"] and not after["restarted"]  # never restarted
        assert after["frames"] >= before["frames"] > 0
        assert not discovery_of(mosquitto.port, "c")
        assert cli("stop", "--config", str(third)).returncode == 0
        assert run.wait() == 0, run.output[-3000:]
    finally:
        run.end()
    assert "Traceback" not in run.output, run.output[-3000:]


def test_head_with_token_auth_disabled_is_joined(tmp_path: Path) -> None:
    ray_head = RayHead(num_cpus=1, auth="disabled")
    ray_head.start()
    try:
        config = tmp_path / "c.yaml"
        config.write_text(
            f"ray: {{address: '{ray_head.address}', namespace: nobody}}\n"
            f"cameras: [{{id: a, source: {tmp_path}/a.mp4}}]\n"
            f"storage: {{path: {tmp_path}}}\n"
        )
        done = cli("status", "--config", str(config))
        # joined (no auth error), and nothing of ours runs there
        assert done.returncode == 1, done.stdout
        assert "no `liveobject run` in Ray namespace 'nobody'" in done.stderr
        assert "token" not in done.stderr
    finally:
        left = ray_head.stop()
    assert not left, f"Ray processes left behind: {left}"


def test_two_local_runs_with_different_configs_side_by_side(
    tmp_path: Path,
    vlm: str,
    mosquitto: Mosquitto,
) -> None:
    import psutil

    busy = socket.socket()  # the configured dashboard port is taken (another Ray, say)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    runs: list[Run] = []
    try:
        for name in ("one", "two"):  # both start at once: both look for a free port
            folder = tmp_path / name
            folder.mkdir()
            clip = generate_sample_video(folder / "a.mp4", seconds=4, motion_windows=[(1.0, 2.5)])
            config = write_config(
                folder / "liveobject.yaml",
                vlm=vlm,
                address=None,
                namespace=name,
                clips={"a": clip},
                broker=mosquitto.port,
                api_port=free_port(),
                prefix=name,
                dashboard_port=taken,
            )
            # each stays up after its summary (API and all) until ended below
            runs.append(Run(config, "--until-done", "--linger", "300s"))
        for run in runs:
            run.wait_for(lambda r=run: "events: " in r.output, 300, "a run's summary")
        assert all(run.proc.poll() is None for run in runs), "both are up at the same time"
        children = [
            child for run in runs for child in psutil.Process(run.proc.pid).children(recursive=True)
        ]
        for run in runs:
            run.end()
            assert run.proc.returncode == 0, run.output[-3000:]
        _gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"left behind: {[p.pid for p in alive]}"
    finally:
        busy.close()
        for run in runs:
            run.end()
    dashboards = set()
    for run in runs:
        summary = next(line for line in run.lines if line.startswith("events: "))
        stored, published = (int(w) for w in summary.split()[1::2][:2])
        assert stored >= 1 and published == stored, summary
        url = next(line for line in run.lines if line.startswith("Ray dashboard: "))
        dashboards.add(url.split()[-1])
    assert len(dashboards) == 2 and "not" not in "".join(dashboards)  # two dashboards
    for run in runs:
        assert f"Ray dashboard port {taken} is busy" in run.output  # and it said which it used
