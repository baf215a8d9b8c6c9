"""Node loss on a real 3-node `ray.cluster_utils.Cluster` (run by node_loss_probe.py in its
own process): a GPU worker removed mid-run takes a camera actor and a VLM replica with it; they
come back on the remaining nodes, the store (pinned to the head by `liveobject_store`) keeps its
data, and the events seen, stored and published are the same count (each published once).
The VLM is an OpenAI-compatible fake (the replicas and their placement are what is tested, not
the model: tests/support/cli.py's `openai_vlm` says which runs load the tiny model)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.network import free_port
from tests.support.openai_server import FakeOpenAI, paced, serve_fake
from tests.support.ray_head import run_watched

pytestmark = [pytest.mark.integration, pytest.mark.heavy(55)]

PROBE = Path(__file__).with_name("node_loss_probe.py")
EVENTS = 3 * 4  # three cameras, four motion windows each


@pytest.fixture
def vlm() -> Iterator[FakeOpenAI]:
    # each answer after 1 s (model `slow`; a batch's requests go out together, so a batch
    # takes about 1 s, like the tiny model's 1 s batch wait): the clips are decoded faster
    # than real time, and events are still being described when the node goes
    yield from serve_fake(paced(delay_s=1.0))


def test_removing_a_worker_mid_run_loses_no_event(
    tmp_path: Path, mosquitto: Mosquitto, vlm: FakeOpenAI
) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    args = [str(tmp_path), str(mosquitto.port), vlm.base_url, str(free_port())]
    done, left = run_watched(
        [sys.executable, str(PROBE), *args],
        env=env,
        timeout=420,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert not left, f"Ray processes left behind: {left}"
    out = done.stdout
    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    print(json.dumps(result, indent=2))  # the closing note's multi-node run

    gone = result["removed"]
    assert 0 < result["before"]["stored"] < EVENTS  # removed mid-run: events still to come
    assert gone in result["workers"]
    assert gone in result["before"]["vlm"] and gone in result["before"]["cameras"].values()
    moved = [c for c, node in result["before"]["cameras"].items() if node == gone]
    assert set(moved) <= set(result["restarted"])  # Ray restarted them elsewhere
    after_nodes = set(result["after"]["cameras"].values()) | set(result["after"]["vlm"])
    assert gone not in after_nodes and None not in after_nodes
    assert len(result["after"]["vlm"]) == 2  # the lost replica came back on the other worker
    assert set(result["after"]["vlm"]) <= set(result["workers"])  # GPU nodes only

    counts = (result["seen"], result["stored"], result["published_received"])
    assert counts == (EVENTS, EVENTS, EVENTS), result
    # one MQTT message per event: a duplicate delivery (a replay after the loss) fails here
    assert result["messages_received"] == EVENTS, result
    assert result["published_in_store"] == EVENTS
    assert len(vlm.requests) >= EVENTS  # the replicas really asked the VLM (no dedupe here)
