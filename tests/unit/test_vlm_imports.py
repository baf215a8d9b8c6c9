"""Import-time boundaries of the VLM stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_backends_import_does_not_load_the_tiny_demo_model_builder() -> None:
    # a fresh interpreter: this test session may already have imported pipelines.vlm.tiny
    code = (
        "import sys, pipelines.vlm.backends; "
        "print('pipelines.vlm.tiny' in sys.modules, 'pipelines.vlm.engine' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.stdout.split() == ["False", "True"]
