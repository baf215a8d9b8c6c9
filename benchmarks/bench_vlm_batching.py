"""CPU benchmark: VLMEngine.describe_batch in batches of 8 vs one request at a time (tiny model).

Usage: python benchmarks/bench_vlm_batching.py [--requests 64] [--batch 8] [--max-new-tokens 16]
    [--threads 1] [--rounds 3]
Writes benchmarks/results/vlm_batching_cpu.json. The tiny random-weight model makes this a
measure of the batching path (processor, padding, generate loop), not of a real VLM.

Fairness: both modes answer the same requests with the same max_new_tokens, EOS ignored
(min_new_tokens = max_new_tokens), in the same process; the modes alternate for `--rounds`
rounds and the median of each is reported, so load from other processes hits both alike.
`--threads` defaults to 1 because that is what a replica gets: Ray sets OMP_NUM_THREADS to the
actor's `num_cpus` (1 by default), and torch sizes its intra-op pool from it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from pipelines.config import VLMConfig
from pipelines.vlm.backends import VLMEngine
from pipelines.vlm.tiny import build_tiny_vlm
from pipelines.vlm.types import VLMRequest

RESULTS = Path(__file__).parent / "results" / "vlm_batching_cpu.json"


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (128, 96), ((29 * i) % 256, (71 * i) % 256, (13 * i) % 256)).save(buf, "JPEG")
    return buf.getvalue()


async def _run(engine: VLMEngine, requests: list[VLMRequest], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(requests), batch):
        results = await engine.describe_batch(requests[i : i + batch])
        assert all(r.provider_used for r in results), "a request fell back"
    return time.perf_counter() - started


def main() -> None:
    """Run both modes, print images/s and the ratio, write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_vlm(Path(tmp) / "tiny-vlm")
        config = VLMConfig(model=str(model), max_new_tokens=args.max_new_tokens, deadline_s=600)
        engine = VLMEngine.from_config(config)
        requests = [
            VLMRequest("bench", "Bench", (_jpeg(i),), request_id=str(i))
            for i in range(args.requests)
        ]
        # fixed output length for a fair comparison: never stop at EOS
        engine.backends[0].generate_kwargs = {  # type: ignore[attr-defined]
            "min_new_tokens": args.max_new_tokens
        }

        async def bench() -> tuple[list[float], list[float], int]:
            await engine.start()
            await _run(engine, requests[:2], 1)  # warm-up, both shapes
            await _run(engine, requests[: args.batch], args.batch)
            tokens_before = engine.generated_tokens()
            sequential, batched = [], []
            for _ in range(args.rounds):
                sequential.append(await _run(engine, requests, 1))
                batched.append(await _run(engine, requests, args.batch))
            return sequential, batched, engine.generated_tokens() - tokens_before

        sequential_runs, batched_runs, tokens = asyncio.run(bench())

    sequential_s = statistics.median(sequential_runs)
    batched_s = statistics.median(batched_runs)
    n = len(requests)
    result = {
        "benchmark": "vlm_batching_cpu",
        "model": "tiny random-weight Idefics3 (pipelines.vlm.tiny)",
        "requests": n,
        "images_per_request": 1,
        "batch_size": args.batch,
        "max_new_tokens": args.max_new_tokens,
        "sequential_images_per_s": round(n / sequential_s, 2),
        "batched_images_per_s": round(n / batched_s, 2),
        "speedup": round(sequential_s / batched_s, 2),
        "rounds": args.rounds,
        "sequential_s_runs": [round(x, 3) for x in sequential_runs],
        "batched_s_runs": [round(x, 3) for x in batched_runs],
        # every request produced exactly max_new_tokens in both modes (EOS ignored)
        "tokens_generated": tokens,
        "tokens_expected": 2 * args.rounds * n * args.max_new_tokens,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "command": "python " + shlex.join(["benchmarks/bench_vlm_batching.py", *sys.argv[1:]]),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(f"one at a time : {result['sequential_images_per_s']:8.1f} images/s")
    print(f"batch of {args.batch:<4} : {result['batched_images_per_s']:8.1f} images/s")
    print(f"speedup       : {result['speedup']:8.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
