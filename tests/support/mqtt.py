"""MQTT test helpers: real paho subscribers (every message, events with their thumbnails, status
payloads, retained messages), settings and events for one test, and a store feeder."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pipelines.config import (
    CameraConfig,
    Config,
    DiscoveryConfig,
    MQTTConfig,
    RayConfig,
    StorageConfig,
)
from pipelines.events import Event
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR
from tests.support.media import jpeg
from tests.support.waiting import wait_for


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    expiry: int | None
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """Subscribes at QoS 2, keeps every message, resubscribes on reconnect."""

    def __init__(
        self,
        port: int,
        filters: list[str],
        protocol: int = mqtt.MQTTv5,
        *,
        persistent: bool = False,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.filters = filters
        self.messages: list[Received] = []
        self.subscribed = threading.Event()
        self.connects = 0
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        if auth is not None:
            self.client.username_pw_set(*auth)
        if persistent:  # the broker keeps our subscriptions and queues messages while we are away
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.client.connect(
                "127.0.0.1", port, keepalive=10, clean_start=False, properties=props
            )
        else:
            self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("subscriber did not subscribe")

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        self.connects += 1
        client.subscribe([(f, 2) for f in self.filters])

    def _on_subscribe(self, *_args: Any) -> None:
        self.subscribed.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self.subscribed.clear()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        expiry = getattr(msg.properties, "MessageExpiryInterval", None)
        with self._cond:
            self.messages.append(
                Received(msg.topic, msg.payload, msg.qos, msg.retain, expiry, time.monotonic())
            )
            self._cond.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"condition not met in {timeout}s; got {len(self.messages)} messages: "
                        + ", ".join(sorted({m.topic for m in self.messages}))
                    )
                self._cond.wait(left)
            return list(self.messages)

    def event_ids(self, topic: str) -> list[str]:
        return [m.json()["event_id"] for m in self.on(topic)]

    def wait_for_ids(self, topic: str, ids: set[str], timeout: float = 30.0) -> set[str]:
        """Wait until every id arrived on topic (duplicates allowed); the distinct ids seen."""
        try:
            self.wait_for(lambda _m: ids <= set(self.event_ids(topic)), timeout)
        except TimeoutError as exc:
            missing = ids - set(self.event_ids(topic))
            raise TimeoutError(f"{len(missing)} of {len(ids)} events never arrived") from exc
        return set(self.event_ids(topic))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class EventSubscriber:
    """A real QoS-2 subscriber that fetches each event's thumbnail as soon as it arrives."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, int, bool, dict[str, Any]]] = []
        self.thumbnails: dict[str, tuple[int, str, bytes]] = {}
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._client.subscribe(topic, qos=2)
        assert subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        payload = json.loads(msg.payload)
        with self._lock:
            self.messages.append((msg.topic, msg.qos, bool(msg.retain), payload))
        try:
            resp = httpx.get(payload["thumbnail_url"], timeout=10)
            self.thumbnails[payload["event_id"]] = (
                resp.status_code,
                resp.headers.get("content-type", ""),
                resp.content,
            )
        except Exception as exc:  # recorded, asserted on below
            self.thumbnails[payload["event_id"]] = (0, repr(exc), b"")

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class StatusWatcher:
    """Records every payload on `{prefix}/status` (retained included)."""

    def __init__(self, port: int, topic: str) -> None:
        self.payloads: list[str] = []
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self.payloads.append(msg.payload.decode())

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def retained(port: int, topic_filter: str, settle_s: float = 1.0) -> dict[str, bytes]:
    """The retained messages a fresh subscriber gets for topic_filter (empty ones left out)."""
    got: dict[str, bytes] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, msg: got.__setitem__(msg.topic, msg.payload)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topic_filter, qos=1)
    time.sleep(settle_s)
    client.loop_stop()
    client.disconnect()
    return {topic: payload for topic, payload in got.items() if payload}


def make_event(camera_id: str = "front_door", full: bool = False, **overrides: Any) -> Event:
    """A valid event; `full` sets every optional field."""
    fields: dict[str, Any] = {
        "camera_id": camera_id,
        "camera_name": "Front Door",
        "description": "A person walks to the door.",
        "objects_detected": ("person",),
        "confidence": 80,
        "source_type": "file",
        "timestamp": datetime.now(UTC),
    }
    if full:
        fields.update(
            smart_detection_type="person",
            is_doorbell_ring=True,
            provider_used="transformers:tiny",
            analysis_mode="multi_frame",
            ai_confidence=91,
            correlation_group_id=str(uuid.uuid4()),
        )
    fields.update(overrides)
    return Event(**fields)


def unique_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"lo-test-{uuid.uuid4().hex[:10]}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def readable_broker_log(broker: Any) -> None:
    """Make the fixture broker's log (connection_count, log) work when tests run as root.

    As root, mosquitto drops to user `mosquitto`, which cannot write the log inside pytest's
    0700 tmp dir, so the log stays empty and connection_count() is always 0. `user root`
    keeps it writable. A probe connection proves the counter works before a test relies on it.
    """
    if os.geteuid() == 0 and "user root" not in broker.conf_path.read_text():
        with broker.conf_path.open("a") as conf:
            conf.write("user root\n")
        broker.restart()
    probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe")
    probe.connect("127.0.0.1", broker.port)
    probe.loop_start()
    deadline = time.monotonic() + 5
    while broker.connection_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    probe.disconnect()
    probe.loop_stop()
    if broker.connection_count() != 1:
        raise RuntimeError("broker log does not record connections")


# ---------------------------------------------------------------- Ray-side helpers


def mqtt_settings(port: int, prefix: str, **overrides: Any) -> MQTTConfig:
    """MQTT settings for one test: loopback broker, its own topic and discovery prefixes."""
    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "topic_prefix": prefix,
        "discovery": DiscoveryConfig(prefix=f"{prefix}-ha"),
        "keepalive_s": 5,
    }
    fields.update(overrides)
    return MQTTConfig(**fields)


def actor_config(
    port: int,
    storage: Path,
    *,
    cameras: list[CameraConfig] | None = None,
    prefix: str | None = None,
    namespace: str | None = None,
    **mqtt_fields: Any,
) -> Config:
    """A Config for one test: its own topic prefix, Ray namespace and storage dir."""
    if cameras is None:
        cameras = [CameraConfig(id="front_door", name="Front Door", source=str(storage / "x.mp4"))]
    return Config(
        cameras=cameras,
        ray=RayConfig(namespace=namespace or f"lo-test-{uuid.uuid4().hex[:8]}"),
        mqtt=mqtt_settings(port, prefix or unique_prefix(), **mqtt_fields),
        storage=StorageConfig(path=storage),
    )


def kill_actors(namespace: str, names: tuple[str, ...] = (PUBLISHER_ACTOR, STORE_ACTOR)) -> None:
    """Kill this test's detached actors for good."""
    import ray

    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        except ValueError:
            pass


def poll(call: Callable[[], Any], predicate: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """Call a remote method (`actor.m.remote`) until its value satisfies predicate."""
    import ray

    seen: list[Any] = []

    def satisfied() -> tuple[Any] | None:
        seen[:] = [ray.get(call(), timeout=max(1.0, timeout))]
        return (seen[0],) if predicate(seen[0]) else None  # a falsy value can satisfy it too

    found = wait_for(
        satisfied,
        timeout,
        "a remote value that satisfies the predicate",
        interval=0.1,
        context=lambda: f"last value: {seen[0]!r}" if seen else "",
    )
    return found[0]


class Feeder:
    """Saves events through the real `event-store` actor in a loop, like camera actors do."""

    def __init__(self, store: Any, rate_per_s: float = 50.0, camera_id: str = "front_door"):
        self.store = store
        self.interval = 1.0 / rate_per_s
        self.camera_id = camera_id
        self.saved: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self._jpeg = jpeg((128, 128, 128), (16, 16), stripe=False)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        import ray

        next_at = time.monotonic()
        while not self._stop.is_set():
            event = make_event(self.camera_id)
            try:
                ray.get(self.store.save.remote(event, self._jpeg), timeout=30)
            except BaseException as exc:  # surfaced by stop()
                self.errors.append(exc)
                return
            self.saved.append(event.event_id)
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def wait_saved(self, count: int, timeout: float = 20.0) -> None:
        """Block until at least `count` events were saved in total."""
        deadline = time.monotonic() + timeout
        while len(self.saved) < count:
            if self.errors:
                raise self.errors[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.saved)} of {count} events saved")
            time.sleep(0.02)

    def stop(self) -> set[str]:
        """Stop saving; the ids saved (raises what the loop hit)."""
        self._stop.set()
        self._thread.join(40)
        if self.errors:
            raise self.errors[0]
        return set(self.saved)
