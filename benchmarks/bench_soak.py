"""A long run: 8 live cameras through `liveobject run` for 30 minutes, read while it runs.

The cameras stream a 640x360 clip in real time from benchmarks/streams.py (motion twice per
10 s loop, so an event every ~5 s per camera); `liveobject run` (the command users run, as a
subprocess) deploys the whole cluster: the tiny VLM, the store, the publisher (QoS 1 to a
mosquitto of this benchmark) and the API. While it runs:
- an API poller lists `GET /api/v1/events?limit=50` twice a second and the cameras every 5 s
  (latency of every request, errors counted);
- two SSE clients follow `GET /api/v1/events/stream`, resuming with Last-Event-ID whenever a
  stream ends;
- a QoS 1 MQTT subscriber receives every event;
- every process under the run is sampled every 10 s (RSS).
After --minutes the run gets SIGINT and drains. Then, from DuckDB and the Parquet export:
every event stored once, published once (marked and received once by the subscriber),
streamed once to each SSE client (every event from the first one it got, in order), Parquet
= DuckDB, exit code 0. RSS slope per process after the warm-up (least squares, MB per hour).

    .venv/bin/python benchmarks/bench_soak.py [--minutes 30]
    .venv/bin/python benchmarks/bench_soak.py --quick     # the CI variant: 4 minutes (make soak)

Exit code 1 when an event was lost or repeated anywhere, or the run did not exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` when run as a script

import httpx
import psutil

from benchmarks.bench_e2e import Receiver, start_run, write_config
from benchmarks.harness import (
    Broker,
    Row,
    Target,
    exit_on_sigterm,
    free_port,
    pct,
    quick_requested,
    write_results,
)
from benchmarks.procs import stage_of, wait_for
from benchmarks.streams import StreamServer

CAMERAS = 8
WINDOWS = ((1.0, 3.0), (6.0, 8.0))
RSS_EVERY_S = 10.0
FLAT_MB_PER_H = 20.0  # "flat": under 0.5 GB a day for the process that grows most


def make_clip(folder: Path) -> Path:
    """The looped camera clip: 10 s, 25 fps, 640x360, 2 s GOP, grain, two motion windows."""
    from pipelines.samples import generate_sample_video

    return generate_sample_video(
        folder / "soak360p.mp4",
        seconds=10,
        fps=25,
        size=(640, 360),
        objects=2,
        motion_windows=list(WINDOWS),
        gop=50,
        grain=2.0,
    )


@dataclass
class SseClient:
    """An SSE client in a thread that resumes with Last-Event-ID whenever its stream ends."""

    url: str
    ids: list[str] = field(default_factory=list)
    last: str | None = None  # the newest event id seen: sent as Last-Event-ID on a reconnect
    connects: int = 0
    resumes: Counter[str] = field(default_factory=Counter)
    gaps: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="sse", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            headers = {"Last-Event-ID": self.last} if self.last else {}
            try:
                with httpx.stream("GET", self.url, headers=headers, timeout=60) as response:
                    if response.status_code != 200:
                        self.errors.append(f"HTTP {response.status_code}")
                        self.stop.wait(2.0)
                        continue
                    self.connects += 1
                    self._read(response)
            except httpx.HTTPError as exc:  # a cut stream resumes from the last id it got
                self.errors.append(type(exc).__name__)
                self.stop.wait(1.0)

    def _read(self, response: httpx.Response) -> None:
        kind, event_id, data = "message", None, None
        for line in response.iter_lines():
            if self.stop.is_set():
                break
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    kind = value
                elif name == "id":
                    event_id = value
                elif name == "data":
                    data = value
                continue
            if kind == "message" and event_id and data is not None:
                self.ids.append(event_id)
                self.last = event_id
            elif kind == "resume" and data:
                self.resumes[json.loads(data).get("reason", "?")] += 1
            elif kind == "gap":
                self.gaps += 1
            kind, event_id, data = "message", None, None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(70)


class Poller:
    """Lists events twice a second and the cameras every 5 s; every latency kept."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.list_ms: list[float] = []
        self.cameras_ms: list[float] = []
        self.errors: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="poller", daemon=True)
        self.thread.start()

    def _get(self, client: httpx.Client, path: str, into: list[float]) -> None:
        t0 = time.perf_counter()
        try:
            response = client.get(self.base + path)
        except httpx.HTTPError as exc:
            self.errors[type(exc).__name__] += 1
            return
        into.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            self.errors[f"HTTP {response.status_code}"] += 1

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            tick = 0
            while not self.stop.wait(0.5):
                self._get(client, "/api/v1/events?limit=50", self.list_ms)
                if tick % 10 == 0:
                    self._get(client, "/api/v1/cameras", self.cameras_ms)
                tick += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)


class RssLog:
    """RSS of every process under the run, every RSS_EVERY_S seconds."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self.titles: dict[int, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(RSS_EVERY_S):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                continue
            now = time.time()
            for proc in procs:
                try:
                    title = _title(proc.cmdline()) or proc.name()
                    rss = proc.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.titles[proc.pid] = "liveobject run" if proc.pid == self.root.pid else title
                self.samples.setdefault(proc.pid, []).append((now, rss))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(RSS_EVERY_S + 5)

    def slopes(self, after: float, until: float) -> list[dict[str, Any]]:
        """Per process alive through [after, until]: RSS at both ends and its slope (MB/h)."""
        expected = (until - after) / RSS_EVERY_S
        out = []
        for pid, points in self.samples.items():
            window = [(t, rss) for t, rss in points if after <= t <= until]
            if len(window) < max(3, 0.9 * expected):
                continue  # a worker that came or went: not a process of the whole run
            times, values = [t - after for t, _ in window], [rss for _, rss in window]
            slope = statistics.linear_regression(times, values).slope * 3600
            title = self.titles[pid]
            out.append(
                {
                    "pid": pid,
                    "process": title,
                    "stage": "driver" if title == "liveobject run" else stage_of(title),
                    "rss_start_mb": round(values[0], 1),
                    "rss_end_mb": round(values[-1], 1),
                    "slope_mb_per_h": round(slope, 1),
                }
            )
        return sorted(out, key=lambda p: -p["slope_mb_per_h"])


def _title(cmd: list[str]) -> str:
    """A process's name without the machine's paths: `ray::IngestActor`, `gcs_server`,
    `python dashboard.py`."""
    if not cmd:
        return ""
    if not cmd[0].startswith("/"):
        return cmd[0].strip()
    name = Path(cmd[0]).name
    scripts = [Path(a).name for a in cmd[1:3] if a.endswith(".py")]
    return " ".join([name, *scripts[:1]])


def run(args: Any, tmp: Path) -> dict[str, Any]:
    """Start everything, read it while it runs, stop with SIGINT, read back what was kept."""
    server = StreamServer(make_clip(tmp), tmp / "streams.jsonl", free_port())
    broker = Broker(tmp)
    receiver = Receiver(broker.port, "bench-soak/camera/+/event")
    api = free_port()
    base = f"http://127.0.0.1:{api}"
    config = write_config(
        tmp, server, CAMERAS, broker.port, api, name="bench-soak", max_new_tokens=24
    )
    log = (tmp / "run.log").open("w")
    proc = start_run(config, log)
    rss = RssLog(proc.pid)
    readers: list[Any] = []
    result: dict[str, Any] = {}
    try:
        if not wait_for(lambda: _api_up(base), 300, poll_s=1.0):
            raise TimeoutError(f"the API did not answer: {(tmp / 'run.log').read_text()[-2000:]}")
        sse = [SseClient(f"{base}/api/v1/events/stream") for _ in range(2)]
        poller = Poller(base)
        readers = [*sse, poller]
        if not wait_for(lambda: len(server.starts()) >= CAMERAS, 240):
            raise TimeoutError(f"cameras did not connect: {(tmp / 'run.log').read_text()[-2000:]}")
        started = result["started"] = time.time()
        end = started + args.minutes * 60
        while time.time() < end and proc.poll() is None:
            time.sleep(min(30.0, max(0.0, end - time.time())))
            print(
                f"{(time.time() - started) / 60:.1f} min: {len(receiver.first)} received, "
                f"SSE {[len(c.ids) for c in sse]}, {len(poller.list_ms)} API lists",
                flush=True,
            )
        poller.close()  # the API goes away with the run: later errors would be the stop's
        result["stop_at"] = time.time()
        proc.send_signal(signal.SIGINT)
        result["exit_code"] = proc.wait(timeout=240)
        time.sleep(1.0)  # the last QoS 1 deliveries
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for reader in readers:
            reader.close()
        rss.close()
        receiver.stop()
        broker.stop()
        server.stop()
        log.close()
    warm = max(60.0, args.minutes * 60 * 0.2)
    result["rss"] = rss.slopes(result["started"] + warm, result["stop_at"])
    result["warmup_s"] = warm
    result["sse"] = [
        {
            "ids": c.ids,
            "connects": c.connects,
            "resumes": dict(c.resumes),
            "gaps": c.gaps,
            "errors": c.errors[:20],
        }
        for c in sse
    ]
    result["api"] = {
        "list_ms": poller.list_ms,
        "cameras_ms": poller.cameras_ms,
        "errors": dict(poller.errors),
    }
    result["received"] = {k: v[1]["camera_id"] for k, v in receiver.first.items()}
    result["cameras"] = [f"cam{i}" for i in range(CAMERAS)]
    # motion every 5 s: fewer than one event per 20 s means a camera stopped seeing it
    result["least_per_camera"] = max(1, int(args.minutes * 60 / 20))
    result["messages"] = receiver.messages
    return result | read_back(tmp / "data")


def _api_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def read_back(data: Path) -> dict[str, Any]:
    """Stored rows in saving order (seq), the published flags, and the Parquet export's ids."""
    import duckdb

    with duckdb.connect(str(data / "events.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT event_id, camera_id, published_at IS NOT NULL, "
            'epoch_us(stored_at) / 1e6, epoch_us("timestamp") FROM events ORDER BY seq'
        ).fetchall()
    with duckdb.connect() as con:
        parquet = [
            r[0]
            for r in con.execute(
                "SELECT event_id FROM read_parquet(?, union_by_name=true)",
                [str(data / "parquet" / "**" / "*.parquet")],
            ).fetchall()
        ]
    return {"rows": rows, "parquet_ids": parquet}


def check(result: dict[str, Any]) -> dict[str, Any]:
    """Every event stored once, published once, streamed once per client; Parquet = DuckDB."""
    ids = [r[0] for r in result["rows"]]
    stored = set(ids)
    published = {r[0] for r in result["rows"] if r[2]}
    received = result["received"]
    problems: list[str] = []
    if len(ids) != len(stored):
        problems.append(f"{len(ids) - len(stored)} event ids stored twice")
    moments = [(r[1], r[4]) for r in result["rows"]]  # one motion saved under two ids
    if len(moments) != len(set(moments)):
        problems.append(f"{len(moments) - len(set(moments))} events stored twice (same start)")
    per_camera = Counter(r[1] for r in result["rows"])
    least = result.get("least_per_camera", 1)
    short = sorted(c for c in result.get("cameras", per_camera) if per_camera[c] < least)
    if short:
        problems.append(f"cameras with fewer than {least} events: {', '.join(short)}")
    if published != stored:
        problems.append(f"{len(stored - published)} stored events not marked published")
    if result["messages"] != len(received):
        problems.append(f"{result['messages'] - len(received)} repeated MQTT messages")
    if set(received) != published:
        problems.append(
            f"MQTT: {len(published - set(received))} published not received, "
            f"{len(set(received) - stored)} received not stored"
        )
    parquet = result["parquet_ids"]
    if len(parquet) != len(set(parquet)) or set(parquet) != stored:
        problems.append(f"Parquet holds {len(parquet)} rows for {len(stored)} stored events")
    order = {event_id: i for i, event_id in enumerate(ids)}
    streamed = []
    late = {r[0] for r in result["rows"] if r[3] >= result["stop_at"]}
    for n, client in enumerate(result["sse"], 1):
        got = client["ids"]
        first = order.get(got[0]) if got else None
        expected = ids[first:] if first is not None else ids
        # events saved while the run drained after SIGINT may come after the API has gone
        while expected and expected[-1] in late and expected != got:
            expected = expected[:-1]
        if got != expected:
            missing = len(set(expected) - set(got))
            problems.append(
                f"SSE client {n}: {len(got)} streamed, {len(expected)} expected from its first "
                f"({missing} missing, {len(got) - len(set(got))} repeated)"
            )
        streamed.append({"streamed": len(got), "from_event": first})
    if result["exit_code"] != 0:
        problems.append(f"liveobject run exited {result['exit_code']} after SIGINT")
    return {"problems": problems, "streamed": streamed}


def rows_from(result: dict[str, Any], verdict: dict[str, Any], minutes: float) -> list[Row]:
    """Delivery, RSS slope, API latency."""
    stored = len(result["rows"])
    per_camera = Counter(r[1] for r in result["rows"])
    lists = result["api"]["list_ms"]
    worst = result["rss"][0] if result["rss"] else None
    by_stage: dict[str, float] = {}
    for p in result["rss"]:
        by_stage[p["stage"]] = max(by_stage.get(p["stage"], -1e9), p["slope_mb_per_h"])
    delivered = 0.0 if verdict["problems"] else 100.0
    cams = ", ".join(f"{c} {n}" for c, n in sorted(per_camera.items()))
    return [
        Row(
            "Long run",
            f"events stored, published, received (MQTT QoS 1) and streamed (2 SSE clients) "
            f"once each, {CAMERAS} live 640x360 cameras through `liveobject run` for "
            f"{minutes:g} min",
            "%",
            delivered,
            target=Target("ours", ">=", 100),
            detail={
                "stored": stored,
                "per_camera": dict(per_camera),
                "messages": result["messages"],
                "streamed": verdict["streamed"],
                "problems": verdict["problems"],
                "exit_code": result["exit_code"],
                "sse": [{k: v for k, v in c.items() if k != "ids"} for c in result["sse"]],
            },
            note=f"{stored} events in {minutes:g} min ({cams}); "
            f"SSE clients got {', '.join(str(s['streamed']) for s in verdict['streamed'])}; "
            f"Parquet = DuckDB; exit code {result['exit_code']}"
            + (f"; PROBLEMS: {'; '.join(verdict['problems'])}" if verdict["problems"] else ""),
        ),
        Row(
            "Long run",
            "RSS slope after the warm-up, the process that grew most (least squares)",
            "MB/h",
            worst["slope_mb_per_h"] if worst else None,
            # a slope over minutes is a step, not a trend: judged on runs of 15 minutes or more
            target=Target("ours", "<=", FLAT_MB_PER_H) if minutes >= 15 else None,
            detail={"processes": result["rss"], "warmup_s": result["warmup_s"]},
            note=(
                f"{worst['process']} {worst['rss_start_mb']:.0f} → {worst['rss_end_mb']:.0f} MB "
                if worst
                else ""
            )
            + f"over the {minutes:g} min after a {result['warmup_s']:.0f} s warm-up; worst per "
            "stage (MB/h): "
            + ", ".join(f"{s} {v:g}" for s, v in sorted(by_stage.items(), key=lambda kv: -kv[1]))
            + f"; {len(result['rss'])} processes sampled every {RSS_EVERY_S:g} s",
        ),
        Row(
            "Long run",
            "`GET /api/v1/events?limit=50` p99 while the run saves, polled twice a second",
            "ms",
            round(pct(lists, 99), 1) if lists else None,
            detail={
                "p50_ms": round(pct(lists, 50), 1) if lists else None,
                "requests": len(lists),
                "cameras_p50_ms": _pct_or_none(result["api"]["cameras_ms"], 50),
                "cameras_p99_ms": _pct_or_none(result["api"]["cameras_ms"], 99),
                "cameras_max_ms": _pct_or_none(result["api"]["cameras_ms"], 100),
                "errors": result["api"]["errors"],
            },
            note=f"{len(lists)} requests, p50 {pct(lists, 50):.1f} ms, errors "
            f"{result['api']['errors'] or 'none'}; `GET /api/v1/cameras` p99 "
            f"{pct(result['api']['cameras_ms'], 99):.1f} ms (p50 "
            f"{pct(result['api']['cameras_ms'], 50):.1f} ms)",
        ),
    ]


def _pct_or_none(values: list[float], q: float) -> float | None:
    return round(pct(values, q), 1) if values else None


def main() -> int:
    """Run once, write results/soak.json; exit 1 when anything was lost or repeated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CI variant: 4 minutes")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", type=Path, help="write the results here, not results/soak.json")
    args = parser.parse_args()
    exit_on_sigterm()
    quick = quick_requested(args.quick)
    if quick:
        args.minutes = 4.0
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    verdict = check(result)
    raw = {k: v for k, v in result.items() if k not in ("rows", "received", "parquet_ids", "sse")}
    raw["api"] = {"errors": result["api"]["errors"], "requests": len(result["api"]["list_ms"])}
    write_results(
        "soak",
        rows_from(result, verdict, args.minutes),
        quick=quick,
        started=started,
        raw=raw,
        out=args.out,
    )
    for problem in verdict["problems"]:
        print(f"PROBLEM: {problem}", flush=True)
    return 1 if verdict["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
