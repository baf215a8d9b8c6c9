"""No event lost: broker restarts and crashes, and a killed `mqtt-publisher`, mid-stream.

Events flow the real way: a thread saves them through the `event-store` actor (as camera
actors do), the store hands each to the publisher, the publisher marks it published in the
store when the broker acknowledges it. Checks are against a QoS 2 subscriber (deduplicating by
event_id: QoS 1 may deliver twice across a restart) and against the store's published_at.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from cluster.actors.publisher import get_publisher
from cluster.actors.store import get_store
from pipelines.config import Config
from pipelines.mqtt.topics import Topics
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import (
    Feeder,
    Subscriber,
    actor_config,
    kill_actors,
    poll,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker with persistence, so a subscriber's session survives a SIGTERM restart."""
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Mosquitto(workdir)
    conf = broker.conf_path.read_text().replace(
        "persistence false\n", f"persistence true\npersistence_location {workdir}/\n"
    )
    broker.conf_path.write_text(conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _start(config: Config) -> tuple[Any, Any]:
    """The store and publisher actors of this test, the publisher connected."""
    store = get_store(config)
    publisher = get_publisher(config, store)  # the store is told about it before returning
    poll(publisher.status.remote, lambda s: s["connected"], 30)
    ray.get(store.counts.remote(), timeout=30)
    return store, publisher


def _all_published(store: Any, saved: set[str], timeout: float = 40.0) -> dict[str, int]:
    """Wait until the store holds every saved event and each has a published_at."""
    counts: dict[str, int] = poll(
        store.counts.remote,
        lambda c: c["stored"] == len(saved) and c["unpublished"] == 0,
        timeout,
    )
    return counts


def test_broker_restart_mid_stream_loses_no_event(ray_session: Any, broker: Any, tmp_path: Path):
    config = actor_config(broker.port, tmp_path / "data", qos=1)
    topic = Topics(config.mqtt.topic_prefix).event("front_door")
    sub = Subscriber(broker.port, [topic], persistent=True)
    try:
        store, _publisher = _start(config)
        with Feeder(store, rate_per_s=40) as feeder:
            feeder.wait_saved(25)
            broker.stop(signal.SIGTERM)
            feeder.wait_saved(len(feeder.saved) + 25)  # saved while the broker is down
            assert ray.get(store.counts.remote(), timeout=30)["unpublished"] > 0
            broker.start()
            feeder.wait_saved(len(feeder.saved) + 25)
            saved = feeder.stop()
        received = sub.wait_for_ids(topic, saved, 40)
        assert received == saved  # nothing foreign, nothing missing (duplicates allowed)
        counts = _all_published(store, saved)
        assert counts["published"] == len(saved)
        assert sub.connects >= 2  # the subscriber really lived through the restart
    finally:
        sub.close()
        kill_actors(config.ray.namespace)


def test_broker_sigkill_mid_stream_every_event_acked(
    ray_session: Any, mosquitto: Any, tmp_path: Path
):
    config = actor_config(mosquitto.port, tmp_path / "data", qos=1)
    try:
        store, publisher = _start(config)
        with Feeder(store, rate_per_s=40) as feeder:
            feeder.wait_saved(25)
            mosquitto.stop(signal.SIGKILL)
            feeder.wait_saved(len(feeder.saved) + 20)
            mid = ray.get(store.counts.remote(), timeout=30)
            assert mid["unpublished"] > 0  # the outage was real: events waited in the store
            mosquitto.start()
            feeder.wait_saved(len(feeder.saved) + 20)
            saved = feeder.stop()
        counts = _all_published(store, saved)
        assert counts["published"] == len(saved)
        status = ray.get(publisher.flush.remote(10), timeout=30)
        assert status["pending"] == 0 and status["connects"] >= 2
        assert status["replayed"] >= 1  # what the outage left behind went out by replay
    finally:
        kill_actors(config.ray.namespace)


def test_killed_publisher_comes_back_and_publishes_pending(
    ray_session: Any, mosquitto: Any, tmp_path: Path
):
    config = actor_config(mosquitto.port, tmp_path / "data", qos=1)
    topic = Topics(config.mqtt.topic_prefix).event("front_door")
    sub = Subscriber(mosquitto.port, [topic])
    try:
        store, publisher = _start(config)
        with Feeder(store, rate_per_s=40) as feeder:
            feeder.wait_saved(25)
            ray.kill(publisher, no_restart=False)
            feeder.wait_saved(len(feeder.saved) + 40)
            saved = feeder.stop()
        received = sub.wait_for_ids(topic, saved, 60)
        assert received == saved
        _all_published(store, saved)
        status = ray.get(publisher.status.remote(), timeout=30)
        assert status["connected"] and status["connects"] == 1  # a fresh, restarted actor
    finally:
        sub.close()
        kill_actors(config.ray.namespace)
