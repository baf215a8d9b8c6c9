"""Own process: a 3-node `ray.cluster_utils.Cluster`; where do VLM replicas and cameras land?

Prints one JSON line: the node of every camera's ingest actor and VLM replica, and which
node has the GPU.
Usage: python topology_probe.py WORKDIR VLM_BASE_URL (an OpenAI-compatible server the test runs:
where the replica lands is the question, not the model). Not collected by pytest (no test_
prefix); tests/integration/test_topology.py runs it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from cluster.actors.ingest import start_camera
from cluster.actors.store import get_store
from pipelines.config import parse_config_text
from pipelines.naming import INGEST_PREFIX, VLM_APP, ingest_actor_name
from pipelines.samples import generate_sample_video
from serve_apps.vlm import build_vlm_app


def main(workdir: Path, vlm_url: str) -> None:
    clip = generate_sample_video(workdir / "a.mp4", seconds=3, motion_windows=[(1.0, 2.0)])
    config = parse_config_text(
        f"""
ray: {{namespace: topology}}
cameras:
  - {{id: cam_a, source: {clip}}}
  - {{id: cam_b, source: {clip}}}
vlm: {{backend: openai, model: fast, base_url: "{vlm_url}", num_gpus: 1, num_cpus: 0.5,
      image_size: 64}}
storage: {{path: {workdir / "store"}}}
mqtt: {{enabled: false}}
""",
        filename=str(workdir / "liveobject.yaml"),
    )
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": True, "dashboard_port": 0},
    )
    cpu_node = cluster.add_node(num_cpus=1)
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    context = ray.init(address=cluster.address, namespace="topology", log_to_driver=False)
    dashboard = f"http://{context.dashboard_url}"
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": 0})
        get_store(config)
        serve.run(build_vlm_app(config.vlm), name=VLM_APP, route_prefix=None)
        handles = [start_camera(config, cam.id) for cam in config.cameras]  # noqa: F841 (keep alive)
        deadline = time.monotonic() + 60
        placement: dict[str, str] = {}
        while time.monotonic() < deadline:
            actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000, address=dashboard)
            placement = {
                a.name or a.class_name: a.node_id
                for a in actors
                if (a.name or "").startswith(INGEST_PREFIX) or "VLM" in a.class_name
            }
            if len(placement) >= 3:
                break
            time.sleep(1)
        print(
            json.dumps(
                {
                    "gpu_node": gpu_node.node_id,
                    "cpu_nodes": [cluster.head_node.node_id, cpu_node.node_id],
                    "cameras": {c: placement.get(ingest_actor_name(c)) for c in ("cam_a", "cam_b")},
                    "vlm": [n for k, n in placement.items() if not k.startswith(INGEST_PREFIX)],
                }
            ),
            flush=True,
        )
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
