"""The `mqtt-publisher` actor: one per cluster, wrapping MqttPublisherCore.

Every Ray call of the MQTT side sits here; the MQTT logic itself is plain Python in
`pipelines.mqtt`. paho's callbacks run on paho's thread, so they only append to a buffer;
a background thread sends acknowledged ids to the `event-store` actor in batches and, after
every (re)connect, republishes the events the store still holds as unpublished.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import ray
from ray.util import metrics

from pipelines.config import Config
from pipelines.events import Event, event_json
from pipelines.mqtt.client import MqttPublisherCore, Outcome
from pipelines.mqtt.topics import (
    CameraInfo,
    Topics,
    discovery_messages,
)
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR, camera_actor_name

logger = logging.getLogger(__name__)

_RECENT_IDS = 20_000  # ids sent by this actor lately: not replayed again on reconnect
_MAX_PENDING_RINGS = 32  # ring commands waiting for dispatch; more are dropped (flood guard)
_LATENCY_BOUNDARIES_MS: list[float] = [
    1,
    2,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10_000,
    30_000,
]


def _sw_version() -> str:
    try:
        return version("liveobject")
    except PackageNotFoundError:
        return "0.1.0"


class _Metrics:
    """Ray metrics of the publisher (exported by the Ray metrics agent, when there is one).

    Recording never raises: metrics must not stop publishing (e.g. no metrics agent).
    """

    def __init__(self) -> None:
        self._failed = False
        try:
            self._create()
        except Exception as exc:
            self._disable(exc)

    def _disable(self, exc: Exception) -> None:
        if not self._failed:
            logger.warning("mqtt-publisher metrics disabled: %s", exc)
        self._failed = True

    def record(self, name: str, op: str, value: float = 1.0, **tags: str) -> None:
        """Apply `op` (inc/set/observe) to metric `name`; errors only disable metrics."""
        if self._failed:
            return
        try:
            getattr(getattr(self, name), op)(value, tags=tags or None)
        except Exception as exc:
            self._disable(exc)

    def _create(self) -> None:
        self.published = metrics.Counter(
            "liveobject_mqtt_published_total",
            description="Event messages handed to the MQTT client.",
            tag_keys=("qos",),
        )
        self.acked = metrics.Counter(
            "liveobject_mqtt_acked_total",
            description="Event messages acknowledged (QoS 0: written to the socket).",
            tag_keys=("qos",),
        )
        self.failures = metrics.Counter(
            "liveobject_mqtt_failures_total",
            description="Events not sent: disconnected, queue full or client error.",
            tag_keys=("reason",),
        )
        self.replayed = metrics.Counter(
            "liveobject_mqtt_replayed_total", description="Stored events republished."
        )
        self.queue_depth = metrics.Gauge(
            "liveobject_mqtt_pending", description="Event messages awaiting acknowledgement."
        )
        self.latency = metrics.Histogram(
            "liveobject_mqtt_ack_latency_ms",
            description="Milliseconds from hand-over to the publisher until the broker's ack.",
            boundaries=_LATENCY_BOUNDARIES_MS,
        )


@ray.remote
class MqttPublisher:
    """Publishes stored events to MQTT, keeps HA discovery and retained states current."""

    def __init__(self, config: Config) -> None:
        self._config = config
        mqtt_config = config.mqtt
        self._qos = str(mqtt_config.qos)
        self._topics = Topics(mqtt_config.topic_prefix, mqtt_config.discovery.prefix)
        self._base_url = config.api.effective_base_url()
        key = config.api.api_key
        self._api_key = key.get_secret_value() if key is not None else None
        self._ttl_s = config.api.thumbnail_url_ttl_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._acked: list[str] = []
        self._sent_at: dict[str, float] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._mark_refs: list[Any] = []
        self._replay_wanted = False
        self._stopping = False
        self._replayed_total = 0
        self._metrics = _Metrics()
        # Ring commands arrive on paho's thread; one worker thread looks the camera actor up
        # and fires its `ring` (never paho's thread, never behind a long replay).
        self._rings = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-ring")
        self._rings_pending = 0
        self._ring_counts = {"rings_dispatched": 0, "rings_rejected": 0}
        self._core = MqttPublisherCore(
            mqtt_config,
            self._topics,
            self._on_acked,
            on_connected=self._on_connected,
            on_ring=self._on_ring,
        )
        sw = _sw_version()
        for camera in config.cameras:
            if camera.enabled:
                info = CameraInfo.from_config(camera)
                self._core.set_discovery(
                    camera.id, discovery_messages(info, self._topics, self._base_url, sw)
                )
        self._thread = threading.Thread(
            target=self._background, name="mqtt-publisher-bg", daemon=True
        )
        self._thread.start()
        self._core.start()
        logger.info("mqtt-publisher started (broker %s)", self._core.broker)

    # ---------------------------------------------------------------- actor methods
    async def publish_event(self, event: Event) -> None:
        """Hand one stored event to MQTT; returns at once (never waits for the broker)."""
        self._publish(event, replay=False)

    async def publish_events(self, events: list[Event]) -> None:
        """Hand several stored events to MQTT in order (one Ray call for a batch)."""
        for event in events:
            self._publish(event, replay=False)

    async def set_camera_status(self, camera_id: str, status: str, source_type: str) -> None:
        """Publish a camera's retained status (online/offline/unavailable)."""
        try:
            name = self._config.camera(camera_id).name or camera_id
        except KeyError:
            name = camera_id
        self._core.set_camera_status(camera_id, name, status, source_type)

    async def set_activity(self, camera_id: str, on: bool) -> None:
        """Publish a camera's retained activity `ON`/`OFF`."""
        self._core.set_activity(camera_id, on)

    async def status(self) -> dict[str, Any]:
        """The core's connection state and counters plus actor-side bookkeeping."""
        out = self._core.status()
        with self._lock:
            out["acks_to_store"] = len(self._acked)
            out["replayed"] = max(out["replayed"], self._replayed_total)
            out.update(self._ring_counts)
        out["replay_window_s"] = self._config.mqtt.replay_window_s
        return out

    async def flush(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until nothing is pending and every ack reached the store, or timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                acks_waiting = bool(self._acked)
            if self._core.pending == 0 and not acks_waiting:
                break
            self._wake.set()
            await asyncio.sleep(0.02)
        refs = self._take_mark_refs()
        if refs:
            left = max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(asyncio.gather(*refs), timeout=left)
            except Exception as exc:
                logger.warning("marking events published did not finish: %s", type(exc).__name__)
        return await self.status()

    async def replay(self, since_s: float) -> int:
        """Republish every stored event younger than since_s (published or not); the count sent."""
        store = self._store()
        if store is None:
            return 0
        events: list[Event] = await store.events_since.remote(float(since_s))
        return await asyncio.to_thread(self._republish, events, False)

    async def shutdown(self) -> dict[str, Any]:
        """Publish `offline`, disconnect and stop background work."""
        status = await self.flush(2.0)
        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(self._core.stop)
        self._rings.shutdown(wait=False, cancel_futures=True)
        status["connected"] = False
        return status

    # ---------------------------------------------------------------- internals
    def _publish(self, event: Event, *, replay: bool) -> Outcome:
        payload = event_json(event, self._base_url, self._api_key, self._ttl_s)
        with self._lock:
            self._sent_at[event.event_id] = time.monotonic()
        # last_event is derived from the payload by the core, only when it is sent
        outcome = self._core.publish_event(event, payload, replay=replay)
        if outcome == "sent":
            self._metrics.record("published", "inc", qos=self._qos)
            with self._lock:
                self._recent[event.event_id] = None
                self._recent.move_to_end(event.event_id)
                while len(self._recent) > _RECENT_IDS:
                    self._recent.popitem(last=False)
        else:
            with self._lock:
                self._sent_at.pop(event.event_id, None)
            if outcome != "disabled":
                self._metrics.record("failures", "inc", reason=outcome)
        return outcome

    def _on_acked(self, event_ids: list[str]) -> None:
        # paho's thread: record and wake the background thread, nothing slow.
        now = time.monotonic()
        with self._lock:
            self._acked.extend(event_ids)
            started = [self._sent_at.pop(i, None) for i in event_ids]
        for t0 in started:
            if t0 is not None:
                self._metrics.record("latency", "observe", (now - t0) * 1000.0)
        self._metrics.record("acked", "inc", len(event_ids), qos=self._qos)
        self._wake.set()

    def _on_ring(self, camera_id: str) -> None:
        # paho's thread: queue the dispatch, never wait on Ray here.
        with self._lock:
            if self._rings_pending >= _MAX_PENDING_RINGS:
                self._ring_counts["rings_rejected"] += 1
                logger.warning("too many ring commands pending; ignoring one for %s", camera_id)
                return
            self._rings_pending += 1
        self._rings.submit(self._dispatch_ring, camera_id)

    def _dispatch_ring(self, camera_id: str) -> None:
        """Fire `ring` on the camera's actor when the camera is a configured doorbell."""
        try:
            try:
                camera = self._config.camera(camera_id)
            except KeyError:
                camera = None
            if camera is None or not camera.doorbell or not camera.enabled:
                with self._lock:
                    self._ring_counts["rings_rejected"] += 1
                logger.warning("ring command for %s ignored: not a configured doorbell", camera_id)
                return
            try:
                actor = ray.get_actor(
                    camera_actor_name(camera_id), namespace=self._config.ray.namespace
                )
            except ValueError:
                with self._lock:
                    self._ring_counts["rings_rejected"] += 1
                logger.warning("ring command for %s ignored: camera actor not running", camera_id)
                return
            actor.ring.remote()  # fire and forget: the camera analyses and stores the event
            with self._lock:
                self._ring_counts["rings_dispatched"] += 1
            logger.info("doorbell ring for %s sent to its camera actor", camera_id)
        except Exception:
            logger.exception("dispatching a ring command for %s failed", camera_id)
        finally:
            with self._lock:
                self._rings_pending -= 1

    def _on_connected(self) -> None:
        self._replay_wanted = True
        self._wake.set()

    def _store(self) -> Any:
        try:
            return ray.get_actor(STORE_ACTOR, namespace=self._config.ray.namespace)
        except ValueError:
            return None

    def _take_mark_refs(self) -> list[Any]:
        with self._lock:
            refs, self._mark_refs = self._mark_refs, []
        return refs

    def _background(self) -> None:
        while not self._stopping:
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self._send_acks()
                if self._replay_wanted:
                    self._replay_wanted = False
                    self._replay_unpublished()
                self._metrics.record("queue_depth", "set", self._core.pending)
            except Exception:
                logger.exception("mqtt-publisher background step failed")

    def _send_acks(self) -> None:
        with self._lock:
            ids, self._acked = self._acked, []
        if not ids:
            return
        store = self._store()
        if store is None:
            return  # publisher alone (tests) or store restarting: the ids stay unpublished
        ref = store.mark_published.remote(ids)
        with self._lock:
            self._mark_refs.append(ref)
            if len(self._mark_refs) > 256:
                _ready, rest = ray.wait(
                    self._mark_refs, num_returns=len(self._mark_refs), timeout=0
                )
                self._mark_refs = rest

    def _replay_unpublished(self) -> None:
        window = self._config.mqtt.replay_window_s
        if window <= 0:
            return  # the seed's behaviour: events from an outage are dropped
        store = self._store()
        if store is None:
            return
        events: list[Event] = ray.get(store.unpublished_events.remote(float(window)), timeout=120)
        if events:
            sent = self._republish(events, True)
            logger.info("replayed %d of %d unpublished events after connect", sent, len(events))

    def _republish(self, events: list[Event], skip_recent: bool) -> int:
        """Publish events in order, pacing on the pending queue; the number sent."""
        sent = 0
        limit = max(1, self._config.mqtt.queue_size // 2)
        for event in events:
            if self._stopping or not self._core.connected:
                break
            if skip_recent:
                with self._lock:
                    if event.event_id in self._recent:
                        continue
            waited = 0.0
            while self._core.pending >= limit and waited < 30 and self._core.connected:
                time.sleep(0.01)
                waited += 0.01
            if self._publish(event, replay=True) == "sent":
                sent += 1
        with self._lock:
            self._replayed_total += sent
        if sent:
            self._metrics.record("replayed", "inc", sent)
        return sent


def get_publisher(config: Config) -> Any:
    """The `mqtt-publisher` actor handle, created if it does not exist (safe under races)."""
    options: dict[str, Any] = {
        "name": PUBLISHER_ACTOR,
        "namespace": config.ray.namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": -1,
        "num_cpus": 0.05,
    }
    try:
        return MqttPublisher.options(**options).remote(config)  # type: ignore[attr-defined]
    except ValueError:  # lost a creation race on a Ray without atomic get_if_exists
        return ray.get_actor(PUBLISHER_ACTOR, namespace=config.ray.namespace)
