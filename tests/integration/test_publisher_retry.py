"""Events the publisher could not send while connected are retried on a timer, not only after
a reconnect; the retained last_event points at a thumbnail URL that does not expire.

Real mosquitto, real store and publisher actors. `mqtt.queue_size: 1` makes paho's pending
queue overflow on every burst (outcome `dropped`), the way a slow broker does at full size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import ray

from cluster.actors.publisher import get_publisher
from cluster.actors.store import get_store
from pipelines.auth import sign_camera_token
from pipelines.config import APIConfig, Config
from pipelines.mqtt.topics import Topics
from tests.support.mqtt import (
    Subscriber,
    actor_config,
    kill_actors,
    make_event,
    poll,
)

pytestmark = pytest.mark.integration

EVENTS = 40
API_KEY = "retained-thumbnail-key-0123456789"


@pytest.fixture
def config(ray_session: Any, mosquitto: Any, tmp_path: Path) -> Iterator[Config]:
    cfg = actor_config(mosquitto.port, tmp_path, queue_size=1, retry_interval_s=1)
    cfg = cfg.model_copy(update={"api": APIConfig(api_key=API_KEY, base_url="http://ha.lan:8000")})
    yield cfg
    kill_actors(cfg.ray.namespace)


def test_dropped_events_are_retried_while_connected(config: Config, mosquitto: Any) -> None:
    topics = Topics(config.mqtt.topic_prefix, config.mqtt.discovery.prefix)
    store = get_store(config)
    ray.get(store.counts.remote(), timeout=60)
    publisher = get_publisher(config, store)
    # connected, and the replay every connect starts is over: only the timer can replay now
    poll(publisher.status.remote, lambda s: s["connected"] and s["replay_passes"], timeout=30)
    sub = Subscriber(mosquitto.port, [topics.event("front_door"), topics.last_event("front_door")])
    try:
        events = [make_event(description=f"event {i}") for i in range(EVENTS)]
        refs = [store.save.remote(ev, None) for ev in events]  # one burst, group-committed
        ray.get(refs, timeout=60)
        ids = {e.event_id for e in events}
        got = sub.wait_for_ids(topics.event("front_door"), ids, timeout=60)
        assert got == ids  # every event arrived ...
        status = ray.get(publisher.status.remote(), timeout=30)
        assert status["dropped"] > 0, status  # ... although most were dropped at first ...
        assert status["connects"] == 1, status  # ... and no reconnect brought them:
        assert status["retry_passes"] >= 1 and status["replayed"] > 0, status  # the timer did
        poll(store.counts.remote, lambda c: c["unpublished"] == 0, timeout=30)

        # the retained last_event: the camera route, with the camera's non-expiring token
        sub.wait_for(lambda _m: bool(sub.on(topics.last_event("front_door"))), 30)
        url = sub.on(topics.last_event("front_door"))[-1].json()["thumbnail_url"]
        parts = urlsplit(url)
        assert parts.path == "/api/v1/cameras/front_door/thumbnail"
        query = parse_qs(parts.query)
        assert query["event_id"][0] in ids
        assert query["token"] == [sign_camera_token("front_door", query["event_id"][0], API_KEY)]
        assert API_KEY not in url
    finally:
        sub.close()
