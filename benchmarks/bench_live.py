"""Live capacity: real ingest actors on live streams served from this machine, more until one lags.

A 720p 25 fps H.264 clip with sensor grain (a camera-like bitrate) and two motion windows per
10 s loop is served as MPEG-TS over HTTP by benchmarks/streams.py, one real-time stream per
camera. The cameras run in the product's ingest actors (`cluster.actors.ingest`: StreamSource →
motion → segments → store; no VLM is deployed, so each event gets the fallback text at once and
the store records it): first one camera per actor, then `GROUP` cameras per actor (as
`ray.cameras_per_actor` makes a run's fleet do), and raw PyAV on the same stream alongside.

Decode lag is read from what the product records: a live event's `timestamp` is the wall clock
at which its first motion frame was decoded, and the server logs when it started each stream,
so `timestamp - (stream start + loop offset + window start)` is how far behind real time the
camera decoded that motion (plus a constant: the frames motion detection needs to trigger).
Cameras are added in steps (1, 2, 4, 8, …); after each step every camera runs a trial window.
A step keeps up when, for every camera, events arrived, the lag stays under MAX_LAG_S, the
median lag of the window's second half exceeds the first half's by less than MAX_GROWTH_S, and
the camera still analyses ≥ 80% of `detect_fps`. The first step that fails ends the ramp.

    .venv/bin/python benchmarks/bench_live.py [--quick] [--trial-s 15] [--max-cameras 48]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` when run as a script

import psutil

from benchmarks.harness import (
    Row,
    Target,
    actor_pid,
    exit_on_sigterm,
    free_port,
    quick_requested,
    start_ray,
    stop_ray,
    write_results,
)
from benchmarks.streams import StreamServer, window_start_sent
from pipelines.config import Config

WINDOWS = ((1.0, 3.0), (6.0, 8.0))  # motion windows of the 10 s clip (media seconds)
STEPS = (1, 2, 4, 8, 16, 24, 32, 48, 64)  # quick: 1, 2, 4
GROUP = 16  # cameras per ingest actor in the grouped ramp (quick: 4)
GROUPED_STEPS = (16, 32, 48, 64)  # quick: 4
GROUP_1080P = 8  # 1080p cameras in one ingest actor (the default group size; quick: 4)
GROUP_CPU_TARGET = Target("ratio", ">=", round(1 / 1.5, 3))  # at most 1.5 times raw PyAV (issue 18)
GROUP_RSS_TARGET = Target("ours", "<=", 80)  # MB per camera at 16 cameras (issue 18)
MAX_LAG_S = 2.5  # below half the spacing of the windows, so an event maps to its window
MAX_GROWTH_S = 0.5
DETECT_FPS = 5.0


def make_clip(folder: Path, size: tuple[int, int]) -> Path:
    """The looped camera clip: 10 s, 25 fps, 2 s GOP, sensor grain, two motion windows."""
    from pipelines.samples import generate_sample_video

    return generate_sample_video(
        folder / f"live{size[1]}p.mp4",
        seconds=10,
        fps=25,
        size=size,
        objects=2,
        motion_windows=list(WINDOWS),
        gop=50,
        grain=2.0,
    )


def camera_config(
    server: StreamServer,
    n: int,
    storage: Path,
    prefix: str = "cam",
    detect: StreamServer | None = None,
) -> Config:
    """n stream cameras (ids cam00…), store at `storage`, MQTT and the API off; with `detect`,
    each camera's detect_source is that server's stream of the same scene."""
    names = [f"{prefix}{i:02d}" for i in range(n)]
    return Config.model_validate(
        {
            "cameras": [
                {
                    "id": name,
                    "source": server.url(name),
                    "detect_fps": DETECT_FPS,
                    **({"detect_source": detect.url(name)} if detect else {}),
                }
                for name in names
            ],
            "ray": {"namespace": f"bench-live-{storage.name}"},
            "mqtt": {"enabled": False},
            "storage": {"path": str(storage)},
        }
    )


def lags(
    stamps: Iterable[float], window: tuple[float, float], t0: float, duration: float
) -> list[tuple[float, float]]:
    """(event wall time, lag), in time order, of the events stamped in the window: how long
    after its motion window's first frame the stream sent (t0, duration: the stream's loop)."""
    out = []
    for stamp in stamps:
        sent = window_start_sent(stamp, t0, duration, WINDOWS)
        if sent is not None and window[0] <= stamp <= window[1]:
            out.append((stamp, stamp - sent))
    return sorted(out)


def trial_of(points: list[tuple[float, float]], window: tuple[float, float], fps: float) -> dict:
    """One camera's trial from its (time, lag) points: events, worst and median lag, how much
    the median lag grew from the window's first half to its second, and its fps."""
    middle = (window[0] + window[1]) / 2
    first = [lag for when, lag in points if when < middle]
    second = [lag for when, lag in points if when >= middle]
    growth = statistics.median(second) - statistics.median(first) if first and second else None
    return {
        "events": len(points),
        "lag_max_s": round(max((lag for _w, lag in points), default=float("nan")), 3),
        "lag_median_s": round(statistics.median([lag for _w, lag in points]), 3)
        if points
        else None,
        "growth_s": None if growth is None else round(growth, 3),
        "fps": fps,
    }


def judge(window: tuple[float, float], cams: dict[str, Any], server: StreamServer, store: Any):
    """Per-camera lags and fps over the window; whether every camera kept up."""
    import ray

    since = datetime.fromtimestamp(window[0], UTC)
    starts = server.starts()
    per_camera = {}
    for cam_id, actor in cams.items():
        events, _cursor = ray.get(store.query.remote(camera_id=cam_id, since=since, limit=500))
        t0, duration = starts.get(f"/cam/{cam_id}", (window[0], 10.0))
        points = lags((e.timestamp.timestamp() for e in events), window, t0, duration)
        status = ray.get(actor.status.remote(), timeout=30)[cam_id]
        per_camera[cam_id] = trial_of(points, window, status.get("fps", 0.0))
    return all(kept_up(c) for c in per_camera.values()), per_camera


def kept_up(camera: dict[str, Any]) -> bool:
    """The keeps-up criterion of one camera's trial (see the module docstring)."""
    return bool(
        camera["events"] > 0
        and camera["lag_max_s"] < MAX_LAG_S
        and (camera["growth_s"] is None or camera["growth_s"] < MAX_GROWTH_S)
        and camera["fps"] >= 0.8 * DETECT_FPS
    )


def cpu_seconds_of(pids: list[int]) -> float:
    """User + system CPU seconds so far of these processes (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def single_camera_cores(
    server: StreamServer, storage: Path, seconds: float, detect: StreamServer | None = None
) -> tuple[float, dict[str, Any]]:
    """CPU cores one camera actor uses on this stream (after it is online and warm), and what
    its events' frames came from (`frames_from`, with a detect stream) and its status says."""
    import ray

    from cluster.actors.ingest import start_camera
    from cluster.actors.store import get_store

    prefix = "one" if detect is None else "two"
    config = camera_config(server, 1, storage, prefix=prefix, detect=detect)
    store = get_store(config)
    name = f"{prefix}00"
    actor = start_camera(config, name)
    try:
        _wait_online([actor], 1)
        pid = actor_pid(actor)
        time.sleep(3.0)
        cpu0, t0 = cpu_seconds_of([pid]), time.monotonic()
        time.sleep(seconds)
        cores = (cpu_seconds_of([pid]) - cpu0) / (time.monotonic() - t0)
        time.sleep(4.0)  # the window's last event closes and is stored
        events, _cursor = ray.get(store.query.remote(camera_id=name, limit=100), timeout=60)
        status = ray.get(actor.status.remote(), timeout=60)[name]
        seen = {
            "events": len(events),
            "frames_from": sorted({str(e.frames_from) for e in events}),
            "main_stream": status.get("main_stream"),
        }
        return cores, seen
    finally:
        ray.kill(actor, no_restart=True)
        ray.kill(store, no_restart=True)


def ramp(
    server: StreamServer, storage: Path, args: Any, steps: list[int], per_actor: int = 1
) -> dict[str, Any]:
    """Add cameras step by step, `per_actor` to an ingest actor, until one falls behind; the
    trials (CPU and RSS of the ingest actors' processes)."""
    import ray

    from cluster.actors.ingest import launch_group
    from cluster.actors.store import get_store

    config = camera_config(server, max(steps), storage)
    store = get_store(config)
    ray.get(store.counts.remote(), timeout=120)
    cams: dict[str, Any] = {}  # camera id → its ingest actor
    actors: list[Any] = []
    pids: list[int] = []
    trials = []
    started = time.monotonic()
    for n in steps:
        if time.monotonic() - started > args.budget_s:
            break
        new = [f"cam{i:02d}" for i in range(len(cams), n)]
        for k in range(0, len(new), per_actor):
            ids = new[k : k + per_actor]
            actor, _ready = launch_group(config, ids[0], ids)
            actors.append(actor)
            cams.update(dict.fromkeys(ids, actor))
        _wait_online(actors, len(cams))
        pids += [actor_pid(a) for a in actors[len(pids) :]]
        time.sleep(args.warmup_s)
        window = (time.time(), time.time() + args.trial_s)
        cpu0 = cpu_seconds_of(pids)
        time.sleep(args.trial_s)
        cores = (cpu_seconds_of(pids) - cpu0) / args.trial_s
        rss_mb = sum(psutil.Process(pid).memory_info().rss for pid in pids) / 2**20
        time.sleep(4.0)  # the time the window's last event takes to close and be stored
        ok, per_camera = judge(window, cams, server, store)
        worst = max(per_camera.values(), key=lambda c: c["lag_max_s"])
        trial = {
            "cameras": n,
            "actors": len(actors),
            "keeps_up": ok,
            "cores_per_camera": round(cores / n, 3),
            "rss_mb_per_camera": round(rss_mb / n, 1),
            "worst_lag_s": worst["lag_max_s"],
            "worst_growth_s": max((c["growth_s"] or 0.0) for c in per_camera.values()),
            "min_fps": min(c["fps"] for c in per_camera.values()),
            "events": sum(c["events"] for c in per_camera.values()),
            "cameras_detail": per_camera,
        }
        print(
            f"{n} cameras in {len(actors)} ingest actors: keeps up {ok}; worst lag "
            f"{trial['worst_lag_s']} s, growth {trial['worst_growth_s']} s, min fps "
            f"{trial['min_fps']}, {trial['events']} events, {trial['cores_per_camera']} cores "
            f"and {trial['rss_mb_per_camera']} MB per camera",
            flush=True,
        )
        trials.append(trial)
        if not ok:
            break
    for actor in actors:
        ray.kill(actor, no_restart=True)
    ray.kill(store, no_restart=True)
    return {"trials": trials, "per_actor": per_actor}


def raw_cores(server: StreamServer, seconds: float) -> dict[str, Any]:
    """Raw PyAV on one more connection to the same live stream (bench_ingest.raw_stream: every
    frame decoded, the newest scaled to motion's grey `detect_fps` times a second): cores."""
    from benchmarks.bench_ingest import raw_stream

    time.sleep(3.0)  # the last trial's actor processes exit first
    raw = raw_stream(server.url("raw"), seconds)
    return {"cores": round(raw["cpu_s"] / raw["wall_s"], 4), **raw}


def _wait_online(actors: list[Any], cameras: int, timeout_s: float = 120.0) -> None:
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answers = ray.get([a.status.remote() for a in actors], timeout=60)
        states = [s["status"] for answer in answers for s in answer.values()]
        if len(states) == cameras and all(state == "online" for state in states):
            return
        time.sleep(0.5)
    raise TimeoutError("cameras did not come online")


def rows_for(result: dict[str, Any], trial_s: float) -> list[Row]:
    """Capacity (largest count that kept up, first that did not) and CPU per camera-minute."""
    trials = result["trials"]
    best, first_fail, note = _capacity(trials)
    rows = [
        Row(
            "Ingest",
            "live 720p cameras kept in real time: one camera per ingest actor, MPEG-TS/HTTP "
            f"streams, detect_fps {DETECT_FPS:g}",
            "cameras",
            best,
            detail={"first_failing": first_fail, "steps": [t["cameras"] for t in trials]},
            note=f"{note}; keeps up = lag < {MAX_LAG_S} s, growth < {MAX_GROWTH_S} s over a "
            f"{trial_s:g} s window, ≥ 80% of detect_fps",
        )
    ]
    per_camera = {"720p": trials[0]["cores_per_camera"], "1080p": result["cores_1080p_one_camera"]}
    for size, cores in per_camera.items():
        rows.append(
            Row(
                "Ingest",
                f"CPU-s per live camera-minute, {size} 25 fps, one camera per ingest actor "
                f"(StreamSource + motion + segments), detect_fps {DETECT_FPS:g}",
                "CPU-s",
                round(cores * 60, 1),
                detail={"cores": cores},
                note=f"{size}: one camera's ingest actor alone on a live stream, {cores:.3f} cores "
                "(psutil, the actor process)",
            )
        )
    rows += grouped_rows(result, trials)
    dual = result.get("detect_360p_main_1080p")
    if dual is not None:
        cores, seen = dual["cores"], dual["seen"]
        ratio = round(result["cores_1080p_one_camera"] / cores, 2) if cores else None
        rows.append(
            Row(
                "Ingest",
                "CPU-s per live camera-minute, `detect_source` 640x360 + 1080p main stream, one "
                f"camera per ingest actor (motion on the sub-stream), detect_fps {DETECT_FPS:g}",
                "CPU-s",
                round(cores * 60, 1),
                baseline=round(result["cores_1080p_one_camera"] * 60, 1),
                baseline_what="the 1080p stream alone, the row above",
                ratio=ratio,
                detail={"cores": cores, **seen},
                note=f"one camera's ingest actor, {cores:.3f} cores; its events' frames from "
                f"{'/'.join(seen['frames_from']) or 'none'} ({seen['events']} events); main "
                f"stream {seen['main_stream']}",
            )
        )
    return rows


def _capacity(trials: list[dict[str, Any]]) -> tuple[int, int | None, str]:
    """(largest count that kept up, first that did not, a note saying so)."""
    passed = [t["cameras"] for t in trials if t["keeps_up"]]
    failed = [t["cameras"] for t in trials if not t["keeps_up"]]
    best = max(passed, default=0)
    first_fail = min(failed) if failed else None
    last = trials[-1]
    note = (
        f"largest count that kept up: {best}; first that did not: {first_fail} (worst lag "
        f"{last['worst_lag_s']} s, growth {last['worst_growth_s']} s, min fps {last['min_fps']})"
        if first_fail
        else f"largest count that kept up: {best}; none fell behind before the time budget "
        f"ran out ({len(trials)} steps)"
    )
    return best, first_fail, note


def _versus_raw(
    size: str, trial: dict[str, Any], raw: dict[str, Any] | None, versus: str = ""
) -> Row:
    """CPU per camera of one grouped trial against raw PyAV on the same stream in this run."""
    n, ours = trial["cameras"], trial["cores_per_camera"]
    times = round(ours / raw["cores"], 2) if raw and raw["cores"] else "?"
    return Row(
        "Ingest",
        f"CPU-s per live {size} camera-minute, {n} cameras in one ingest actor, detect_fps "
        f"{DETECT_FPS:g}",
        "CPU-s",
        round(ours * 60, 2),
        baseline=None if raw is None else round(raw["cores"] * 60, 2),
        baseline_what="raw PyAV on the same live stream, every frame decoded, motion's grey "
        f"{DETECT_FPS:g} times a second (bench_ingest.raw_stream), in this run",
        ratio=round(raw["cores"] / ours, 3) if raw and ours else None,
        target=GROUP_CPU_TARGET,
        detail={"trial": {k: v for k, v in trial.items() if k != "cameras_detail"}},
        note=f"ours ÷ raw = {times} (target ≤ 1.5); {round(ours * n, 3)} cores for {n} cameras, "
        f"slowest camera {trial['min_fps']} fps, "
        f"{'kept' if trial['keeps_up'] else 'did NOT keep'} up{versus}",
    )


def grouped_rows(result: dict[str, Any], single: list[dict[str, Any]]) -> list[Row]:
    """The grouped ramp's rows: capacity, CPU per camera against raw PyAV on the same stream
    (and against one camera per actor at the same count), RSS per camera."""
    grouped = result.get("grouped")
    if grouped is None:
        return []
    what = f"{grouped.get('per_actor', GROUP)} cameras per ingest actor"
    if "error" in grouped or not grouped.get("trials"):
        why = grouped.get("error", "no trial ran")
        return [Row("Ingest", f"live 720p cameras, {what}", "cameras", None, note=why)]
    trials = grouped["trials"]
    per_actor = grouped["per_actor"]
    best, first_fail, note = _capacity(trials)
    rows = [
        Row(
            "Ingest",
            f"live 720p cameras kept in real time: {what} (`ray.cameras_per_actor` "
            f"{per_actor}), the store actor, no VLM, detect_fps {DETECT_FPS:g}",
            "cameras",
            best,
            detail={"first_failing": first_fail, "steps": [t["cameras"] for t in trials]},
            note=f"{note}; ingest actors started as a run's fleet starts them, not through "
            "`liveobject run` (no VLM replica or API competing for the 2 cores)",
        )
    ]
    first = trials[0]  # per_actor cameras in one ingest actor
    n = first["cameras"]
    same = [t for t in single if t["cameras"] == n]
    versus = ""
    if same and first["cores_per_camera"]:
        alone = same[0]["cores_per_camera"]
        times = round(alone / first["cores_per_camera"], 2)
        versus = f"; one camera per ingest actor at {n} cameras: {alone} cores each ({times}x)"
    rows.append(_versus_raw("720p", first, result.get("raw_720p"), versus))
    big = result.get("grouped_1080p") or {}
    if big.get("trials"):
        rows.append(_versus_raw("1080p", big["trials"][0], result.get("raw_1080p")))
    elif big:
        why = big.get("error", "no trial ran")
        rows.append(
            Row("Ingest", "live 1080p cameras in one ingest actor", "CPU-s", None, note=why)
        )
    rows.append(
        Row(
            "Ingest",
            f"RSS per camera, {n} live 720p cameras in one ingest actor (process RSS ÷ cameras)",
            "MB",
            first["rss_mb_per_camera"],
            target=GROUP_RSS_TARGET,
            detail={"cameras": n},
            note=f"the ingest actor's process RSS {round(first['rss_mb_per_camera'] * n)} MB / "
            f"{n} cameras (psutil, after the warm-up and a {n}-camera trial)",
        )
    )
    small = result.get("grouped_360p") or {}
    if small.get("trials"):
        trial = small["trials"][0]
        rows.append(
            Row(
                "Ingest",
                f"CPU-s per live 640x360 camera-minute, {trial['cameras']} cameras in one ingest "
                f"actor, detect_fps {DETECT_FPS:g} (the measure of `cameras[].num_cpus`' default)",
                "CPU-s",
                round(trial["cores_per_camera"] * 60, 2),
                detail={"trial": {k: v for k, v in trial.items() if k != "cameras_detail"}},
                note=f"{trial['cores_per_camera']} cores per camera, "
                f"{'kept' if trial['keeps_up'] else 'did NOT keep'} up (worst lag "
                f"{trial['worst_lag_s']} s, slowest camera {trial['min_fps']} fps), "
                f"{trial['rss_mb_per_camera']} MB per camera",
            )
        )
    elif small:
        why = small.get("error", "no trial ran")
        rows.append(
            Row("Ingest", "live 640x360 cameras in one ingest actor", "CPU-s", None, note=why)
        )
    return rows


def main() -> None:
    """Serve the streams, ramp the cameras, write results/live.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trial-s", type=float, default=12.0)
    parser.add_argument("--warmup-s", type=float, default=6.0)
    parser.add_argument("--max-cameras", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=230.0, help="no new step after this")
    args = parser.parse_args()
    exit_on_sigterm()
    quick = quick_requested(args.quick)
    if quick:
        args.trial_s, args.warmup_s, args.budget_s = 10.0, 3.0, 60.0
    steps = [n for n in STEPS if n <= (4 if quick else args.max_cameras)]
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = StreamServer(make_clip(tmp, (1280, 720)), tmp / "s720.jsonl", free_port())
        server_1080 = StreamServer(make_clip(tmp, (1920, 1080)), tmp / "s1080.jsonl", free_port())
        server_360 = StreamServer(make_clip(tmp, (640, 360)), tmp / "s360.jsonl", free_port())
        try:
            start_ray(max(8, max(steps) // 2))
            cores_1080, _seen = single_camera_cores(server_1080, tmp / "one", args.trial_s)
            cores_dual, seen = single_camera_cores(
                server_1080, tmp / "two", args.trial_s, detect=server_360
            )
            result = ramp(server, tmp / "data", args, steps)
            grouped_steps = [4] if quick else list(GROUPED_STEPS)
            try:
                result["grouped"] = ramp(
                    server, tmp / "grouped", args, grouped_steps, 4 if quick else GROUP
                )
            except (RuntimeError, TimeoutError, ValueError) as exc:
                result["grouped"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            result["raw_720p"] = raw_cores(server, args.trial_s)
            n_1080 = 4 if quick else GROUP_1080P
            try:
                result["grouped_1080p"] = ramp(server_1080, tmp / "g1080", args, [n_1080], n_1080)
            except (RuntimeError, TimeoutError, ValueError) as exc:
                result["grouped_1080p"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            result["raw_1080p"] = raw_cores(server_1080, args.trial_s)
            server_1080.stop()
            n_360 = 4 if quick else GROUP
            try:  # what a default sub-stream camera costs: the default reservation's measure
                result["grouped_360p"] = ramp(server_360, tmp / "g360", args, [n_360], n_360)
            except (RuntimeError, TimeoutError, ValueError) as exc:
                result["grouped_360p"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            result["cores_1080p_one_camera"] = round(cores_1080, 3)
            result["detect_360p_main_1080p"] = {"cores": round(cores_dual, 3), "seen": seen}
        finally:
            stop_ray()
            server.stop()
            server_1080.stop()
            server_360.stop()
    write_results("live", rows_for(result, args.trial_s), quick=quick, started=started, raw=result)


if __name__ == "__main__":
    main()
