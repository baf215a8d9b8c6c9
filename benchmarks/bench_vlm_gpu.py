"""GPU run: the product's `TransformersBackend` on a random-weight SmolVLM-256M, batch 1/8/32.

The model is built on the spot from SmolVLM-256M-Instruct's real architecture and image
processor settings (benchmarks/models/smolvlm-256m.json; no hub access), with random weights
and a byte-level BPE tokenizer trained here (as pipelines/vlm/tiny.py does), saved to a
temporary directory and loaded back by `TransformersBackend` exactly as a replica loads a model:
`AutoProcessor` / `AutoModelForImageTextToText`, bf16 on CUDA. Requests are what a camera sends
(1280x720 frames resized to `vlm.image_size` and JPEG-encoded); each batch goes through the
backend's whole path — JPEG decode, chat template, image splitting, padding, generate, decode,
parsing. Every answer is exactly --max-new-tokens long (EOS suppressed), so batch sizes compare
fairly. Reports images/s, generated tokens/s, p50/p99 batch latency, peak GPU memory per batch
size, the batch-32 ÷ batch-1 throughput ratio (target ≥ 5), and the card's name.

Needs only torch, transformers, tokenizers, pillow, numpy, opencv and pyyaml (all on the GPU
image) plus the pydantic wheels listed in benchmarks/README.md — no Ray, no PyAV, no DuckDB:

    python3 benchmarks/bench_vlm_gpu.py                  # CUDA only; writes results/vlm_gpu.json
    python3 benchmarks/bench_vlm_gpu.py --quick          # tiny sizes on CPU, batch 1 and 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` when run as a script

from benchmarks.harness import RESULTS, Row, Target, pct, ratio, write_results

SPEC = Path(__file__).with_name("models") / "smolvlm-256m.json"
QUICK = {  # the same architecture, shrunk so a CPU test runs it in seconds
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1},
    "vision_config_heads": 2,
    "text_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
    },
    "image_processor": {"size": {"longest_edge": 128}, "max_image_size": {"longest_edge": 64}},
}


def _tokenizer() -> Any:
    """A BPE tokenizer trained here, with Idefics3's special tokens and SmolVLM's template."""
    from transformers import PreTrainedTokenizerFast

    from pipelines.vlm import tiny

    specials = [tiny.UNK, tiny.BOS, tiny.EOS, tiny.PAD, tiny.IMAGE, tiny.FAKE_IMAGE]
    specials += [tiny.GLOBAL_IMAGE, *tiny.ROW_COL]
    return PreTrainedTokenizerFast(
        tokenizer_object=tiny.train_bpe(specials, unk_token=tiny.UNK),
        bos_token=tiny.BOS,
        eos_token=tiny.EOS,
        pad_token=tiny.PAD,
        unk_token=tiny.UNK,
        additional_special_tokens=[
            tiny.FAKE_IMAGE,
            tiny.IMAGE,
            tiny.EOS,
            tiny.GLOBAL_IMAGE,
            *tiny.ROW_COL,
        ],
        padding_side="left",
        chat_template=tiny.CHAT_TEMPLATE,
    )


def build_model(folder: Path, quick: bool) -> dict[str, Any]:
    """Write processor + random-weight model (bf16 unless quick) to folder; what was built."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    from pipelines.vlm import tiny

    spec = json.loads(SPEC.read_text())
    model_cfg, image_cfg = spec["model"], dict(spec["image_processor"])
    if quick:
        model_cfg["vision_config"] |= QUICK["vision_config"] | {
            "num_attention_heads": QUICK["vision_config_heads"],
            "image_size": 64,
        }
        model_cfg["text_config"] |= QUICK["text_config"]
        image_cfg |= QUICK["image_processor"]
    tokenizer = _tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    vision = model_cfg["vision_config"]
    seq_len = (vision["image_size"] // vision["patch_size"]) ** 2 // model_cfg["scale_factor"] ** 2
    text = model_cfg["text_config"] | {
        "bos_token_id": ids(tiny.BOS),
        "eos_token_id": ids(tiny.EOS),
        "pad_token_id": ids(tiny.PAD),
    }
    config = Idefics3Config(
        image_token_id=ids(tiny.IMAGE),
        scale_factor=model_cfg["scale_factor"],
        tie_word_embeddings=model_cfg["tie_word_embeddings"],
        vision_config=vision,
        text_config=text,
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).eval()
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, text[key])
    if not quick:
        model = model.to(torch.bfloat16)
    model.save_pretrained(folder)
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(**image_cfg),
        tokenizer=tokenizer,
        image_seq_len=seq_len,
        chat_template=tiny.CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    return {"params_m": round(params / 1e6, 1), "image_seq_len": seq_len, "image": image_cfg}


def camera_frame(i: int) -> Any:
    """A 1280x720 camera-like RGB frame: textured ground, two moving shapes, sensor noise."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:720, 0:1280]
    frame = np.stack([(x // 5) % 256, (y // 3) % 256, ((x + y) // 7) % 256], -1).astype(np.uint8)
    cv2.rectangle(frame, (100 + 30 * i, 300), (400 + 30 * i, 450), (200, 30, 30), -1)
    cv2.ellipse(frame, (900 - 20 * i, 400), (40, 110), 0, 0, 360, (240, 220, 40), -1)
    noise = rng.normal(0, 4, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def camera_requests(n: int, image_size: int) -> list[Any]:
    """n requests of one key frame each, as a camera sends them (resized, JPEG)."""
    from pipelines.imaging import encode_jpeg, resize_long_side
    from pipelines.vlm.types import VLMRequest

    out = []
    for i in range(n):
        jpeg = encode_jpeg(resize_long_side(camera_frame(i), image_size), quality=85)
        out.append(VLMRequest(f"cam{i % 8}", f"Camera {i % 8}", (jpeg,), request_id=str(i)))
    return out


async def time_batches(backend: Any, sizes: list[int], iters: int, args: Any) -> list[dict]:
    """Warm up, then time `iters` describe() calls per batch size (within the time budget)."""
    import torch

    cuda = torch.cuda.is_available() and not args.quick
    rows = []
    await backend.start()
    for size in sizes:
        requests = camera_requests(size, args.image_size)
        await backend.describe(requests)  # warm-up: kernels, allocator, this shape
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        tokens_before = backend.generated_tokens
        latencies, parsed = [], 0
        for _ in range(iters):
            t0 = time.perf_counter()
            results = await backend.describe(requests)
            if cuda:
                torch.cuda.synchronize()
            latencies.append(time.perf_counter() - t0)
            parsed += sum(not isinstance(r, Exception) for r in results)
            if time.monotonic() - args.started > args.budget_s:
                break
        total = sum(latencies)
        tokens = backend.generated_tokens - tokens_before
        row = {
            "batch": size,
            "iters": len(latencies),
            "images_per_s": round(size * len(latencies) / total, 2),
            "tokens_per_s": round(tokens / total, 1),
            "p50_s": round(statistics.median(latencies), 4),
            "p99_s": round(pct(latencies, 99), 4),
            "answers_parsed": parsed,
            "tokens": tokens,
        }
        if cuda:
            row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
        if time.monotonic() - args.started > args.budget_s:
            print("time budget reached: larger batches not measured", flush=True)
            break
    return rows


def rows_for(measured: list[dict], detail: dict[str, Any], quick: bool, new_tokens: int):
    """One row per batch size, and the largest ÷ smallest batch throughput ratio."""
    card, dtype = detail["device"], detail["dtype"]
    rows = [
        Row(
            "VLM (GPU)",
            f"images/s via `TransformersBackend`, random-weight SmolVLM-256M, batch {r['batch']}",
            "images/s",
            r["images_per_s"],
            detail=detail | r,
            note=f"{card}, {dtype}: {r['tokens_per_s']} tokens/s, p50 {r['p50_s']} s, p99 "
            f"{r['p99_s']} s per batch, peak {r.get('peak_gpu_memory_gib', '-')} GiB",
        )
        for r in measured
    ]
    if len(measured) > 1:
        small, large = measured[0], measured[-1]
        rows.append(
            Row(
                "VLM (GPU)",
                f"batch {large['batch']} ÷ batch {small['batch']} images/s",
                "images/s",
                large["images_per_s"],
                small["images_per_s"],
                f"batch {small['batch']}",
                ratio(large["images_per_s"], small["images_per_s"]),
                None if quick else Target("ratio", ">=", 5),
                detail=detail,
                note=f"{card}, {dtype}, {new_tokens} new tokens per answer",
            )
        )
    return rows


def main() -> int:
    """Build, load through TransformersBackend, time each batch size, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes on CPU (a smoke test)")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=384, help="vlm.image_size")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.started = time.monotonic()
    started = time.time()
    import torch

    from pipelines.config import BackendConfig
    from pipelines.vlm.transformers_backend import TransformersBackend

    if not args.quick and not torch.cuda.is_available():
        print("no CUDA device: a GPU figure cannot be measured here (--quick runs the CPU smoke)")
        return 2
    device = "cpu" if args.quick else "cuda"
    card = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    sizes = [1, 2] if args.quick else [int(b) for b in args.batches.split(",")]
    new_tokens = 4 if args.quick else args.max_new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        built = build_model(Path(tmp), args.quick)
        backend = TransformersBackend(
            BackendConfig(backend="transformers", model=tmp),
            max_new_tokens=new_tokens,
            device=device,
            generate_kwargs={"min_new_tokens": new_tokens},  # fixed length: EOS never ends one
        )
        print(f"{card}: torch {torch.__version__}, {built['params_m']}M params", flush=True)
        iters = 2 if args.quick else args.iters
        measured = asyncio.run(time_batches(backend, sizes, iters, args))
        dtype = str(next(backend.hf_model.parameters()).dtype).removeprefix("torch.")
    detail = {"device": card, "dtype": dtype, "torch": torch.__version__, **built}
    rows = rows_for(measured, detail, args.quick, new_tokens)
    name = "vlm_gpu_quick" if args.quick else "vlm_gpu"
    out = args.out or RESULTS / f"{name}.json"
    write_results(name, rows, quick=args.quick, started=started, raw={"batches": measured}, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
