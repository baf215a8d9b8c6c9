"""Own process: `liveobject run`'s runtime on a 3-node `ray.cluster_utils.Cluster`; one GPU
worker is removed mid-run. Prints one JSON line: where every camera and VLM replica ran before
and after, which node went, and the events seen, stored, published and the MQTT messages.

Usage: python node_loss_probe.py WORKDIR BROKER_PORT VLM_BASE_URL API_PORT (the test picks
the port, see tests/support/network.py, and serves the VLM: an OpenAI-compatible fake, as
nothing here is about the model).

Nodes: a head without GPU that declares `liveobject_store` (it holds storage.path, so the
event-store is pinned there), and two workers with `num_gpus=1` and `liveobject_gpu`. Not
collected by pytest (no test_ prefix); tests/integration/test_node_loss.py runs it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from ray.cluster_utils import Cluster

from cluster.runtime import all_done, deploy
from pipelines.config import parse_config_text
from pipelines.samples import generate_sample_video

CAMERAS = ("front", "side", "back")
WINDOWS = [(0.5, 1.5), (4.0, 5.0), (7.5, 8.5), (11.0, 12.0)]  # 4 events per clip
EVENTS = len(CAMERAS) * len(WINDOWS)


class EventIds:
    """Event messages received on `{prefix}/camera/+/event` (a real QoS-1 subscriber): every
    message's event id, so a duplicate delivery shows as more messages than distinct ids."""

    def __init__(self, port: int, prefix: str) -> None:
        self.ids: list[str] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._client.subscribe(f"{prefix}/camera/+/event", qos=1)
        assert subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.ids.append(json.loads(msg.payload)["event_id"])

    def count(self) -> int:
        """Distinct event ids received."""
        with self._lock:
            return len(set(self.ids))

    def messages(self) -> int:
        """Messages received, duplicates included."""
        with self._lock:
            return len(self.ids)

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def where(snap: dict[str, Any]) -> dict[str, Any]:
    """Node id of every camera and VLM replica in a runtime snapshot."""
    return {
        "cameras": {cid: (c.get("node") or {}).get("id") for cid, c in snap["cameras"].items()},
        "vlm": sorted(r["node"]["id"] for r in snap["vlm"]),
    }


def main(workdir: Path, broker_port: int, vlm_url: str, api_port: int) -> None:
    clips = {
        cam: generate_sample_video(
            workdir / f"{cam}.mp4", seconds=13, motion_windows=WINDOWS, seed=i
        )
        for i, cam in enumerate(CAMERAS)
    }
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"liveobject_store": 1}},
    )
    workers = [
        cluster.add_node(num_cpus=1, num_gpus=1, resources={"liveobject_gpu": 1}) for _ in range(2)
    ]
    cluster.wait_for_nodes()
    cameras = "\n".join(f"  - {{id: {c}, source: {clip}}}" for c, clip in clips.items())
    config = parse_config_text(
        f"""
ray: {{address: "{cluster.address}", namespace: nodeloss, placement_timeout_s: 30,
      cameras_per_actor: 1}}
cameras:
{cameras}
vlm: {{backend: openai, model: slow, base_url: "{vlm_url}", num_gpus: 0.5, num_cpus: 0.25,
       num_replicas: 2, batch_wait_timeout_s: 1.0, image_size: 96, dedupe: {{enabled: false}}}}
storage: {{path: {workdir / "store"}, node_resource: liveobject_store}}
mqtt: {{host: 127.0.0.1, port: {broker_port}, topic_prefix: nodeloss}}
api: {{host: 127.0.0.1, port: {api_port}}}
""",
        filename=str(workdir / "liveobject.yaml"),
    )
    received = EventIds(broker_port, "nodeloss")
    run = deploy(config, include_dashboard=False)
    before: dict[str, Any] = {}
    gone: str | None = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            run.housekeeping()  # placement: a placed camera reports its node
            snap = run.snapshot()
            placed = where(snap)
            ready = None not in placed["cameras"].values() and len(placed["vlm"]) == 2
            stored = snap["store"].get("stored", 0)
            if gone is None and stored >= EVENTS:
                raise RuntimeError("every event was stored before a node could be removed")
            if gone is None and ready and stored >= 1:
                before = {**placed, "stored": snap["store"]["stored"]}
                # the worker running the most: a camera and at least one VLM replica
                victim = max(
                    workers,
                    key=lambda w: (
                        placed["vlm"].count(w.node_id),
                        list(placed["cameras"].values()).count(w.node_id),
                    ),
                )
                gone = victim.node_id
                cluster.remove_node(victim)
                continue
            answered = all("error" not in c for c in snap["cameras"].values())
            if gone is not None and answered and all_done(snap) and len(snap["vlm"]) == 2:
                break
            time.sleep(1)
        run.drain()
        stored_run, published_run = run.finish()
        final = run.snapshot()
        store_counts = final["store"]
        expected = store_counts["stored"]
        wait_until = time.monotonic() + 60
        while received.count() < expected and time.monotonic() < wait_until:
            time.sleep(0.5)
        time.sleep(2)  # a duplicate sent after the last new id still arrives and is counted
        print(
            json.dumps(
                {
                    "head": cluster.head_node.node_id,
                    "workers": [w.node_id for w in workers],
                    "removed": gone,
                    "before": before,
                    "after": where(final),
                    "restarted": [c for c, s in final["cameras"].items() if s.get("restarted")],
                    "seen": sum(int(c["segments"]) for c in final["cameras"].values()),
                    "stored": store_counts["stored"],
                    "published_in_store": store_counts["published"],
                    "published_received": received.count(),
                    "messages_received": received.messages(),
                    "run_summary": [stored_run, published_run],
                }
            ),
            flush=True,
        )
    finally:
        received.stop()
        run.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
