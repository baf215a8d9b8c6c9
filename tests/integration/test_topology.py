"""Ray topology on a real 3-node `ray.cluster_utils.Cluster`: GPU-only VLM, spread cameras. The VLM
is an OpenAI-compatible fake (where its replica lands is tested, not the model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.openai_server import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.heavy(20)]

PROBE = Path(__file__).with_name("topology_probe.py")


def test_vlm_lands_on_the_gpu_node_and_cameras_spread(tmp_path: Path, fake_vlm: FakeOpenAI) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, str(PROBE), str(tmp_path), fake_vlm.base_url],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert result["vlm"] == [result["gpu_node"]]  # num_gpus: 1 → only the GPU node qualifies
    nodes = list(result["cameras"].values())
    assert None not in nodes
    assert len(set(nodes)) == 2  # SPREAD: one camera per node while nodes are free
