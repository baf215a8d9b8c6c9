"""The object filter end to end: camera actor → `vlm` Serve app → event-store → mqtt-publisher →
a real mosquitto. The VLM is a local server speaking the OpenAI API that always sees a package
(the real thing, a remote provider, cannot run here), so what is filtered is known.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import Config
from pipelines.samples import generate_sample_video
from tests.support.mqtt import Subscriber, kill_actors, unique_prefix
from tests.support.openai_server import FakeOpenAI, Reply
from tests.support.ray_cluster import camera_status
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ANSWER = {"description": "A parcel on the step", "objects": ["package"], "confidence": 80}


@pytest.fixture
def package_vlm(ray_session: object) -> Iterator[FakeOpenAI]:
    from ray import serve

    from pipelines.config import VLMConfig
    from serve_apps.vlm import build_vlm_app

    server = FakeOpenAI(Reply(json.dumps(ANSWER)))  # always sees a package
    vlm = VLMConfig(backend="openai", model="package-seer", base_url=server.base_url, num_cpus=0.5)
    serve.run(build_vlm_app(vlm), name="vlm", route_prefix=None)
    try:
        yield server
    finally:
        serve.delete("vlm")
        server.close()


def test_filtered_events_are_stored_not_published_and_rings_always_are(
    package_vlm: FakeOpenAI, mosquitto: Any, tmp_path: Path
) -> None:
    import ray

    from cluster.actors.ingest import start_camera
    from cluster.actors.publisher import get_publisher
    from cluster.actors.store import get_store

    clip = generate_sample_video(tmp_path / "clip.mp4", seconds=5, motion_windows=[(1, 3)])
    prefix = unique_prefix()
    config = Config.model_validate(
        {
            "ray": {"namespace": f"filter-{prefix}"},
            "cameras": [
                {"id": "porch", "source": str(clip), "doorbell": True, "objects": ["person"]},
                {"id": "yard", "source": str(clip), "objects": ["person", "package"]},
            ],
            "vlm": {"backend": "openai", "model": "package-seer", "base_url": package_vlm.base_url},
            "storage": {"path": str(tmp_path / "data")},
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "topic_prefix": prefix},
        }
    )
    namespace = config.ray.namespace
    sub = Subscriber(mosquitto.port, [f"{prefix}/camera/+/event"])
    store = get_store(config)
    publisher = get_publisher(config, store)
    actors: list[Any] = []
    try:
        wait_for(lambda: ray.get(publisher.status.remote())["connected"], 30, "MQTT connected")
        actors = [start_camera(config, cid) for cid in ("porch", "yard")]
        for actor in actors:
            wait_for(lambda a=actor: camera_status(a)["done"], 60, "camera done")
        porch_events, _ = ray.get(store.query.remote(camera_id="porch"))
        (package_only,) = porch_events
        assert package_only.objects_detected == ("package",) and package_only.filtered
        (yard_event,) = ray.get(store.query.remote(camera_id="yard"))[0]
        assert not yard_event.filtered  # the yard wants packages: published
        sub.wait_for_ids(f"{prefix}/camera/yard/event", {yard_event.event_id})

        rung = ray.get(actors[0].ring.remote("porch"))
        assert rung == {"accepted": True}
        ring = wait_for(
            lambda: [
                e for e in ray.get(store.query.remote(camera_id="porch"))[0] if e.is_doorbell_ring
            ],
            30,
            "the ring event",
        )[0]
        assert ring.objects_detected == ("package",) and not ring.filtered
        sub.wait_for_ids(f"{prefix}/camera/porch/event", {ring.event_id})
        # the ring came after the filtered event through the same publisher: had that been
        # sent, it would have arrived first
        assert sub.event_ids(f"{prefix}/camera/porch/event") == [ring.event_id]
        # stored all the same, and counted everywhere
        assert ray.get(store.get.remote(package_only.event_id)) == package_only
        # (acks reach the store in batches, a moment after the subscriber has the message)
        counts = wait_for(
            lambda: (c := ray.get(store.counts.remote()))["unpublished"] == 0 and c,
            30,
            "every publishable event marked published",
        )
        assert counts["filtered"] == 1 and counts["published"] == 2, counts
        assert ray.get(publisher.status.remote())["filtered"] == 1
        assert (
            camera_status(actors[0])["filtered"] == 1 and camera_status(actors[1])["filtered"] == 0
        )
        # a reconnect replays unpublished events: the filtered one is not among them
        assert package_only.event_id not in {
            e.event_id for e in ray.get(store.unpublished_events.remote(3600))
        }
    finally:
        sub.close()
        for actor in actors:
            ray.kill(actor, no_restart=True)
        kill_actors(namespace)
