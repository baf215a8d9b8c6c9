"""End to end through `liveobject run`: live cameras → VLM → store → MQTT, and a profile.

`--cameras` generated 720p cameras stream in real time from benchmarks/streams.py (MPEG-TS
over HTTP, two motion windows per 10 s loop); `liveobject run` (the command users run, as a
subprocess) deploys the whole cluster with the tiny VLM, the store, the publisher (QoS 1 to a
mosquitto of this benchmark) and the API. After --seconds the run gets SIGINT and drains.
Measured:
- every event stored and published: events stored (DuckDB), marked published, and received
  by a QoS 1 subscriber (once each), against the motion windows the streams showed;
- motion start → MQTT receipt p50/p99: from the moment the stream sent the first frame of the
  motion window an event belongs to, to the subscriber's receipt (the event closes only after
  its motion ends: the window is 2 s long and `motion.end_after_s` follows);
- peak RSS of each actor and CPU seconds by stage (psutil on the run's processes);
- the profile: the stage that used the most CPU is the slowest; its busiest process is
  recorded with py-spy for --profile-s, and results/profile.json gets a paragraph on where its
  time goes.

    .venv/bin/python benchmarks/bench_e2e.py [--quick] [--cameras 4] [--seconds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` when run as a script

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks import hotspots
from benchmarks.harness import (
    RESULTS,
    Broker,
    Row,
    Target,
    exit_on_sigterm,
    free_port,
    pct,
    quick_requested,
    write_results,
)
from benchmarks.procs import ProcessWatch, wait_for
from benchmarks.streams import StreamServer, window_start_sent

WINDOWS = ((1.0, 3.0), (6.0, 8.0))
# A camera's first seconds: its motion background is still the first frame, so the first event
# runs on past its window. Latency and the window count start after this (delivery counts all).
SETTLE_S = 10.0


class Receiver:
    """A QoS 1 subscriber that notes when each event id first arrived (and repeats)."""

    def __init__(self, port: int, topic: str) -> None:
        self.first: dict[str, tuple[float, dict[str, Any]]] = {}
        self.messages = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        if not subscribed.wait(10):
            raise TimeoutError("subscription not acknowledged")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        now = time.time()
        payload = json.loads(msg.payload)
        with self.lock:
            self.messages += 1
            self.first.setdefault(payload["event_id"], (now, payload))

    def stop(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


def write_config(
    tmp: Path,
    server: StreamServer,
    cameras: int,
    broker: int,
    api: int,
    *,
    name: str = "bench-e2e",
    max_new_tokens: int = 32,
    cameras_per_actor: int | None = None,
) -> Path:
    """A `liveobject run` config: live cameras, tiny VLM, MQTT QoS 1, API on a free port;
    `name` is its Ray namespace and topic prefix; `cameras_per_actor` None: the default."""
    from pipelines.vlm.tiny import build_tiny_vlm

    model = build_tiny_vlm(tmp / "tiny-vlm")
    cams = "\n".join(
        f"  - {{id: cam{i}, name: Camera {i}, source: {server.url(f'cam{i}')}, detect_fps: 5}}"
        for i in range(cameras)
    )
    group = "" if cameras_per_actor is None else f", cameras_per_actor: {cameras_per_actor}"
    config = tmp / "liveobject.yaml"
    config.write_text(
        f"""ray: {{namespace: {name}, num_cpus: {4 + cameras}{group}}}
cameras:
{cams}
vlm: {{model: {model}, max_new_tokens: {max_new_tokens}, max_batch_size: 8}}
storage: {{path: {tmp / "data"}}}
mqtt: {{host: 127.0.0.1, port: {broker}, qos: 1, topic_prefix: {name}}}
api: {{host: 127.0.0.1, port: {api}, base_url: "http://127.0.0.1:{api}"}}
"""
    )
    return config


def start_run(config: Path, log: Any) -> subprocess.Popen[bytes]:
    """`liveobject run --config CONFIG` as users start it (its own process group), offline,
    never joining another Ray cluster; its output to `log`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "run", "--config", str(config), "--no-dashboard"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def kill_run(proc: subprocess.Popen[bytes]) -> None:
    """Kill a run that is still going (its whole process group), after a failure or timeout."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def profile_slowest(watch: ProcessWatch, seconds: float, tmp: Path) -> dict[str, Any]:
    """py-spy the busiest process of the stage that used the most CPU over the last 5 s."""
    before = watch.cpu_by_pid()
    time.sleep(5)
    after = watch.cpu_by_pid()
    stages: dict[str, float] = {}
    for pid, info in list(watch.procs.items()):
        if info.stage in ("camera", "vlm", "store", "publisher", "api"):
            used = after.get(pid, 0.0) - before.get(pid, 0.0)
            stages[info.stage] = stages.get(info.stage, 0.0) + used
    if not stages:
        return {"error": "no stage process found"}
    stage = max(stages, key=lambda s: stages[s])
    proc = watch.busiest(stage, before)
    assert proc is not None
    cores = {s: round(v / 5.0, 2) for s, v in sorted(stages.items(), key=lambda kv: -kv[1])}
    why = (
        "Over 5 s of the end-to-end run the stages used "
        + ", ".join(f"{s} {c} cores" for s, c in cores.items())
        + f"; {stage} is the slowest (most expensive) stage."
    )
    threads_before = hotspots.thread_cpu(proc.pid)
    out = hotspots.record(proc.pid, seconds, tmp / "profile.txt")
    threads = hotspots.thread_shares(threads_before, hotspots.thread_cpu(proc.pid))
    summary = hotspots.summarize(out) if out else {"samples": 0}
    return {
        "stage": stage,
        "process": proc.title,
        "cores_by_stage": cores,
        "seconds": seconds,
        "threads": threads,
        "summary": summary,
        "paragraph": hotspots.paragraph(stage, proc.title, seconds, summary, why, threads),
    }


def read_back(tmp: Path, receiver: Receiver, server: StreamServer, watch: ProcessWatch) -> dict:
    """What the run stored (DuckDB), what the subscriber got, the streams' starts, the stages."""
    import duckdb

    with duckdb.connect(str(tmp / "data" / "events.duckdb"), read_only=True) as con:
        rows = con.execute(
            'SELECT event_id, camera_id, epoch_us("timestamp") / 1e6, published_at IS NOT NULL '
            "FROM events"
        ).fetchall()
    return {
        "rows": rows,
        "received": dict(receiver.first),
        "messages": receiver.messages,
        "starts": server.starts(),
        "stages": watch.by_stage(),
        "log_tail": (tmp / "run.log").read_text(errors="replace")[-1500:],
    }


def run(args: Any, tmp: Path) -> dict[str, Any]:
    """Start everything, run, stop with SIGINT, read back what was stored and received."""
    from benchmarks.bench_live import make_clip

    clip = make_clip(tmp, (1280, 720))
    server = StreamServer(clip, tmp / "streams.jsonl", free_port())
    broker = Broker(tmp)
    receiver = Receiver(broker.port, "bench-e2e/camera/+/event")
    api = free_port()
    config = write_config(tmp, server, args.cameras, broker.port, api)
    log = (tmp / "run.log").open("w")
    proc = start_run(config, log)
    watch = ProcessWatch(proc.pid)
    result: dict[str, Any] = {}
    try:
        online = wait_for(lambda: len(server.starts()) >= args.cameras, 240)
        started = result["started"] = time.time()
        if not online:
            raise TimeoutError(f"cameras did not connect: {(tmp / 'run.log').read_text()[-2000:]}")
        time.sleep(max(0.0, args.seconds - args.profile_s - 5) / 2)
        result["profile"] = profile_slowest(watch, args.profile_s, tmp)
        time.sleep(max(0.0, started + args.seconds - time.time()))
        stop_at = time.time()
        proc.send_signal(signal.SIGINT)
        result["exit_code"] = proc.wait(timeout=180)
        time.sleep(1.0)  # the last QoS 1 deliveries
    finally:
        kill_run(proc)
        watch.stop()
        receiver.stop()
        broker.stop()
        server.stop()
        log.close()
    return result | read_back(tmp, receiver, server, watch) | {"stop_at": stop_at}


def shown_windows(
    starts: dict[str, tuple[float, float]], begin: float, end: float
) -> list[tuple[str, float, float]]:
    """(camera, sent start, sent end) of every motion window a stream showed completely
    between begin and end (wall clock)."""
    out = []
    for path, (t0, duration) in starts.items():
        loop = 0
        while t0 + loop * duration < end:
            for s, e in WINDOWS:
                first, last = t0 + loop * duration + s, t0 + loop * duration + e
                if begin <= first and last <= end:
                    out.append((path.rsplit("/", 1)[-1], first, last))
            loop += 1
    return out


def unseen(windows: list[tuple[str, float, float]], rows: list[Any]) -> list[dict[str, Any]]:
    """Windows no stored event started in (from its first frame to 3 s after its last)."""
    starts: dict[str, list[float]] = {}
    for _event_id, camera, stamp, _published in rows:
        starts.setdefault(camera, []).append(stamp)
    return [
        {"camera": cam, "sent_at": round(first, 2)}
        for cam, first, last in windows
        if not any(first <= t <= last + 3.0 for t in starts.get(cam, []))
    ]


def latencies_s(result: dict[str, Any], settled: float) -> list[float]:
    """Motion start (the stream sent the window's first frame) → MQTT receipt, per event
    that began after `settled`."""
    stored = {r[0]: r for r in result["rows"]}
    out = []
    for event_id, (when, payload) in result["received"].items():
        row = stored.get(event_id)
        start = result["starts"].get(f"/cam/{payload['camera_id']}")
        if row is None or start is None or row[2] < settled:
            continue
        sent = window_start_sent(row[2], start[0], start[1], WINDOWS)
        if sent is not None:
            out.append(when - sent)
    return out


def rows_from(result: dict[str, Any], args: Any) -> list[Row]:
    """The end-to-end rows: delivery, latency, memory."""
    stored = {r[0]: r for r in result["rows"]}
    published = sum(1 for r in result["rows"] if r[3])
    received = result["received"]
    settled = max(t0 for t0, _d in result["starts"].values()) + SETTLE_S
    latencies = latencies_s(result, settled)
    windows = shown_windows(result["starts"], settled, result["stop_at"])
    missed = unseen(windows, result["rows"])
    published_ids = {r[0] for r in result["rows"] if r[3]}
    delivered = len(published_ids & set(received)) if result["messages"] == len(received) else 0
    stages = result["stages"]
    rss = {s: v["peak_rss_mb"] for s, v in stages.items() if s not in ("ray", "other")}
    detail = {
        "cameras": args.cameras,
        "seconds": args.seconds,
        "stored": len(stored),
        "published": published,
        "received": len(received),
        "messages": result["messages"],
        "windows_shown": len(windows),
        "windows_without_event": missed,
        "exit_code": result["exit_code"],
    }
    return [
        Row(
            "End to end",
            f"stored events published and received once, {args.cameras} live 720p cameras "
            "through `liveobject run` (tiny VLM, QoS 1)",
            "%",
            round(100 * delivered / len(stored), 1) if stored else 0.0,
            target=Target("ours", ">=", 100),
            note=f"{len(stored)} stored, {published} marked published, {len(received)} "
            f"received ({result['messages']} messages); of the {len(windows)} motion windows "
            f"the streams showed after their first {SETTLE_S:g} s, {len(missed)} started no "
            f"event; exit code {result['exit_code']} after SIGINT",
            detail=detail,
        ),
        Row(
            "End to end",
            "motion start → MQTT receipt, p50",
            "s",
            round(pct(latencies, 50), 2),
            detail={"p99_s": round(pct(latencies, 99), 2), "seconds": sorted(latencies)},
            note=f"p99 {pct(latencies, 99):.2f} s over {len(latencies)} events (after each "
            f"camera's first {SETTLE_S:g} s); includes the 2 s of motion and "
            "`motion.end_after_s` (2 s) before an event closes",
        ),
        Row(
            "End to end",
            "peak RSS of the largest actor process, by stage",
            "MB",
            round(max(rss.values(), default=0.0)),
            detail={"by_stage": stages},
            note="peak RSS per stage (MB): " + ", ".join(f"{s} {v:.0f}" for s, v in rss.items()),
        ),
    ]


def main() -> None:
    """Run once, write results/e2e.json and results/profile.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--profile-s", type=float, default=15.0)
    args = parser.parse_args()
    exit_on_sigterm()
    quick = quick_requested(args.quick)
    if quick:
        args.cameras, args.seconds, args.profile_s = 2, 25.0, 5.0
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    rows = rows_from(result, args)
    profile = result.get("profile", {})
    (RESULTS / "profile.json").write_text(json.dumps(profile | {"quick": quick}, indent=2) + "\n")
    raw = {k: v for k, v in result.items() if k not in ("rows", "received")}
    raw["events"] = [  # (camera, timestamp, received at) for every stored event
        (row[1], round(row[2], 3), round(result["received"].get(row[0], (0.0,))[0], 3))
        for row in sorted(result["rows"], key=lambda r: r[2])
    ]
    write_results("e2e", rows, quick=quick, started=started, raw=raw)


if __name__ == "__main__":
    main()
