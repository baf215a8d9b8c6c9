"""Which process is which stage, and what each used: peak RSS and CPU seconds, sampled.

Ray names a worker process after the actor it runs (`ray::IngestActor`,
`ray::ServeReplica:vlm:VLM`, …); a watcher samples every process under a root pid (the
`liveobject run` process) twice a second and keeps, per process, its stage, its peak RSS and
its CPU time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

STAGES = (  # (stage, what the process title starts with)
    ("camera", "ray::IngestActor"),
    ("vlm", "ray::ServeReplica:vlm"),
    ("store", "ray::EventStoreActor"),
    ("publisher", "ray::MqttPublisher"),
    ("api", "ray::ServeReplica:api"),
    ("serve", "ray::ProxyActor"),
    ("serve", "ray::ServeController"),
)


def stage_of(title: str) -> str:
    """The pipeline stage a process title belongs to ("ray" for Ray's own, "other" else)."""
    for stage, prefix in STAGES:
        if title.startswith(prefix):
            return stage
    if title.startswith("ray::") or any(n in title for n in ("raylet", "gcs_server", "ray/")):
        return "ray"
    return "other"


@dataclass
class ProcInfo:
    """What was seen of one process."""

    pid: int
    stage: str
    title: str
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0


class ProcessWatch:
    """Samples the processes under `root_pid` in a thread until stop()."""

    def __init__(self, root_pid: int, interval_s: float = 0.5) -> None:
        self.root = psutil.Process(root_pid)
        self.interval_s = interval_s
        self.procs: dict[int, ProcInfo] = {}
        self._handles: dict[int, psutil.Process] = {}  # is_running() guards against pid reuse
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="proc-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """Read every process under the root once."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                with proc.oneshot():
                    cmd = proc.cmdline()
                    title = (cmd[0] if cmd else proc.name()).strip()
                    rss = proc.memory_info().rss / 2**20
                    times = proc.cpu_times()
            except psutil.Error:
                continue
            stage = "driver" if proc.pid == self.root.pid else stage_of(title)
            with self._lock:
                self._handles.setdefault(proc.pid, proc)
                info = self.procs.setdefault(proc.pid, ProcInfo(proc.pid, stage, title))
                if stage != "ray" or info.stage in ("ray", "other"):
                    info.stage, info.title = stage, title  # an idle worker became an actor
                info.peak_rss_mb = max(info.peak_rss_mb, rss)
                info.cpu_s = times.user + times.system

    def cpu_by_pid(self) -> dict[int, float]:
        """CPU seconds so far per process."""
        self.sample()
        with self._lock:
            return {pid: info.cpu_s for pid, info in self.procs.items()}

    def stage_cores(self, since: dict[int, float], seconds: float) -> dict[str, float]:
        """Cores each stage used since the `since` reading (`cpu_by_pid`), over `seconds`."""
        now = self.cpu_by_pid()
        used: dict[str, float] = {}
        with self._lock:
            for pid, cpu in now.items():
                stage = self.procs[pid].stage
                used[stage] = used.get(stage, 0.0) + cpu - since.get(pid, 0.0)
        return {stage: round(cpu / seconds, 3) for stage, cpu in sorted(used.items())}

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)

    def kill_left(self) -> list[str]:
        """Kill every process seen under the root that still runs (by pid, the same process);
        the titles of those killed."""
        with self._lock:
            handles = list(self._handles.values())
        killed = []
        for proc in handles:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
                    killed.append(self.procs[proc.pid].title)
            except psutil.Error:
                continue
        return killed

    def by_stage(self) -> dict[str, dict[str, Any]]:
        """Per stage: processes, peak RSS of its largest process, summed CPU seconds."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for info in self.procs.values():
                entry = out.setdefault(
                    info.stage, {"processes": 0, "peak_rss_mb": 0.0, "cpu_s": 0.0}
                )
                entry["processes"] += 1
                entry["peak_rss_mb"] = round(max(entry["peak_rss_mb"], info.peak_rss_mb), 1)
                entry["cpu_s"] = round(entry["cpu_s"] + info.cpu_s, 2)
        return out

    def busiest(self, stage: str, since: dict[int, float]) -> ProcInfo | None:
        """The process of `stage` that used the most CPU since the `since` reading."""
        now = self.cpu_by_pid()
        with self._lock:
            candidates = [i for i in self.procs.values() if i.stage == stage]
        if not candidates:
            return None
        return max(candidates, key=lambda i: now.get(i.pid, 0.0) - since.get(i.pid, 0.0))


def wait_for(predicate: Any, timeout_s: float, poll_s: float = 0.5) -> bool:
    """Poll predicate() until it is true or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return bool(predicate())
