"""A real `ray start --head` that one test owns: free ports, its own temp dir, ended by pid.

`ray stop` would end every Ray on the machine (other tests' included), so the head is found
and ended by its processes instead: every process whose command line names this head's temp
dir, and their descendants (workers, agents). `pids()` lists them; `stop()` ends exactly those
and returns the ones still alive afterwards (none, or the test fails).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from tests.support.network import free_port

RAY = str(Path(sys.executable).with_name("ray"))


class RayHead:
    """`ray start --head` on free ports, token auth on or off."""

    def __init__(
        self, *, num_cpus: float = 4, auth: str | None = None, resources: str = ""
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        # a short path: Ray's unix sockets live below it (108-byte limit)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="lo-", dir="/tmp"))
        self.address = f"127.0.0.1:{self.port}"
        self.num_cpus = num_cpus
        self.auth = auth  # None: Ray's default (token when ~/.ray/auth_token exists)
        self.resources = resources

    def env(self) -> dict[str, str]:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        env.pop("RAY_AUTH_MODE", None)
        if self.auth is not None:
            env["RAY_AUTH_MODE"] = self.auth
        return env

    def start(self) -> None:
        args = [
            RAY,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            f"--num-cpus={self.num_cpus}",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={self.metrics_port}",
            "--object-store-memory=200000000",
        ]
        if self.resources:
            args.append(f"--resources={self.resources}")
        done = subprocess.run(
            args, env=self.env(), capture_output=True, text=True, timeout=180, check=False
        )
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start --head failed:\n{done.stdout}\n{done.stderr}")

    def pids(self) -> list[int]:
        """Every live process of this head: named by its temp dir, and their descendants."""
        tag = str(self.temp_dir)
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if proc.pid != os.getpid() and any(tag in a for a in proc.info["cmdline"] or []):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
            except psutil.Error:
                continue
        return sorted(found)

    def stop(self) -> list[int]:
        """End this head's processes (TERM, then KILL); the pids still alive (should be none)."""
        procs = []
        for pid in self.pids():
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                continue
        for proc in procs:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _gone, alive = psutil.wait_procs(procs, timeout=5)  # then KILL: ours alone
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)
        left = self.pids()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left


def run_watched(
    args: list[str], *, env: dict[str, str], timeout: float, cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """Run a command; also return the pids of its descendants (seen once a second) still
    alive 30 s after it exited — the Ray processes it failed to end (should be none)."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    seen: dict[int, psutil.Process] = {}
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=buffer.extend, args=(stream,), daemon=True)
        for stream, buffer in ((proc.stdout, out), (proc.stderr, err))
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                seen.update({c.pid: c for c in psutil.Process(proc.pid).children(recursive=True)})
            except psutil.Error:
                pass
            time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    for reader in readers:
        reader.join(timeout=10)
    _gone, alive = psutil.wait_procs(list(seen.values()), timeout=30)
    left = []
    for proc_left in alive:
        try:
            if proc_left.status() != psutil.STATUS_ZOMBIE:
                left.append(proc_left.pid)
                proc_left.kill()
        except psutil.Error:
            continue
    done = subprocess.CompletedProcess(args, proc.returncode, "".join(out), "".join(err))
    return done, left
