"""Home Assistant side of the `mqtt-publisher` actor: discovery clean-up, LWT, doorbell rings.

The ring test registers small stand-in Ray actors under the camera actor names
(`camera:<id>`) that speak the camera actor's `ring()` method and record the calls: a real
Ray actor on the real cluster, so the publisher's lookup and fire-and-forget call are real;
only the video analysis behind `ring()` is left out (the camera actor's own tests cover it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import ray
from paho.mqtt.enums import CallbackAPIVersion

from cluster.actors.publisher import get_publisher
from pipelines.config import CameraConfig
from pipelines.mqtt.topics import COMPONENTS, Topics
from pipelines.naming import ingest_actor_name
from tests.support.mqtt import (
    Subscriber,
    actor_config,
    kill_actors,
    poll,
    unique_prefix,
)

pytestmark = pytest.mark.integration


def _camera(camera_id: str, tmp_path: Path, doorbell: bool = False) -> CameraConfig:
    return CameraConfig(id=camera_id, source=str(tmp_path / f"{camera_id}.mp4"), doorbell=doorbell)


def _configs(topics: Topics, camera_id: str) -> list[str]:
    return [topics.discovery(c, camera_id, o) for c, o in COMPONENTS]


def _publish(port: int, messages: list[tuple[str, str, bool]]) -> None:
    """Publish (topic, payload, retain) at QoS 1 and wait until the broker has each."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload, retain in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_removed_camera_discovery_is_cleared(ray_session: Any, mosquitto: Any, tmp_path: Path):
    prefix = unique_prefix()
    both = [_camera("front_door", tmp_path), _camera("garage", tmp_path)]
    first = actor_config(mosquitto.port, tmp_path / "a", cameras=both, prefix=prefix)
    second = actor_config(mosquitto.port, tmp_path / "b", cameras=both[:1], prefix=prefix)
    topics = Topics(prefix, first.mqtt.discovery.prefix)
    sub = Subscriber(mosquitto.port, [f"{topics.discovery_prefix}/#"])
    try:
        actor = get_publisher(first)
        sub.wait_for(lambda m: len({x.topic for x in m if x.payload}) >= 2 * len(COMPONENTS), 30)
        ray.get(actor.shutdown.remote(), timeout=30)
        kill_actors(first.ray.namespace)

        actor = get_publisher(second)  # `garage` was removed from the config
        garage = set(_configs(topics, "garage"))
        sub.wait_for(lambda m: garage <= {x.topic for x in m if not x.payload}, 30)
        status = ray.get(actor.status.remote(), timeout=30)
        assert status["discovery_cleared"] == len(COMPONENTS)
        cleared = {m.topic for m in sub.messages if not m.payload}
        assert cleared == garage  # front_door's entities stay

        late = Subscriber(mosquitto.port, [f"{topics.discovery_prefix}/#"])  # sees retained only
        try:
            front = set(_configs(topics, "front_door"))
            late.wait_for(lambda m: front <= {x.topic for x in m}, 10)
            time.sleep(0.3)  # nothing else is retained: give stragglers a moment to show
            assert {m.topic for m in late.messages} == front
        finally:
            late.close()
    finally:
        sub.close()
        kill_actors(first.ray.namespace)
        kill_actors(second.ray.namespace)


def test_availability_offline_when_actor_dies_uncleanly(
    ray_session: Any, mosquitto: Any, tmp_path: Path
):
    config = actor_config(mosquitto.port, tmp_path, keepalive_s=5)
    topics = Topics(config.mqtt.topic_prefix, config.mqtt.discovery.prefix)
    sub = Subscriber(mosquitto.port, [topics.status])
    try:
        actor = get_publisher(config)
        sub.wait_for(lambda _m: [m.payload for m in sub.on(topics.status)][-1:] == [b"online"], 30)
        ray.kill(actor, no_restart=True)  # no DISCONNECT: the broker publishes the will
        killed = time.monotonic()
        msgs = sub.wait_for(lambda m: any(x.payload == b"offline" for x in m), 15)
        offline = next(m for m in msgs if m.payload == b"offline")
        assert offline.at - killed < 5 * 1.5  # keepalive * 1.5
        late = Subscriber(mosquitto.port, [topics.status])
        try:
            got = late.wait_for(lambda m: bool(m), 10)
            assert got[0].payload == b"offline" and got[0].retain
        finally:
            late.close()
    finally:
        sub.close()
        kill_actors(config.ray.namespace)


@ray.remote(num_cpus=0)
class RingRecorder:
    """Stand-in for an ingest actor running one camera: records `ring()` calls."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.calls = 0

    def status(self, camera_ids: Any = None, resume: bool = False) -> dict[str, Any]:
        return {self.camera_id: {"camera_id": self.camera_id, "status": "online"}}

    def ring(self, camera_id: str) -> dict[str, Any]:
        assert camera_id == self.camera_id
        self.calls += 1
        return {"accepted": True}

    def count(self) -> int:
        return self.calls


def test_ring_command_reaches_doorbell_camera_actor(
    ray_session: Any, mosquitto: Any, tmp_path: Path
):
    cameras = [_camera("front_door", tmp_path, doorbell=True), _camera("garage", tmp_path)]
    config = actor_config(mosquitto.port, tmp_path, cameras=cameras)
    namespace = config.ray.namespace
    topics = Topics(config.mqtt.topic_prefix, config.mqtt.discovery.prefix)
    recorders = {
        cid: RingRecorder.options(name=ingest_actor_name(cid), namespace=namespace).remote(cid)  # type: ignore[attr-defined]
        for cid in ("front_door", "garage")
    }
    try:
        # A retained ring must not ring on every (re)connect.
        _publish(mosquitto.port, [(topics.ring("front_door"), "PRESS", True)])
        actor = get_publisher(config)
        poll(actor.status.remote, lambda s: s["connected"] and s["rings_ignored"] == 1, 30)
        prefix = config.mqtt.topic_prefix
        hostile = ["Front_Door", "..", "front_door ", "x" * 65, "camera:front_door", "évil", "$x"]
        _publish(
            mosquitto.port,
            [(f"{prefix}/camera/{level}/ring", "PRESS", False) for level in hostile]
            + [
                (topics.ring("front_door"), "", True),  # clearing the retained ring: not a ring
                (topics.ring("garage"), "PRESS", False),  # configured, but not a doorbell
                (topics.ring("back_door"), "PRESS", False),  # not configured
                (topics.ring("front_door"), "PRESS", False),  # the one real ring
            ],
        )
        status = poll(actor.status.remote, lambda s: s["rings_dispatched"] == 1, 20)
        # garage and back_door are refused before the rate limiter (not configured doorbells)
        assert status["rings_ignored"] == 1 + len(hostile) + 1 + 2
        assert status["rings_received"] == 3 and status["rings_rejected"] == 0
        poll(recorders["front_door"].count.remote, lambda n: n == 1, 10)
        assert ray.get(recorders["garage"].count.remote(), timeout=10) == 0
        assert status["connected"]  # hostile topics did not break the client
    finally:
        for handle in recorders.values():
            ray.kill(handle, no_restart=True)
        kill_actors(namespace)
