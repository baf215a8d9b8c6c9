"""The event publisher (pipelines.mqtt.publishing) against a real mosquitto, with the store,
cameras and metrics faked at their ports; and its ring dispatch (pipelines.mqtt.rings)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipelines.config import CameraConfig, Config
from pipelines.mqtt.publishing import EventPublisher
from pipelines.mqtt.rings import RingDispatcher
from pipelines.mqtt.topics import Topics
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Subscriber, actor_config, make_event, retained
from tests.support.publisher_ports import FakeCameras, FakeMetrics, FakeStore
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def started() -> Iterator[list[EventPublisher]]:
    publishers: list[EventPublisher] = []
    yield publishers
    for publisher in publishers:
        publisher.shutdown()


def start(
    started: list[EventPublisher], config: Config, store: FakeStore | None
) -> tuple[EventPublisher, FakeMetrics]:
    metrics = FakeMetrics()
    publisher = EventPublisher(
        config, store=store, cameras=FakeCameras(), metrics=metrics, sw_version="test"
    )
    started.append(publisher)
    publisher.start()
    wait_for(lambda: publisher.status()["connected"], 20, "the publisher to connect")
    return publisher, metrics


def test_acks_reach_the_store_in_batches(
    mosquitto: Any, tmp_path: Path, started: list[EventPublisher]
) -> None:
    config = actor_config(mosquitto.port, tmp_path, qos=1)
    store = FakeStore()
    publisher, metrics = start(started, config, store)
    topic = Topics(config.mqtt.topic_prefix).event("front_door")
    sub = Subscriber(mosquitto.port, [topic])
    try:
        events = [make_event() for _ in range(40)]
        store.add(*events)  # saved: the publisher reads them from the store's feed
        sub.wait_for(lambda m: len(m) >= 40, 20)
        status = publisher.flush(20)
        sub.wait_for(lambda m: len(m) >= 40, 20)
    finally:
        sub.close()
    assert store.marked == {e.event_id for e in events}
    assert len(store.marks) < 40  # batched: many acks per mark_published call
    assert status["pending"] == 0 and status["acks_to_store"] == 0 and status["acked"] == 40
    assert metrics.totals["published"] == 40 and metrics.totals["acked"] == 40
    assert metrics.latencies  # sampled hand-over → ack latencies


def test_unpublished_events_are_replayed_on_connect(
    mosquitto: Any, tmp_path: Path, started: list[EventPublisher]
) -> None:
    config = actor_config(mosquitto.port, tmp_path, qos=1)
    topic = Topics(config.mqtt.topic_prefix).event("front_door")
    sub = Subscriber(mosquitto.port, [topic])
    events = [make_event(description=f"stored while away {i}") for i in range(3)]
    filtered = make_event(filtered=True)  # stored only: never published
    store = FakeStore([*events, filtered])
    try:
        publisher, metrics = start(started, config, store)
        sub.wait_for(lambda m: len(m) >= 3, 20)
        status = publisher.flush(20)
    finally:
        sub.close()
    assert sub.event_ids(topic) == [e.event_id for e in events]  # in order
    # the stored-only event is not read again (the feed's replay reads unacknowledged events)
    assert status["replay_passes"] == 1 and status["replayed"] == 3 and status["filtered"] == 0
    assert metrics.totals["replayed"] == 3
    assert publisher.replay(3600) == 3  # `liveobject replay`: published or not
    store.add(make_event(filtered=True))  # a live one is read, counted and not sent
    wait_for(lambda: publisher.status()["filtered"] == 1, 10, "the filtered event counted")


def test_events_dropped_at_a_full_queue_are_retried_on_the_timer(
    mosquitto: Any, tmp_path: Path, started: list[EventPublisher]
) -> None:
    config = actor_config(mosquitto.port, tmp_path, qos=1, queue_size=1, retry_interval_s=1)
    store = FakeStore()
    publisher, metrics = start(started, config, store)
    # the replay on connecting has run (with nothing to send): only the timer can resend now
    wait_for(lambda: publisher.status()["replay_passes"] >= 1, 20, "the replay on connect")
    events = [make_event() for _ in range(10)]
    store.add(*events)  # a burst read live from the feed: most do not fit the queue of one
    wait_for(lambda: metrics.totals["failed:dropped"] > 0, 10, "events dropped at the queue")
    wait_for(lambda: store.marked == {e.event_id for e in events}, 30, "every event acked")
    status = publisher.status()
    assert status["dropped"] > 0 and status["connects"] == 1  # no reconnect brought them
    assert status["retry_passes"] >= 1 and status["replayed"] > 0


def test_publisher_alone_keeps_acks_for_later(
    mosquitto: Any, tmp_path: Path, started: list[EventPublisher]
) -> None:
    publisher, _metrics = start(started, actor_config(mosquitto.port, tmp_path, qos=1), None)
    publisher.publish_events([make_event(), make_event()])
    wait_for(lambda: publisher.status()["acks_to_store"] == 2, 20, "two acks kept")
    assert publisher.replay(3600) == 0  # nothing to replay from
    started_at = time.monotonic()
    status = publisher.flush(10)  # acks with nowhere to go are not waited for
    assert time.monotonic() - started_at < 5 and status["acks_to_store"] == 2


def test_a_batch_leaves_each_cameras_newest_event_as_its_last_event(
    mosquitto: Any, tmp_path: Path, started: list[EventPublisher]
) -> None:
    cams = [CameraConfig(id=c, source=str(tmp_path / "x.mp4")) for c in ("front", "back")]
    config = actor_config(mosquitto.port, tmp_path, qos=1, cameras=cams)
    publisher, _metrics = start(started, config, None)
    now = datetime.now(UTC)
    batch = [  # out of order in time, as a replay after a restart may hand them
        make_event("front", description="front new", timestamp=now),
        make_event("back", description="back old", timestamp=now - timedelta(minutes=5)),
        make_event("front", description="front old", timestamp=now - timedelta(minutes=1)),
        make_event("back", description="back new", timestamp=now - timedelta(minutes=2)),
    ]
    assert publisher.publish_events(batch) == 4
    publisher.flush(10)
    prefix = config.mqtt.topic_prefix
    wait_for(
        lambda: (
            {
                topic.split("/")[-2]: json.loads(payload)["event_id"]
                for topic, payload in retained(
                    mosquitto.port, f"{prefix}/camera/+/last_event"
                ).items()
            }
            == {"front": batch[0].event_id, "back": batch[3].event_id}
        ),
        20,
        "each camera's newest event as its retained last_event",
    )


def test_the_inflight_window_is_capped_by_the_brokers_receive_maximum(
    tmp_path: Path, started: list[EventPublisher]
) -> None:
    broker = Mosquitto(tmp_path, extra_conf="max_inflight_messages 5\n")
    broker.start()
    try:
        config = actor_config(broker.port, tmp_path, qos=1, max_inflight=100)
        topic = Topics(config.mqtt.topic_prefix).event("front_door")
        sub = Subscriber(broker.port, [topic])
        try:
            publisher, _metrics = start(started, config, FakeStore())
            assert publisher.status()["inflight_window"] == 5  # its CONNACK's Receive Maximum
            events = [make_event() for _ in range(300)]
            assert publisher.publish_events(events) == 300
            sub.wait_for(lambda m: len(m) >= 300, 20)
            assert publisher.flush(20)["acked"] == 300
        finally:
            sub.close()
        assert "exceeded" not in broker.log().lower()
        v311 = actor_config(broker.port, tmp_path, qos=1, max_inflight=64, protocol="3.1.1")
        assert start(started, v311, None)[0].status()["inflight_window"] == 64  # no such cap
        small = actor_config(broker.port, tmp_path, qos=1, max_inflight=3)
        assert start(started, small, None)[0].status()["inflight_window"] == 3
    finally:
        broker.stop()


def test_rings_reach_running_doorbells_only() -> None:
    cameras = FakeCameras(running={"door"})
    dispatcher = RingDispatcher(cameras, lambda cid: cid in {"door"})
    for camera_id in ("door", "yard", "gone", "door"):
        dispatcher.on_ring(camera_id)
    wait_for(lambda: sum(dispatcher.counts().values()) == 4, 10, "four rings handled")
    assert cameras.rung == ["door", "door"]
    assert dispatcher.counts() == {"rings_dispatched": 2, "rings_rejected": 2}
    dispatcher.shutdown()


def test_a_ring_flood_is_bounded() -> None:
    cameras = FakeCameras(running={"door"})
    cameras.gate.clear()  # the first ring is stuck in dispatch
    dispatcher = RingDispatcher(cameras, lambda _cid: True, max_pending=3)
    for _ in range(10):
        dispatcher.on_ring("door")
    assert dispatcher.counts()["rings_rejected"] == 7
    cameras.gate.set()
    wait_for(lambda: dispatcher.counts()["rings_dispatched"] == 3, 10, "three rings sent")
    dispatcher.shutdown()


def test_ring_commands_over_mqtt_ring_configured_doorbells(
    mosquitto: Any, tmp_path: Path, started: list[EventPublisher]
) -> None:
    cameras_config = [
        CameraConfig(id="door", source=str(tmp_path / "d.mp4"), doorbell=True),
        CameraConfig(id="yard", source=str(tmp_path / "y.mp4")),
    ]
    config = actor_config(mosquitto.port, tmp_path, cameras=cameras_config)
    cameras = FakeCameras(running={"door", "yard"})
    publisher = EventPublisher(
        config, store=None, cameras=cameras, metrics=FakeMetrics(), sw_version="test"
    )
    started.append(publisher)
    publisher.start()
    wait_for(lambda: publisher.status()["connected"], 20, "the publisher to connect")
    topics = Topics(config.mqtt.topic_prefix)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    online = threading.Event()
    client.on_message = lambda _c, _u, msg: msg.payload == b"online" and online.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe(topics.status, qos=1)
    client.loop_start()
    try:
        # the publisher subscribes before it sends its retained `online`: once that is seen,
        # a ring cannot arrive before the publisher listens
        assert online.wait(20), "the publisher's retained online status"
        for camera_id in ("yard", "door"):  # yard is no doorbell
            client.publish(topics.ring(camera_id), "ring", qos=1).wait_for_publish(10)
        # yard is refused before the rate limiter (ignored), door reaches its camera
        wait_for(lambda: publisher.status()["rings_ignored"] == 1 and cameras.rung, 20, "rings")
    finally:
        client.loop_stop()
        client.disconnect()
    assert cameras.rung == ["door"] and publisher.status()["rings_dispatched"] == 1
