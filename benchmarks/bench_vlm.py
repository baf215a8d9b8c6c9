"""VLM through the product: the `vlm` Serve deployment on the tiny model, batched vs one at a time.

Two Serve apps of the same deployment (`serve_apps.vlm.build_vlm_app`) over the same tiny
random-weight model (`pipelines.vlm.tiny`): one with `max_batch_size` 8 (the default), one with
`max_batch_size` 1. Each gets the same requests — mixed image sizes (JPEG key frames as cameras
send them: 384 px on the long side at five aspect ratios, and 320x240; one to three frames) and
prompts (none, short, long) — with `--concurrency` requests in flight
through a deployment handle, as many cameras would send them; the two alternate for --rounds
rounds and each one's best counts. Generation is the product's: it stops at EOS or
`max_new_tokens`, whichever comes first. Also reported: how often the answer fell back to the
fallback text (no backend answered, or the parsed description was empty, which the camera then
replaces with "Motion detected on …") on the tiny model's gibberish.

    .venv/bin/python benchmarks/bench_vlm.py [--quick] [--requests 64] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` when run as a script

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
from pipelines.config import VLMConfig
from pipelines.naming import VLM_DEPLOYMENT
from pipelines.vlm.types import VLMRequest, VLMResult

# What cameras send: key frames resized to `vlm.image_size` (384) on the long side, of
# cameras with different aspect ratios (16:9, 4:3, portrait doorbell, square), and smaller ones.
SIZES = [(384, 216), (384, 288), (288, 384), (384, 384), (320, 240)]
PROMPTS = [
    None,
    "Is anyone at the door?",
    "Describe the people, vehicles, packages and animals you see, where they are and what "
    "they are doing; mention anything left behind or taken away, and the light conditions.",
]


def _jpeg(i: int, size: tuple[int, int]) -> bytes:
    from PIL import Image

    from pipelines.samples import render_sample_frame, sample_background

    background = sample_background(size, seed=i % 5)
    frame = render_sample_frame(background, 0.5 + i * 0.37, objects=2, motion_windows=[(0, 9)])
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def make_requests(n: int) -> list[VLMRequest]:
    """n requests with mixed frame counts, image sizes and prompts (deterministic)."""
    frames = {(i, s): _jpeg(i, s) for i in range(6) for s in SIZES}
    sizes = len(SIZES)
    out = []
    for i in range(n):
        count = 1 + i % 3
        out.append(
            VLMRequest(
                camera_id=f"cam{i % 8}",
                camera_name=f"Camera {i % 8}",
                frames=tuple(frames[((i + k) % 6, SIZES[(i + k) % sizes])] for k in range(count)),
                prompt=PROMPTS[i % 3],
                request_id=str(i),
            )
        )
    return out


async def _drive(handle: Any, requests: list[VLMRequest], concurrency: int) -> tuple[float, list]:
    """Send every request with `concurrency` in flight; (seconds, results in request order)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(request: VLMRequest) -> VLMResult:
        async with gate:
            result: VLMResult = await handle.remote(request)
            return result

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - t0, list(results)


def _fallback(result: VLMResult) -> bool:
    return result.provider_used is None or not result.description.strip()


def deploy(model: Path, max_new_tokens: int) -> dict[str, Any]:
    """The two apps (batch ≤8 and 1) over the same model; a handle to each."""
    from ray import serve

    from serve_apps.vlm import build_vlm_app

    handles = {}
    for mode, size in (("batched", 8), ("one_at_a_time", 1)):
        vlm = VLMConfig(
            model=str(model),
            max_batch_size=size,
            max_new_tokens=max_new_tokens,
            deadline_s=600,
            dedupe={"enabled": False},  # the same frames recur on purpose
        )
        serve.run(build_vlm_app(vlm), name=f"vlm-{mode}", route_prefix=None)
        handles[mode] = serve.get_deployment_handle(VLM_DEPLOYMENT, app_name=f"vlm-{mode}")
    return handles


def one_round(handle: Any, requests: list[VLMRequest], concurrency: int) -> tuple[dict, list]:
    """All requests through one app; its throughput and counters, and the results."""
    before = handle.stats.remote().result()
    seconds, results = asyncio.run(_drive(handle, requests, concurrency))
    stats = handle.stats.remote().result()
    images = sum(len(r.frames) for r in requests)
    run = {
        "seconds": seconds,
        "requests_per_s": len(requests) / seconds,
        "images_per_s": images / seconds,
        "batches": stats["batches"] - before["batches"],
        "tokens": stats["generated_tokens"] - before["generated_tokens"],
        "max_batch_seen": stats["max_batch_seen"],
    }
    return run, results


def rows_for(runs: dict[str, list[dict]], n: int, fallbacks: int, answered: int, args: Any):
    """The batching row and the fallback-rate row."""
    best = {mode: max(items, key=lambda r: r["images_per_s"]) for mode, items in runs.items()}
    batched, single = best["batched"], best["one_at_a_time"]
    return [
        Row(
            "VLM",
            f"images/s through the `vlm` Serve deployment, tiny model, batch ≤8 vs 1 "
            f"({args.concurrency} requests in flight)",
            "images/s",
            round(batched["images_per_s"], 1),
            round(single["images_per_s"], 1),
            "same deployment, max_batch_size 1",
            ratio(batched["images_per_s"], single["images_per_s"]),
            Target("ratio", ">=", 3),
            detail={"requests": n, "runs": runs},
            note=f"{n} requests of 1-3 frames (5 sizes up to 384 px) and 3 prompts, "
            f"max_new_tokens {args.max_new_tokens} (stops at EOS); batched: "
            f"{batched['batches']} batches ({n / max(1, batched['batches']):.1f} requests each; "
            f"`max_batch_size` 8 requests, image budget 24), {batched['tokens']} tokens, "
            f"{batched['requests_per_s']:.1f} requests/s; one at a time: {single['batches']} "
            f"batches, {single['tokens']} tokens, {single['requests_per_s']:.1f} requests/s",
        ),
        Row(
            "VLM",
            "fallback text used on the tiny model's gibberish (no answer or empty description)",
            "%",
            round(100 * fallbacks / max(1, answered), 1),
            detail={"fallbacks": fallbacks, "answers": answered},
            note=f"{fallbacks} of {answered} answers",
        ),
    ]


def main() -> None:
    """Deploy both apps, alternate the modes, write results/vlm.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    exit_on_sigterm()
    quick = quick_requested(args.quick)
    n = 24 if quick else args.requests
    rounds = 1 if quick else args.rounds
    started = time.time()
    from pipelines.vlm.tiny import build_tiny_vlm

    requests = make_requests(n)
    runs: dict[str, list[dict[str, Any]]] = {"batched": [], "one_at_a_time": []}
    fallbacks = answered = 0
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_vlm(Path(tmp) / "tiny-vlm")
        start_ray(4, serve_port=free_port())
        try:
            handles = deploy(model, args.max_new_tokens)
            for _ in range(rounds):  # alternating: load from other processes hits both alike
                for mode, handle in handles.items():
                    run, results = one_round(handle, requests, args.concurrency)
                    runs[mode].append(run)
                    fallbacks += sum(_fallback(r) for r in results)
                    answered += len(results)
        finally:
            stop_ray()
    rows = rows_for(runs, n, fallbacks, answered, args)
    write_results("vlm", rows, quick=quick, started=started, raw={"runs": runs})


if __name__ == "__main__":
    main()
