"""What every benchmark shares: the row format, percentiles, the machine, a broker, a Ray start.

A benchmark script writes `benchmarks/results/<name>.json`:

    {"benchmark": name, "quick": bool, "command": "...", "started": iso, "machine": {...},
     "rows": [Row.to_dict(), ...], "raw": {...anything else...}}

and `benchmarks/run.py` turns the rows of every script into one table. A row is one figure:
what was measured through the product (`ours`), the baseline measured in the same run on the
same input (`baseline`, named by `baseline_what`), their `ratio` (always oriented so that
higher is better), a `target` and the absolute numbers behind it (`detail`). Scripts owned by
other issues (search, noise control) write the same keys; see benchmarks/README.md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

PASS, MISS, INFO, FAILED, NOT_RUN = "pass", "miss", "info", "failed", "not run"


@dataclass(frozen=True)
class Target:
    """A goal on one number of a row: `on` ("ratio" or "ours") `op` (">=" or "<=") `value`."""

    on: str
    op: str
    value: float

    def met(self, row: Row) -> bool | None:
        """Whether the row meets it; None when the number is missing."""
        got = row.ratio if self.on == "ratio" else row.ours
        if got is None or (isinstance(got, float) and math.isnan(got)):
            return None
        return got >= self.value if self.op == ">=" else got <= self.value

    def text(self, unit: str) -> str:
        """E.g. `ratio ≥ 0.8` or `≤ 50 ms`."""
        sign = "≥" if self.op == ">=" else "≤"
        if self.on == "ratio":
            return f"ratio {sign} {self.value:g}"
        return f"{sign} {self.value:g} {unit}".rstrip()


@dataclass
class Row:
    """One figure of the results table (see the module docstring for the meaning of each key)."""

    group: str
    what: str
    unit: str
    ours: float | None
    baseline: float | None = None
    baseline_what: str | None = None
    ratio: float | None = None
    target: Target | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    status: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            self.status = self.judge()

    def judge(self) -> str:
        """pass / miss against the target, info without one, failed when a number is missing."""
        if self.target is None:
            return INFO if self.ours is not None else FAILED
        met = self.target.met(self)
        if met is None:
            return FAILED
        return PASS if met else MISS

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what `row_from_dict` reads back)."""
        out = asdict(self)
        out["target_text"] = self.target.text(self.unit) if self.target else ""
        return out


def row_from_dict(data: dict[str, Any]) -> Row:
    """A Row from its JSON form; the status is judged again from the numbers and the target."""
    target = data.get("target")
    keep = data.get("status") if data.get("status") in (FAILED, NOT_RUN) else ""
    return Row(
        group=str(data.get("group", "?")),
        what=str(data.get("what", "?")),
        unit=str(data.get("unit", "")),
        ours=_number(data.get("ours")),
        baseline=_number(data.get("baseline")),
        baseline_what=data.get("baseline_what"),
        ratio=_number(data.get("ratio")),
        target=Target(**target) if isinstance(target, dict) else None,
        detail=dict(data.get("detail") or {}),
        note=str(data.get("note") or ""),
        status=keep or "",
    )


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def ratio(ours: float | None, baseline: float | None) -> float | None:
    """ours ÷ baseline rounded to 3 places (None when either is missing or baseline is 0)."""
    if ours is None or not baseline:
        return None
    return round(ours / baseline, 3)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads), from the kernel's
    per-thread run time (`os.times()` counts in 10 ms clock ticks: 2.5 % of a 0.4 s run)."""
    return time.process_time()


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, cores, load, Python and OS of this machine."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def quick_requested(flag: bool) -> bool:
    """--quick, or BENCH_QUICK=1 in the environment (the runner sets both)."""
    return flag or os.environ.get("BENCH_QUICK", "") not in ("", "0")


def _repo_relative_arg(arg: str) -> str:
    """A command-line argument as committed results may hold it: a path inside the repository
    relative to it (results hold no absolute paths of the machine that made them)."""
    if os.path.isabs(arg):
        try:
            return str(Path(arg).resolve().relative_to(REPO))
        except ValueError:
            return Path(arg).name
    return arg


def write_results(
    name: str,
    rows: list[Row],
    *,
    quick: bool,
    started: float,
    raw: dict[str, Any] | None = None,
    out: Path | None = None,
) -> Path:
    """Write results/<name>.json (rows + raw numbers + machine) and print the rows."""
    path = out or RESULTS / f"{name}.json"
    data = {
        "benchmark": name,
        "quick": quick,
        "command": shlex.join(["python", *map(_repo_relative_arg, sys.argv)]),
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started, 1),
        "machine": machine(),
        "rows": [row.to_dict() for row in rows],
        "raw": raw or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    for row in rows:
        ratio_text = f" ratio {row.ratio:g}" if row.ratio is not None else ""
        print(f"[{row.status}] {row.group}: {row.what}: {row.ours} {row.unit}{ratio_text}")
    print(f"wrote {path}", flush=True)
    return path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Broker:
    """A mosquitto on a free loopback port for one benchmark; stop() ends it by its pid."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            raise RuntimeError("mosquitto is not installed (Debian package `mosquitto`)")
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\n" + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate the broker process (kill when it does not exit)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_ray(num_cpus: float = 4, *, serve_port: int | None = None, namespace: str = "") -> None:
    """A fresh local Ray cluster for this benchmark (never a stray one), with Serve if asked."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address="local",
        num_cpus=num_cpus,  # type: ignore[arg-type]
        namespace=namespace or "liveobject-bench",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    if serve_port is not None:
        from ray import serve

        serve.start(http_options={"host": "127.0.0.1", "port": serve_port})


def stop_ray() -> None:
    """Shut Serve (if running) and the local Ray cluster down."""
    import ray

    if not ray.is_initialized():
        return
    try:
        from ray import serve

        serve.shutdown()
    except Exception as exc:  # Serve was never started
        print(f"serve shutdown: {type(exc).__name__}", file=sys.stderr)
    ray.shutdown()


def exit_on_sigterm() -> None:
    """Turn SIGTERM (the runner's time limit) into SystemExit, so finally blocks stop Ray."""
    import signal

    def _raise(_signum: int, _frame: Any) -> None:
        raise SystemExit(f"stopped by SIGTERM after {time.process_time():.0f} CPU-s")

    signal.signal(signal.SIGTERM, _raise)


def actor_pid(handle: Any) -> int:
    """The process id of a Ray actor (for CPU and memory readings, and py-spy)."""
    import ray

    return int(ray.get(handle.__ray_call__.remote(lambda _self: os.getpid()), timeout=60))
