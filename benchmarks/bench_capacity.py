"""Live capacity through `liveobject run`: how many 720p cameras keep real time with the whole
product deployed, not only its ingest actors (bench_live's ramp runs those alone).

Each step starts `liveobject run` as bench_e2e does (the command users run, as a subprocess):
N live 720p 25 fps cameras served by benchmarks/streams.py (two motion windows per 10 s loop),
the tiny VLM, the store, the publisher (QoS 1 to a mosquitto of this benchmark) and the API,
with the default `ray.cameras_per_actor`. The run declares `ray.num_cpus` 4 + N (bench_e2e's
config), so every camera is placed: the question is whether the 2 cores keep up, not what
the reservations allow. After the cameras settle, a trial window is judged with bench_live's
keeps-up criterion, for every camera: events began in it, the decode lag (an event's
`timestamp`, the wall clock at which its first motion frame was decoded, minus when the stream
sent that window's first frame) stays under MAX_LAG_S, its median grows by less than
MAX_GROWTH_S from the window's first half to its second, and it analyses at least 80 % of
detect_fps over the window (its frames, read from its ingest actor as `liveobject status`
reads them, at the window's start and end, by this process joined to the run's cluster). The
run then gets SIGINT and drains; the events are read from its DuckDB file. Each step reports
where the window's cores went, by stage, and what decoding alone costs: after the run, raw
PyAV decodes as many connections to the same stream at once (every frame, motion's grey
detect_fps times a second). Steps 16, 24, 32, 48, 64 (quick: 2); the first that fails ends the
ramp.

    .venv/bin/python benchmarks/bench_capacity.py [--quick] [--trial-s 20]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` when run as a script

from benchmarks.bench_e2e import SETTLE_S, kill_run, start_run, write_config
from benchmarks.bench_ingest import live_frames
from benchmarks.bench_live import (
    DETECT_FPS,
    MAX_GROWTH_S,
    MAX_LAG_S,
    kept_up,
    lags,
    make_clip,
    trial_of,
)
from benchmarks.harness import (
    Broker,
    Row,
    Target,
    cpu_seconds,
    exit_on_sigterm,
    free_port,
    quick_requested,
    write_results,
)
from benchmarks.procs import ProcessWatch, wait_for
from benchmarks.streams import StreamServer
from pipelines.config.ray_cluster import RayConfig

STEPS = (16, 24, 32, 48, 64)  # quick: 2
TARGET = Target("ours", ">=", 48)  # issue 18: ≥ 48 live 720p25 cameras through `liveobject run`
NAME = "bench-capacity"  # the run's Ray namespace and MQTT topic prefix
DECODE_WARMUP_S = 2.0  # decoding alone: after every stream gave a frame, before measuring
STATUS_TIMEOUT_S = 30.0  # an ingest actor that does not answer a status call in this: not counted


class FrameCounts:
    """Each camera's frames analysed so far, read from the ingest actors as `liveobject status`
    reads them, by this process joined to the run's cluster. Status's own `fps` is a 2 s
    sample, too short on a loaded machine; a count read at two known times is not."""

    def __init__(self, config: Path) -> None:
        from cluster.directory import IngestDirectory
        from cluster.joining import join_running
        from pipelines.config import load_config

        loaded = load_config(config)
        join_running(loaded)  # the address the run recorded: never another cluster
        self._directory = IngestDirectory(loaded.ray.namespace)

    def read(self) -> tuple[float, dict[str, int]]:
        """(when, frames per camera): `when` is the middle of the call, which takes ms; a
        camera that did not answer is left out (its fps is then 0: not kept up)."""
        asked = time.monotonic()
        statuses = self._directory.statuses(STATUS_TIMEOUT_S)
        when = (asked + time.monotonic()) / 2
        return when, {cam: int(st["frames"]) for cam, st in statuses.items() if "frames" in st}


def rates(before: tuple[float, dict[str, int]], after: tuple[float, dict[str, int]]) -> dict:
    """Frames per second of each camera counted in both readings."""
    (t0, first), (t1, second) = before, after
    return {cam: (n - first[cam]) / (t1 - t0) for cam, n in second.items() if cam in first}


def judge(
    rows: list[tuple[str, float]],
    starts: dict[str, tuple[float, float]],
    window: tuple[float, float],
    fps: dict[str, float],
) -> tuple[bool, dict[str, Any]]:
    """Per camera: events that began in the window, their lags, growth, fps; all kept up?"""
    per_camera: dict[str, Any] = {}
    for path, (t0, duration) in starts.items():
        cam = path.rsplit("/", 1)[-1]
        points = lags((stamp for camera, stamp in rows if camera == cam), window, t0, duration)
        per_camera[cam] = trial_of(points, window, round(fps.get(cam, 0.0), 2))
    return bool(per_camera) and all(kept_up(c) for c in per_camera.values()), per_camera


def stop_run(proc: Any, watch: ProcessWatch) -> None:
    """Kill the run if it still goes, then any process of it that outlived it (by pid)."""
    kill_run(proc)
    watch.stop()
    left = watch.kill_left()
    if left:
        print(f"killed {len(left)} processes the run left: {left}", flush=True)


def trial(cameras: int, clip: Path, tmp: Path, args: Any) -> dict[str, Any]:
    """One `liveobject run` with `cameras` live cameras: judged over a trial window. Whatever
    it started is stopped on every path (the run's processes by pid)."""
    import duckdb
    import ray

    tmp.mkdir()
    with contextlib.ExitStack() as stack:
        server = StreamServer(clip, tmp / "streams.jsonl", free_port())
        stack.callback(server.stop)
        broker = Broker(tmp)
        stack.callback(broker.stop)
        config = write_config(
            tmp,
            server,
            cameras,
            broker.port,
            free_port(),
            name=NAME,
            cameras_per_actor=args.per_actor,
        )
        log = stack.enter_context((tmp / "run.log").open("w"))
        proc = start_run(config, log)
        try:
            watch = ProcessWatch(proc.pid)
        except Exception:
            kill_run(proc)
            raise
        stack.callback(stop_run, proc, watch)
        if not wait_for(lambda: len(server.starts()) >= cameras, 300):
            raise TimeoutError(f"cameras did not connect: {(tmp / 'run.log').read_text()[-1500:]}")
        stack.callback(ray.shutdown)
        counts = FrameCounts(config)
        settled = max(t0 for t0, _d in server.starts().values()) + SETTLE_S + args.warmup_s
        time.sleep(max(0.0, settled - time.time()))
        before = counts.read()
        window = (time.time(), time.time() + args.trial_s)
        since = watch.cpu_by_pid()
        time.sleep(args.trial_s)
        stage_cores = watch.stage_cores(since, args.trial_s)
        fps = rates(before, counts.read())
        ray.shutdown()
        proc.send_signal(signal.SIGINT)  # the run drains: every event cut is stored
        exit_code = proc.wait(timeout=300)
        starts = server.starts()
        stop_run(proc, watch)  # nothing of the run left, and no sampling in this process
        try:  # the run is over: the cores are free
            alone = decode_alone(server, cameras, args.trial_s)
        except (OSError, RuntimeError, TimeoutError, av.FFmpegError) as exc:
            alone = {"error": repr(exc), "streams": cameras}  # the step's result still counts
    with duckdb.connect(str(tmp / "data" / "events.duckdb"), read_only=True) as con:
        rows = con.execute('SELECT camera_id, epoch_us("timestamp") / 1e6 FROM events').fetchall()
    ok, per_camera = judge(rows, starts, window, fps)
    lags = [c["lag_max_s"] for c in per_camera.values()]
    result = {
        "cameras": cameras,
        "keeps_up": ok,
        "worst_lag_s": max(lags) if all(lag == lag for lag in lags) else float("nan"),  # NaN: none
        "worst_growth_s": max((c["growth_s"] or 0.0) for c in per_camera.values()),
        "min_fps": min(c["fps"] for c in per_camera.values()),
        "events": sum(c["events"] for c in per_camera.values()),
        "stored": len(rows),
        "cores": round(sum(stage_cores.values()), 2),
        "stage_cores": stage_cores,
        "decode_alone": alone,
        "stages": watch.by_stage(),
        "exit_code": exit_code,
        "cameras_detail": per_camera,
    }
    print(
        f"{cameras} cameras through liveobject run: keeps up {ok}; worst lag "
        f"{result['worst_lag_s']} s, growth {result['worst_growth_s']} s, min fps "
        f"{result['min_fps']}, {result['events']} events in the window, {result['cores']} cores "
        f"{stage_cores}; decoding alone {alone}",
        flush=True,
    )
    return result


def decode_alone(server: StreamServer, cameras: int, seconds: float) -> dict[str, Any]:
    """What decoding alone costs this machine: raw PyAV (`bench_ingest.live_frames`: every
    frame on one decoder thread, motion's grey `detect_fps` times a second) on `cameras`
    connections to the same stream at once, each on a thread of this process; its cores and
    the slowest stream's frames per second over `seconds`, after they all began."""
    stop = threading.Event()
    decoded = [0] * cameras
    failed: list[BaseException] = []

    def decode(k: int) -> None:
        frames = live_frames(server.url(f"alone{k:02d}"))
        try:
            for _ in frames:
                decoded[k] += 1
                if stop.is_set():
                    break
        except Exception as exc:  # raised again by the caller
            failed.append(exc)
        finally:
            frames.close()

    threads = [threading.Thread(target=decode, args=(k,), daemon=True) for k in range(cameras)]
    for thread in threads:
        thread.start()
    try:
        if not wait_for(lambda: all(decoded) or bool(failed), 60) and not failed:
            raise TimeoutError(f"{decoded.count(0)} of {cameras} streams gave no frame")
        if failed:
            raise RuntimeError(f"decoding alone: {failed[0]!r}") from failed[0]
        time.sleep(DECODE_WARMUP_S)
        before, cpu0, t0 = list(decoded), cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        after, cpu, wall = list(decoded), cpu_seconds() - cpu0, time.monotonic() - t0
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    if failed:
        raise RuntimeError(f"decoding alone: {failed[0]!r}") from failed[0]
    slowest = min(b - a for a, b in zip(before, after, strict=True)) / wall
    return {"cores": round(cpu / wall, 3), "min_fps": round(slowest, 2), "streams": cameras}


def rows_for(trials: list[dict[str, Any]], args: Any) -> list[Row]:
    """The capacity row: the largest count that kept up, against issue 18's 48."""
    default = RayConfig.model_fields["cameras_per_actor"].default
    per_actor = args.per_actor or f"{default} (the default)"
    passed = [t["cameras"] for t in trials if t["keeps_up"]]
    failed = [t for t in trials if not t["keeps_up"]]
    best = max(passed, default=0)
    if failed:
        last = failed[0]
        how = (
            f"first that did not: {last['cameras']} (worst lag {last['worst_lag_s']} s, growth "
            f"{last['worst_growth_s']} s, min fps {last['min_fps']}); {cores_text(last)}"
        )
    else:
        how = f"none of the {len(trials)} steps fell behind"
    return [
        Row(
            "Ingest",
            "live 720p cameras kept in real time through `liveobject run` (tiny VLM, store, "
            f"publisher and API deployed), detect_fps {DETECT_FPS:g}",
            "cameras",
            best,
            target=TARGET,
            detail={"steps": [t["cameras"] for t in trials]},
            note=f"largest count that kept up: {best}; {how}; keeps up = lag < {MAX_LAG_S} s, "
            f"growth < {MAX_GROWTH_S} s over a {args.trial_s:g} s window, ≥ 80% of detect_fps "
            "(frames analysed over the window, read from the ingest actors); `ray.num_cpus` 4 + "
            f"cameras so that all are placed; `ray.cameras_per_actor` {per_actor}; the tiny "
            "random-weight VLM stands in for a real model (CPU)",
        )
    ]


def cores_text(trial: dict[str, Any]) -> str:
    """Where a trial's cores went, beside what decoding alone took after it."""
    stages = sorted(trial["stage_cores"].items(), key=lambda item: -item[1])
    alone = trial["decode_alone"]
    used = (
        f"at {trial['cameras']} the run used {trial['cores']} cores in the window ("
        + ", ".join(f"{stage} {cores:.2f}" for stage, cores in stages if cores >= 0.005)
        + f"); raw PyAV decoding the same {alone['streams']} streams alone afterwards, one "
        "thread each in one process: "
    )
    if "error" in alone:
        return used + f"not measured ({alone['error']})"
    return used + f"{alone['cores']:.2f} cores (slowest {alone['min_fps']} fps)"


def main() -> None:
    """Ramp the cameras through `liveobject run`, write results/capacity.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trial-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--per-actor", type=int, help="ray.cameras_per_actor (else the default)")
    parser.add_argument("--steps", type=int, nargs="*", help="camera counts (else 16 … 64)")
    args = parser.parse_args()
    exit_on_sigterm()
    quick = quick_requested(args.quick)
    steps = args.steps or ((2,) if quick else STEPS)
    if quick:
        args.trial_s, args.warmup_s = 10.0, 0.0
    started = time.time()
    trials: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = make_clip(tmp, (1280, 720))
        for cameras in steps:
            trials.append(trial(cameras, clip, tmp / f"n{cameras}", args))
            if not trials[-1]["keeps_up"]:
                break
    write_results(
        "capacity", rows_for(trials, args), quick=quick, started=started, raw={"trials": trials}
    )


if __name__ == "__main__":
    main()
