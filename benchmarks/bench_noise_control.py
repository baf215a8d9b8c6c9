"""Noise control: VLM calls made, reused, throttled and events filtered, controls on vs off.

Usage: python benchmarks/bench_noise_control.py [--quick]
Writes benchmarks/results/noise_control.json (rows in the benchmarks/harness.py format).

One clip set, run three times through what a user runs (camera actors, the tiny-model `vlm`
Serve app, the event-store actor): with every control off; with the controls that save calls
without withholding a description (reuse of near-duplicates, zones, the object filter; no
budgets), the row with the target: every event must still be described; and with budgets on
too, whose throttling (fallback text) is its own row:

- `driveway`: the same crossing again and again (the "parked car"), one changed scene among them;
  a zone over the lane where the objects move. Dedupe reuses the repeats.
- `street`: the noisy camera, constant traffic of changing scenes. `vlm_max_per_hour` and its
  share of the global `vlm.max_per_hour` throttle it.
- `garden`: motion only in the bottom strip (a swaying hedge, say), outside its zone `lawn`:
  with zones, it starts no event at all.
- `porch`: `objects: [person]`. The tiny model's words are random, so whatever it calls
  neither person nor anything wanted is stored but not published (filtered).
- `gate`: a quiet camera with one late event; with budgets on it must still be described.

The VLM is the tiny random-weight model: counts of calls are what this measures, not words.
Calls are counted by the cameras and checked against the deployment's own request counter.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (
    Row,
    Target,
    exit_on_sigterm,
    free_port,
    quick_requested,
    ratio,
    start_ray,
    stop_ray,
    write_results,
)
from pipelines.config import Config
from pipelines.samples import generate_sample_video, generate_scene_video

GROUP = "Noise control"
VLM = {"num_cpus": 1, "max_batch_size": 8, "batch_wait_timeout_s": 0.05, "max_new_tokens": 8}
VLM |= {"image_size": 96, "deadline_s": 120}
LANE = {"name": "lane", "polygon": [[0, 0.2], [1, 0.2], [1, 0.6], [0, 0.6]]}
LAWN = {"name": "lawn", "polygon": [[0, 0.1], [1, 0.1], [1, 0.7], [0, 0.7]]}


def make_clips(folder: Path, repeats: int) -> dict[str, Path]:
    """The clip set (deterministic: same files every run)."""
    step = 5.0
    driveway = [(1 + step * k, 2.6 + step * k, 1) for k in range(repeats)]
    driveway.insert(repeats // 2, (1 + step * repeats, 2.6 + step * repeats, 2))  # changed
    driveway = [(s, e, n) for s, e, n in sorted(driveway)]
    street = [(0.5 + 1.3 * k, 1.1 + 1.3 * k + 0.1 * (k % 4), 1 + k % 3) for k in range(3 * repeats)]
    span = max(e for _s, e, _n in driveway + street) + 2
    return {
        "driveway": generate_scene_video(folder / "driveway.mp4", driveway, seconds=span),
        "street": generate_scene_video(folder / "street.mp4", street, seconds=span, seed=3),
        "garden": _hedge_video(folder / "garden.mp4", span),
        "porch": generate_sample_video(
            folder / "porch.mp4", seconds=span, motion_windows=[(2, 4), (8, 10)], seed=5
        ),
        "gate": generate_sample_video(
            folder / "gate.mp4", seconds=span, motion_windows=[(span - 5, span - 3)], seed=1
        ),
    }


def _hedge_video(path: Path, seconds: float) -> Path:
    """Motion only in the bottom 15 % of the frame (objects crossing low), the rest still."""
    import av
    import numpy as np

    from pipelines.samples import render_sample_frame, sample_background

    background = sample_background((320, 240), 7)
    windows = [(1.0 + 4 * k, 2.5 + 4 * k) for k in range(int(seconds // 4))]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream: Any = container.add_stream(
            "libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10
        )
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(round(seconds * 10)):
            moving = render_sample_frame(background, i / 10, objects=1, motion_windows=windows)
            frame = background.copy()
            frame[204:] = np.roll(moving, 120, axis=0)[204:]  # the crossing, moved down low
            video = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video.pts = i
            for packet in stream.encode(video):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def camera_list(clips: dict[str, Path], controls: bool, budgets: bool) -> list[dict[str, Any]]:
    """The five cameras, with or without zones, object filter and per-camera budget."""
    cams: list[dict[str, Any]] = [
        {"id": "driveway", "source": str(clips["driveway"])},
        {"id": "street", "source": str(clips["street"]), "motion": {"end_after_s": 0.3}},
        {"id": "garden", "source": str(clips["garden"])},
        {"id": "porch", "source": str(clips["porch"])},
        {"id": "gate", "source": str(clips["gate"])},
    ]
    if controls:
        cams[0]["zones"] = [LANE]
        cams[2]["zones"] = [LAWN]
        cams[3]["objects"] = ["person"]
    if budgets:
        cams[1]["vlm_max_per_hour"] = 6
    return cams


def config_for(
    model: Path, storage: Path, clips: dict[str, Path], controls: bool, budgets: bool = False
) -> Config:
    """`controls`: reuse, zones, object filter; `budgets`: the hourly VLM budgets too."""
    vlm: dict[str, Any] = {**VLM, "model": str(model)}
    vlm |= {"dedupe": {"enabled": controls}, "max_per_hour": 20 if budgets else None}
    name = "on" if budgets else "filters" if controls else "off"
    return Config.model_validate(
        {
            "ray": {"namespace": f"bench-noise-{name}"},
            "cameras": camera_list(clips, controls, budgets),
            "vlm": vlm,
            "storage": {"path": str(storage)},
            "mqtt": {"enabled": False},
        }
    )


def run_once(config: Config, timeout_s: float) -> dict[str, Any]:
    """Run every camera to the end of its file; per-camera status, deployment calls, counts."""
    import ray
    from ray import serve

    from cluster.actors.ingest import start_camera
    from cluster.actors.store import get_store

    handle = serve.get_deployment_handle("VLM", app_name="vlm")
    before = int(handle.stats.remote().result(timeout_s=60)["requests"])
    store = get_store(config)
    actors = {c.id: start_camera(config, c.id) for c in config.cameras}
    started = time.monotonic()
    final: dict[str, Any] = {}
    try:
        while len(final) < len(actors):
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"cameras not done after {timeout_s:.0f} s: {sorted(actors)}")
            for cid, actor in actors.items():
                if cid not in final:
                    state = ray.get(actor.status.remote(), timeout=30)[cid]
                    if state["done"]:
                        final[cid] = state
            time.sleep(0.5)
        events = {
            cid: ray.get(store.query.remote(camera_id=cid, limit=500), timeout=60)[0]
            for cid in actors
        }
        counts = ray.get(store.counts.remote(), timeout=60)
        after = int(handle.stats.remote().result(timeout_s=60)["requests"])
    finally:
        for actor in actors.values():
            ray.kill(actor, no_restart=True)
        ray.kill(store, no_restart=True)
    return {
        "wall_s": round(time.monotonic() - started, 1),
        "deployment_requests": after - before,
        "cameras": {cid: _summary(final[cid], events[cid]) for cid in actors},
        "store": counts,
    }


def _summary(state: dict[str, Any], events: list[Any]) -> dict[str, Any]:
    keys = ("segments", "events", "vlm_calls", "reused", "throttled", "filtered")
    out = {k: int(state.get(k, 0)) for k in keys}
    out["described"] = sum(e.provider_used not in (None, "reused") for e in events)
    out["fallback"] = sum(e.provider_used is None for e in events)
    out["published_or_publishable"] = sum(not e.filtered for e in events)
    return out


def totals(run: dict[str, Any]) -> dict[str, int]:
    """Sums over the cameras of one run."""
    keys = ("events", "vlm_calls", "reused", "throttled", "filtered", "published_or_publishable")
    return {k: sum(c[k] for c in run["cameras"].values()) for k in keys}


def rows_for(off: dict[str, Any], filters: dict[str, Any], on: dict[str, Any]) -> list[Row]:
    """The target row (budgets off), where its savings came from, then budgets' own rows."""
    t_off, t_filt, t_on = totals(off), totals(filters), totals(on)
    base = "the same clips, every control off"
    gate = on["cameras"]["gate"]
    zone_cams = ("driveway", "garden")
    not_started = sum(
        off["cameras"][c]["events"] - filters["cameras"][c]["events"] for c in zone_cams
    )
    fallbacks = sum(c["fallback"] for c in filters["cameras"].values())
    saved = t_off["vlm_calls"] - t_filt["vlm_calls"]
    return [
        Row(
            GROUP,
            "VLM calls with budgets off: reuse, zones and the object filter (fewer is better; "
            "ratio = calls off / calls on)",
            "calls",
            t_filt["vlm_calls"],
            t_off["vlm_calls"],
            base,
            ratio(t_off["vlm_calls"], t_filt["vlm_calls"]),
            Target("ratio", ">=", 1.5),
            detail={
                "deployment_requests": [off["deployment_requests"], filters["deployment_requests"]],
                "reused": t_filt["reused"],
                "events_not_started_by_zones": not_started,
            },
            note=f"{saved} calls saved: {t_filt['reused']} events reused a near-duplicate's "
            f"description, zones started {not_started} fewer events; the object filter saves "
            f"no call (it withholds publishing, {t_filt['filtered']} events); "
            f"{fallbacks} events got the fallback text",
        ),
        Row(
            GROUP,
            "events with the fallback text, budgets off (every event still described)",
            "events",
            fallbacks,
            t_filt["events"],
            "events stored",
            target=Target("ours", "<=", 0),
        ),
        Row(
            GROUP,
            "VLM calls with budgets on as well (`vlm.max_per_hour` 20, the noisy camera 6 an hour)",
            "calls",
            t_on["vlm_calls"],
            t_filt["vlm_calls"],
            "the same clips, budgets off",
            ratio(t_filt["vlm_calls"], t_on["vlm_calls"]),
            detail={"deployment_requests": on["deployment_requests"]},
        ),
        Row(
            GROUP,
            "events throttled (over budget: fallback text)",
            "events",
            t_on["throttled"],
            t_filt["throttled"],
            "the same clips, budgets off",
        ),
        Row(
            GROUP,
            "events stored (zones drop motion outside them)",
            "events",
            t_filt["events"],
            t_off["events"],
            base,
        ),
        Row(
            GROUP,
            "events filtered (stored, not published)",
            "events",
            t_filt["filtered"],
            t_off["filtered"],
            base,
        ),
        Row(
            GROUP,
            "quiet camera's events described with budgets on",
            "events",
            gate["described"],
            gate["events"],
            "its events",
            ratio(gate["described"], gate["events"]),
            Target("ratio", ">=", 1.0),
        ),
    ]


def main() -> None:
    """Build the clips and the tiny model, run off then on, write the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI, --quick runs)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    quick = quick_requested(args.quick)
    exit_on_sigterm()
    started = time.time()
    from ray import serve

    from pipelines.config import VLMConfig
    from pipelines.vlm.tiny import build_tiny_vlm
    from serve_apps.vlm import build_vlm_app

    with tempfile.TemporaryDirectory(prefix="bench-noise-") as tmp:
        root = Path(tmp)
        clips = make_clips(root / "clips", repeats=3 if quick else 6)
        model = build_tiny_vlm(root / "tiny-vlm")
        start_ray(4, serve_port=free_port(), namespace="bench-noise")
        try:
            serve.run(
                build_vlm_app(VLMConfig.model_validate({**VLM, "model": str(model)})),
                name="vlm",
                route_prefix=None,
            )
            off = run_once(config_for(model, root / "off", clips, False), 150)
            filters = run_once(config_for(model, root / "filters", clips, True), 150)
            on = run_once(config_for(model, root / "on", clips, True, budgets=True), 150)
        finally:
            stop_ray()
    runs = {"off": off, "filters": filters, "on": on}
    raw = runs | {"totals": {name: totals(run) for name, run in runs.items()}}
    for name in runs:
        print(f"{name}: {raw['totals'][name]}")
    rows = rows_for(off, filters, on)
    write_results("noise_control", rows, quick=quick, started=started, raw=raw, out=args.out)


if __name__ == "__main__":
    main()
