"""GPU benchmark: batched generate throughput of a random-weight SmolVLM-256M-sized model.

No hub access: the model is built from SmolVLM-256M-Instruct's config values written inline
(Idefics3: SigLIP-style 512 px vision tower, 30-layer Llama text model, scale_factor 4, so 64
image tokens per image) with random weights, in bf16. Inputs are token ids with the real image
token layout and random pixels, so the processor is not measured, only the model.
Every batch generates exactly --max-new-tokens tokens (min_new_tokens = max_new_tokens, so EOS
is ignored). Prints the card, then per batch size images/s and p50/p99 batch latency; writes
benchmarks/results/vlm_gpu.json. Budget: stops measuring early to stay under --budget-s.

Usage: python benchmarks/bench_vlm_gpu.py [--batches 1,8,32] [--max-new-tokens 64]
       python benchmarks/bench_vlm_gpu.py --quick   (CPU smoke run of the same code path)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "vlm_gpu.json"

# HuggingFaceTB/SmolVLM-256M-Instruct config.json values
SMOLVLM_256M: dict[str, Any] = {
    "image_token_id": 49190,
    "scale_factor": 4,
    "tie_word_embeddings": True,
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 512,
        "patch_size": 16,
    },
    "text_config": {
        "model_type": "llama",
        "vocab_size": 49280,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 49279,
        "pad_token_id": 2,
    },
}
FAKE_IMAGE_TOKEN_ID = 49189
GLOBAL_IMAGE_TOKEN_ID = 49152
TEXT_TOKENS = 48  # prompt words around the image (camera name, instructions, JSON ask)


def _quick_config() -> dict[str, Any]:
    cfg = json.loads(json.dumps(SMOLVLM_256M))
    cfg["vision_config"] |= {"num_hidden_layers": 2, "image_size": 128}
    cfg["text_config"] |= {"num_hidden_layers": 2}
    return cfg


def _inputs(cfg: dict[str, Any], batch: int, device: str, dtype: Any) -> dict[str, Any]:
    import torch

    vision = cfg["vision_config"]
    side = vision["image_size"] // vision["patch_size"]
    image_seq_len = side * side // cfg["scale_factor"] ** 2
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(100, 49000, (batch, TEXT_TOKENS), generator=gen)
    image = torch.tensor(
        [FAKE_IMAGE_TOKEN_ID, GLOBAL_IMAGE_TOKEN_ID]
        + [cfg["image_token_id"]] * image_seq_len
        + [FAKE_IMAGE_TOKEN_ID]
    ).expand(batch, -1)
    bos = torch.full((batch, 1), cfg["text_config"]["bos_token_id"])
    input_ids = torch.cat([bos, text[:, :8], image, text[:, 8:]], dim=1)
    size = vision["image_size"]
    pixel_values = torch.randn(batch, 1, 3, size, size, generator=gen)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "pixel_values": pixel_values.to(device, dtype=dtype),
        "pixel_attention_mask": torch.ones(batch, 1, size, size, dtype=torch.bool).to(device),
    }


def main() -> None:
    """Build the model, time generate per batch size, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10, help="timed batches per batch size")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--quick", action="store_true", help="small model on CPU: smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    started = time.monotonic()
    quick = args.quick or not torch.cuda.is_available()
    if quick and not args.quick:
        print("no CUDA device: running the --quick CPU smoke configuration")
    device = "cpu" if quick else "cuda"
    dtype = torch.float32 if quick else torch.bfloat16
    card = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    cfg = _quick_config() if quick else SMOLVLM_256M
    batches = [1, 2] if quick else [int(b) for b in args.batches.split(",")]
    max_new = 4 if quick else args.max_new_tokens
    iters = 2 if quick else args.iters
    print(f"device: {card}  torch {torch.__version__}  dtype {str(dtype).removeprefix('torch.')}")

    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(Idefics3Config(**cfg)).to(device, dtype=dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: random-weight SmolVLM-256M config, {params / 1e6:.0f}M params, build "
        f"{time.monotonic() - started:.1f} s"
    )
    gen_kwargs = {
        "max_new_tokens": max_new,
        "min_new_tokens": max_new,
        "do_sample": False,
        "pad_token_id": cfg["text_config"]["pad_token_id"],
    }

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    rows = []
    for batch in batches:
        inputs = _inputs(cfg, batch, device, dtype)
        with torch.inference_mode():
            model.generate(**inputs, **gen_kwargs)  # warm-up (kernels, allocator)
            sync()
            latencies = []
            for _ in range(iters):
                t0 = time.perf_counter()
                out = model.generate(**inputs, **gen_kwargs)
                sync()
                latencies.append(time.perf_counter() - t0)
                if time.monotonic() - started > args.budget_s:
                    break
        assert out.shape[1] - inputs["input_ids"].shape[1] == max_new
        latencies.sort()
        p99_index = min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))
        row = {
            "batch_size": batch,
            "iters": len(latencies),
            "images_per_s": round(batch * len(latencies) / sum(latencies), 2),
            "new_tokens_per_s": round(batch * max_new * len(latencies) / sum(latencies), 1),
            "p50_batch_s": round(statistics.median(latencies), 4),
            "p99_batch_s": round(latencies[p99_index], 4),
            "prompt_tokens": int(inputs["input_ids"].shape[1]),
        }
        if device == "cuda":
            row["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        rows.append(row)
        print(
            f"batch {batch:>3}: {row['images_per_s']:8.1f} images/s  "
            f"p50 {row['p50_batch_s']:.3f} s  p99 {row['p99_batch_s']:.3f} s  "
            f"({len(latencies)} runs)"
        )
        if time.monotonic() - started > args.budget_s:
            print("time budget reached; stopping")
            break

    result = {
        "benchmark": "vlm_gpu" if not quick else "vlm_gpu_quick_cpu",
        "device": card,
        "dtype": str(dtype).removeprefix("torch."),
        "model": "random-weight Idefics3 with SmolVLM-256M-Instruct config"
        + (" (quick: 2 layers)" if quick else ""),
        "params_m": round(params / 1e6, 1),
        "max_new_tokens": max_new,
        "images_per_request": 1,
        "results": rows,
        "total_s": round(time.monotonic() - started, 1),
        "torch": torch.__version__,
    }
    out_path = args.out if not quick else args.out.with_name("vlm_gpu_quick_cpu.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
