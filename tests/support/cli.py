"""The `liveobject` CLI as a process: its command line and environment, a run whose output is
collected, a run config for the tiny VLM, and the events a running API serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.waiting import wait_for

CLI = [sys.executable, "-m", "cluster.cli"]
RUN_TIMEOUT_S = 420  # a whole `run --until-done` of a few short clips on a busy machine


def cli_env(**extra: str) -> dict[str, str]:
    """This environment, offline, without anything that would join another Ray cluster."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", **extra}
    env.pop("RAY_ADDRESS", None)  # the shared test cluster must not be joined by accident
    env.pop("RAY_AUTH_MODE", None)
    return env


def cli(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `liveobject ARGS` to the end; its output captured."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(),
        check=False,
    )


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `liveobject ARGS` in cwd, allowing a whole `run --until-done`."""
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


class Run:
    """A `liveobject run` process whose output is collected."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "run", "--config", str(config), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli_env(),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """check()'s first truthy value, polled while this run lives; a failed API call
        counts as "not yet"; a failure shows the run's output."""
        return wait_for(
            check,
            timeout,
            what,
            interval=0.5,
            ignore=(httpx.HTTPError, ValueError, KeyError),
            abort=lambda: None if self.proc.poll() is None else "liveobject run exited",
            context=lambda: self.output[-4000:],
        )

    def wait(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_config(
    folder: Path,
    model: Path | None,
    broker_port: int | None,
    api_port: int,
    qos: int,
    clips: list[Path],
    *,
    namespace: str = "liveobject-e2e",
    storage_extra: str = "",
    chains: dict[str, tuple[str, str]] | None = None,
    vlm: str | None = None,
) -> Path:
    """A `liveobject run` config: one camera per clip, the tiny VLM, MQTT off when no broker.
    `chains`: camera id → (name, YAML flow mapping) of a `vlm.backends` chain it uses; `vlm`:
    a YAML flow mapping for the whole `vlm` section instead (e.g. `openai_vlm(...)`)."""
    chains = chains or {}
    cameras = "\n".join(
        f"  - id: cam_{i}\n    name: Camera {i}\n    source: {clip}\n    detect_fps: 5"
        + (f"\n    vlm: {chains[f'cam_{i}'][0]}" if f"cam_{i}" in chains else "")
        for i, clip in enumerate(clips)
    )
    backends = "".join(f"\n    {name}: {spec}" for name, spec in chains.values())
    mqtt = (
        "{enabled: false}"
        if broker_port is None
        else f"{{host: 127.0.0.1, port: {broker_port}, qos: {qos}, topic_prefix: e2e}}"
    )
    vlm_section = (
        f" {vlm}"
        if vlm
        else (
            f"\n  model: {model}\n  num_cpus: 0.5\n  max_batch_size: 4\n  max_new_tokens: 12\n"
            f"  image_size: 96" + ("" if not backends else "\n  backends:" + backends)
        )
    )
    config = folder / "liveobject.yaml"
    config.write_text(
        f"""
ray: {{namespace: {namespace}, num_cpus: 4}}
cameras:
{cameras}
vlm:{vlm_section}
storage: {{path: {folder / "store"}{storage_extra}}}
mqtt: {mqtt}
api: {{host: 127.0.0.1, port: {api_port}, base_url: "http://127.0.0.1:{api_port}"}}
"""
    )
    return config


def events_of(api_port: int, camera_id: str, key: str | None = None) -> list[dict[str, Any]]:
    """The events a running API lists for camera_id (none while it does not answer 200)."""
    url = f"http://127.0.0.1:{api_port}/api/v1/events"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = httpx.get(url, params={"camera_id": camera_id}, headers=headers, timeout=5)
    return list(resp.json()["events"]) if resp.status_code == 200 else []


def cameras_of(api_port: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The cameras a running API lists, with their live status (raises unless it answers 200)."""
    resp = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/cameras", timeout=timeout)
    resp.raise_for_status()
    return list(resp.json()["cameras"])


def openai_vlm(base_url: str, model: str = "fast") -> str:
    """The `vlm` section (a YAML flow mapping) for a fake OpenAI-compatible server: for runs
    whose checks are not about the model (its replica starts in ~4 s, the tiny model's in
    12-20 s on 2 cores); the tiny model's runs are the end-to-end tests and the demo."""
    return (
        f"{{backend: openai, model: {model}, base_url: '{base_url}', num_cpus: 0.5, "
        "image_size: 96}"
    )
