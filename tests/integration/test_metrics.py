"""Every stage observable: after a short run on the shared Ray cluster, Ray's Prometheus
endpoint serves each liveobject family with its labels, and every query of the Grafana
dashboard (cluster/grafana/liveobject.json) names a metric that the endpoint really serves.

The VLM replica asks an OpenAI-compatible fake (a real HTTP server, paced at 3 s an answer so
events queue and merge): the replica's metrics are the deployment's, whatever its backend, and
its replica starts in seconds where the tiny model's takes 12-20 s on 2 cores."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipelines.config import Config
from pipelines.naming import VLM_APP
from pipelines.samples import generate_sample_video
from tests.support.mosquitto import Mosquitto
from tests.support.openai_server import FakeOpenAI, paced, serve_fake
from tests.support.ray_cluster import RaySession, camera_status
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "cluster" / "grafana" / "liveobject.json"
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

# family → labels every sample of it must carry (Ray adds its own, e.g. NodeAddress)
EXPECTED: dict[str, set[str]] = {
    "ray_liveobject_camera_fps": {"camera_id"},
    "ray_liveobject_camera_decode_lag_s_bucket": {"camera_id", "le"},
    "ray_liveobject_camera_frames_total": {"camera_id"},
    "ray_liveobject_camera_events_total": {"camera_id", "object"},
    "ray_liveobject_camera_drops_total": {"camera_id", "reason"},
    "ray_liveobject_vlm_requests_total": {"deployment", "replica", "application"},
    "ray_liveobject_vlm_batch_size_bucket": {"deployment", "replica", "le"},
    "ray_liveobject_vlm_queue_wait_ms_bucket": {"replica", "le"},
    "ray_liveobject_vlm_generate_ms_bucket": {"replica", "le"},
    "ray_liveobject_vlm_tokens_per_s": {"replica"},
    "ray_liveobject_vlm_queue_depth": {"replica"},
    "ray_liveobject_store_append_ms_bucket": {"le"},
    "ray_liveobject_store_queue_depth": set(),
    "ray_liveobject_store_rows": set(),
    "ray_liveobject_store_rows_appended_total": set(),
    "ray_liveobject_mqtt_published_total": {"qos"},
    "ray_liveobject_mqtt_pending": set(),
    "ray_liveobject_mqtt_failures_total": {"reason"},
    "ray_liveobject_mqtt_replayed_total": set(),
}


def scrape(port: int) -> dict[str, list[dict[str, str]]]:
    """Family name → the label sets of its samples, from Prometheus text format."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    families: dict[str, list[dict[str, str]]] = defaultdict(list)
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match.group(1).startswith("ray_liveobject_"):
            families[match.group(1)].append(dict(_LABEL.findall(match.group(2) or "")))
    return dict(families)


def dashboard_metrics() -> set[str]:
    """Every metric name that a query of the Grafana dashboard uses."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has queries"
    return {name for expr in exprs for name in re.findall(r"\bray_liveobject_\w+", expr)}


@pytest.fixture
def vlm() -> Iterator[FakeOpenAI]:
    yield from serve_fake(paced(delay_s=3.0))


def test_every_stage_exports_metrics_and_the_dashboard_uses_real_names(
    tmp_path: Path,
    vlm: FakeOpenAI,
    mosquitto: Mosquitto,
    ray_session: RaySession,
) -> None:
    import ray
    from ray import serve

    from cluster.actors.ingest import start_camera
    from cluster.actors.publisher import get_publisher
    from cluster.actors.store import get_store
    from serve_apps.vlm import build_vlm_app

    windows = [(0.5, 1.5), (4.0, 5.0), (7.5, 8.5), (11.0, 12.0), (14.5, 15.5)]  # 5 events
    clip = generate_sample_video(tmp_path / "porch.mp4", seconds=17, motion_windows=windows)
    config = Config.model_validate(
        {
            "ray": {"namespace": "metrics-test"},
            # one queued event at most: the rest of the motion merges (a counted drop)
            "cameras": [{"id": "porch", "source": str(clip), "max_pending_events": 1}],
            "vlm": {
                "backend": "openai",
                "model": "slow",
                "base_url": vlm.base_url,
                "num_cpus": 0.5,
                "max_new_tokens": 8,
                "image_size": 96,
                "batch_wait_timeout_s": 1.0,
            },
            "storage": {"path": str(tmp_path / "store")},
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "topic_prefix": "metrics"},
        }
    )
    store = get_store(config)
    actors = [store]
    try:
        ray.get(store.counts.remote(), timeout=60)
        publisher = get_publisher(config, store)
        actors.append(publisher)
        serve.run(build_vlm_app(config.vlm), name=VLM_APP, route_prefix=None)
        camera = start_camera(config, "porch")
        actors.append(camera)
        counts = lambda: ray.get(store.counts.remote(), timeout=30)  # noqa: E731
        wait_for(lambda: counts()["published"] >= 1, 180, "a published event", interval=1)
        assert ray.get(publisher.replay.remote(3600), timeout=120) >= 1  # replayed
        events, _ = ray.get(store.query.remote(limit=1), timeout=30)
        mosquitto.stop()  # a publish with the broker gone fails: counted by reason
        status = lambda: ray.get(publisher.status.remote(), timeout=30)  # noqa: E731
        wait_for(
            lambda: not status()["connected"],
            60,
            "the publisher to see the broker gone",
            interval=1,
        )
        ray.get(publisher.publish_events.remote(events), timeout=30)

        camera_status(camera)  # as `liveobject run` polls it
        port = ray.nodes()[0]["MetricsExportPort"]
        families: dict[str, list[dict[str, str]]] = {}
        # what the dashboard queries too: a gauge set by that status call (the camera's
        # unsaved events) reaches the endpoint with the process's next export, seconds later
        wanted = set(EXPECTED) | dashboard_metrics()

        def all_there() -> bool:
            families.update(scrape(port))
            return not wanted - set(families)

        wait_for(
            all_there,
            90,
            "every family",
            interval=1,
            context=lambda: f"missing: {sorted(wanted - set(families))}",
        )
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        serve.delete(VLM_APP)
    for family, labels in EXPECTED.items():
        samples = families[family]
        assert all(labels <= set(sample) for sample in samples), (family, samples[:2])
    cameras = {s["camera_id"] for s in families["ray_liveobject_camera_events_total"]}
    assert "porch" in cameras
    assert {s["reason"] for s in families["ray_liveobject_camera_drops_total"]} >= {
        "merged_pending"
    }
    assert {s["qos"] for s in families["ray_liveobject_mqtt_published_total"]} == {"1"}
    assert {s["deployment"] for s in families["ray_liveobject_vlm_requests_total"]} == {"VLM"}

    missing = dashboard_metrics() - set(families)
    assert not missing, f"dashboard queries name metrics the endpoint does not serve: {missing}"
