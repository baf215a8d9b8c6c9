"""The broker ACL of docs/mqtt.md ("Broker ACLs", `configs/mosquitto/liveobject.acl`) against a
real mosquitto started with it: liveobject publishes its events and discovery, Home Assistant
reads them and is the only one that can ring; nobody else can ring or clear discovery."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from pipelines.config import CameraConfig, DiscoveryConfig
from pipelines.mqtt.publishing import EventPublisher
from pipelines.mqtt.topics import Topics, camera_registry_payload
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import actor_config, make_event
from tests.support.publisher_ports import FakeCameras, FakeMetrics, FakeStore
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ACL = Path(__file__).resolve().parents[2] / "configs" / "mosquitto" / "liveobject.acl"
USERS = {"liveobject": "pub-secret-1", "homeassistant": "ha-secret-2", "intruder": "guess-3"}
TOPICS = Topics("liveobject", "homeassistant")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed (Debian package `mosquitto`)")
    passwords = tmp_path / "passwd"
    for i, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run([tool, *create, "-b", str(passwords), user, password], check=True)
    broker = Mosquitto(
        tmp_path, extra_conf=f"password_file {passwords}\nacl_file {ACL}\n", anonymous=False
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Client:
    """A paho client logged in as one user: what it receives, and publishing at QoS 1."""

    def __init__(self, port: int, user: str, filters: tuple[str, ...] = ()) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}"
        )
        self.client.username_pw_set(user, USERS[user])
        self.client.on_connect = lambda c, *_: (
            [c.subscribe(f, 1) for f in filters],
            self.ready.set(),
        )
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10), f"{user} could not connect"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload in list(self.messages) if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_the_documented_acl_lets_each_side_do_its_part_only(
    broker: Mosquitto, tmp_path: Path
) -> None:
    door = CameraConfig(
        id="front_door", name="Front Door", source="rtsp://cam.lan/s", doorbell=True
    )
    config = actor_config(
        broker.port,
        tmp_path,
        cameras=[door],
        prefix="liveobject",
        qos=1,
        username="liveobject",
        password=SecretStr(USERS["liveobject"]),
        discovery=DiscoveryConfig(prefix="homeassistant"),
    )
    store, cameras = FakeStore(), FakeCameras(running={"front_door"})
    ha = Client(broker.port, "homeassistant", ("liveobject/#", "homeassistant/#"))
    intruder = Client(broker.port, "intruder", ("liveobject/#",))
    publisher = EventPublisher(
        config, store=store, cameras=cameras, metrics=FakeMetrics(), sw_version="test"
    )
    publisher.start()
    try:
        wait_for(lambda: publisher.status()["connected"], 20, "the publisher to log in")
        # liveobject publishes: HA sees the event and the discovery
        store.add(event := make_event())
        wait_for(lambda: ha.on(TOPICS.event("front_door")), 20, "the event at HA")
        assert any(t.startswith("homeassistant/") for t, _ in ha.messages)
        assert not intruder.messages  # the ACL gives it nothing to read
        # only HA can ring
        intruder.publish(TOPICS.ring("front_door"), b"PRESS")
        ha.publish(TOPICS.ring("front_door"), b"PRESS")
        wait_for(lambda: cameras.rung == ["front_door"], 20, "HA's ring")
        # nobody else can clear discovery through the registry, or pose as liveobject
        intruder.publish(
            TOPICS.cameras, camera_registry_payload(["front_door"], "other").encode(), True
        )
        intruder.publish(TOPICS.event("front_door"), b'{"forged": true}')
        ha.publish(TOPICS.event("front_door"), b'{"forged": true}')  # HA only reads events
        publisher.flush(10)
        status = publisher.status()
        assert status["rings_received"] == 1 and status["registry_ignored"] == 0
        assert ha.on(TOPICS.event("front_door")) and all(
            b"forged" not in payload for payload in ha.on(TOPICS.event("front_door"))
        )
        assert store.marked == {event.event_id}
    finally:
        publisher.shutdown()
        ha.close()
        intruder.close()
    assert "Denied PUBLISH from intruder" in broker.log()
