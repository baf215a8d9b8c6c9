"""The GPU benchmark's code path, run on CPU at tiny sizes, with what the GPU image lacks hidden.

The GPU machine has PyTorch and transformers but no Ray, PyAV, decord, DuckDB, paho or
FastAPI: the script runs here with those imports made to fail, so it cannot come to need them
unnoticed. Figures from this run are not GPU figures (it writes vlm_gpu_quick.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABSENT_ON_GPU_IMAGE = ["ray", "av", "decord", "duckdb", "paho", "fastapi", "starlette", "amqtt"]
RUNNER = (
    "import runpy, sys\n"
    f"sys.modules.update(dict.fromkeys({ABSENT_ON_GPU_IMAGE!r}))\n"
    "sys.argv = ['bench_vlm_gpu.py', *sys.argv[1:]]\n"
    "runpy.run_path({script!r}, run_name='__main__')\n"
)


def test_gpu_script_runs_the_backend_at_batch_1_and_2_without_ray(tmp_path: Path) -> None:
    out = tmp_path / "vlm_gpu_quick.json"
    script = str(ROOT / "benchmarks" / "bench_vlm_gpu.py")
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER.format(script=script), "--quick", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["quick"] is True
    batches = {b["batch"]: b for b in data["raw"]["batches"]}
    assert set(batches) == {1, 2}
    for size, row in batches.items():
        # every answer went through generate (4 tokens each, EOS suppressed) and parsing
        assert row["answers_parsed"] == size * row["iters"]
        assert row["tokens"] == size * row["iters"] * 4
        assert row["images_per_s"] > 0 and row["p99_s"] >= row["p50_s"] > 0
    ratio_row = [r for r in data["rows"] if "÷" in r["what"]]
    assert ratio_row and ratio_row[0]["target"] is None  # no GPU target judged on a CPU run
    assert data["rows"][0]["detail"]["params_m"] > 0


def test_gpu_script_refuses_a_full_run_without_cuda(tmp_path: Path) -> None:
    script = str(ROOT / "benchmarks" / "bench_vlm_gpu.py")
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER.format(script=script), "--out", str(tmp_path / "x.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    import torch

    if torch.cuda.is_available():  # pragma: no cover - this test is for machines without one
        return
    assert proc.returncode == 2 and "no CUDA device" in proc.stdout
    assert not (tmp_path / "x.json").exists()
