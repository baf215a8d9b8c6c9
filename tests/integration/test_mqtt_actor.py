"""The `mqtt-publisher` actor on the shared Ray cluster, a real mosquitto and the real store.

Each test uses its own Ray namespace (the actor name is fixed, the namespace comes from the
config), and kills its detached actors with no_restart=True at the end.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray

from cluster.actors.publisher import get_publisher
from pipelines.config import Config
from pipelines.events import event_schema
from pipelines.mqtt.topics import Topics
from pipelines.naming import PUBLISHER_ACTOR
from tests.support.mqtt import (
    Subscriber,
    actor_config,
    kill_actors,
    make_event,
    poll,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def config(ray_session: Any, mosquitto: Any, tmp_path: Path) -> Iterator[Config]:
    cfg = actor_config(mosquitto.port, tmp_path)
    yield cfg
    kill_actors(cfg.ray.namespace)


@ray.remote(num_cpus=0)
def _race_get_publisher(config: Config) -> str:
    handle = get_publisher(config)
    return str(handle._actor_id.hex())


def test_racing_callers_get_one_actor(config: Config) -> None:
    ids = ray.get([_race_get_publisher.remote(config) for _ in range(4)], timeout=60)
    assert len(set(ids)) == 1
    handle = ray.get_actor(PUBLISHER_ACTOR, namespace=config.ray.namespace)
    assert handle._actor_id.hex() == ids[0]
    assert get_publisher(config)._actor_id.hex() == ids[0]


def test_event_published_through_actor_arrives(config: Config, mosquitto: Any) -> None:
    topics = Topics(config.mqtt.topic_prefix, config.mqtt.discovery.prefix)
    sub = Subscriber(
        mosquitto.port, [f"{config.mqtt.topic_prefix}/#", f"{topics.discovery_prefix}/#"]
    )
    try:
        actor = get_publisher(config)
        poll(actor.status.remote, lambda s: s["connected"])
        event = make_event(full=True)
        actor.publish_events.remote([event])
        actor.set_activity.remote("front_door", True)
        actor.set_camera_status.remote("front_door", "online", "file")
        sub.wait_for(lambda _m: bool(sub.on(topics.event("front_door"))), 20)
        msg = sub.on(topics.event("front_door"))[0]
        jsonschema.validate(msg.json(), event_schema())
        assert msg.json()["event_id"] == event.event_id and msg.qos == 1 and not msg.retain
        status = ray.get(actor.flush.remote(10), timeout=30)
        assert status["pending"] == 0 and status["acked"] >= 1
        assert status["ack_p50_ms"] is not None and status["ack_p99_ms"] >= status["ack_p50_ms"]
        assert "password" not in str(status)
        sub.wait_for(
            lambda _m: (
                bool(sub.on(topics.activity("front_door")))
                and bool(sub.on(topics.camera_status("front_door")))
                and bool(sub.on(topics.discovery("event", "front_door", "event")))
            )
        )
        assert sub.on(topics.activity("front_door"))[-1].payload == b"ON"
        assert sub.on(topics.camera_status("front_door"))[-1].json()["camera_name"] == "Front Door"
        batch = [make_event() for _ in range(3)]
        actor.publish_events.remote(batch)  # the batch form: same topic, same order
        sub.wait_for(lambda _m: len(sub.on(topics.event("front_door"))) >= 4, 20)
        assert sub.event_ids(topics.event("front_door"))[1:] == [e.event_id for e in batch]
    finally:
        sub.close()


def test_killed_actor_comes_back(config: Config) -> None:
    actor = get_publisher(config)
    poll(actor.status.remote, lambda s: s["connected"])
    ray.kill(actor, no_restart=False)
    status = poll(actor.status.remote, lambda s: s["connected"], timeout=60)
    assert status["connects"] == 1  # a fresh core in the restarted actor
    assert (
        ray.get_actor(PUBLISHER_ACTOR, namespace=config.ray.namespace)._actor_id == actor._actor_id
    )


def test_unpublished_events_replayed_in_order_after_reconnect(
    config: Config, mosquitto: Any
) -> None:
    from cluster.actors.store import get_store

    store = get_store(config)
    ray.get(store.counts.remote(), timeout=60)
    actor = get_publisher(config, store)
    poll(actor.status.remote, lambda s: s["connected"])
    mosquitto.stop(signal.SIGTERM)
    poll(actor.status.remote, lambda s: not s["connected"])
    start = time.time()
    events = [
        make_event(timestamp=datetime.fromtimestamp(start - 10 + i, tz=UTC)) for i in range(3)
    ]
    for event in events:  # the store hands each to the publisher, which cannot send it
        ray.get(store.save.remote(event, None), timeout=30)
    poll(actor.status.remote, lambda s: s["unpublished"] >= 3)
    assert ray.get(store.counts.remote())["unpublished"] == 3
    topics = Topics(config.mqtt.topic_prefix, config.mqtt.discovery.prefix)
    mosquitto.start()
    sub = Subscriber(mosquitto.port, [topics.event("front_door")])
    try:
        sub.wait_for(lambda m: len(m) >= 3, 30)
        assert [m.json()["event_id"] for m in sub.messages[:3]] == [e.event_id for e in events]
        ray.get(actor.flush.remote(10), timeout=30)
        poll(store.counts.remote, lambda c: c["published"] == 3 and c["unpublished"] == 0)
        assert ray.get(actor.status.remote())["replayed"] == 3
        # `liveobject replay --since`: republish stored events even though they are published
        assert ray.get(actor.replay.remote(3600), timeout=30) == 3
        sub.wait_for(lambda m: len(m) >= 6, 20)
    finally:
        sub.close()


def test_metrics_record_and_never_raise(ray_session: Any) -> None:
    from cluster.metrics import PublisherMetrics

    m = PublisherMetrics("1")  # on a cluster started without the dashboard (no exporter)
    m.published(1)
    m.acked(3)
    m.ack_latency(1.5)
    m.pending(2)
    m.failed("dropped")
    m.replayed(1)
    assert not m._off
    m.record("published_total", "inc", 1.0, undeclared_tag="x")  # Ray rejects it: off
    assert m._off
    m.published(1)  # and stay off, silently
