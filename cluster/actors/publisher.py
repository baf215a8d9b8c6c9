"""The `mqtt-publisher` actor: one per cluster, wrapping MqttPublisherCore.

Every Ray call of the MQTT side sits here; the MQTT logic itself is plain Python in
`pipelines.mqtt`. paho's callbacks run on paho's thread, so they only append to a buffer;
a background thread sends acknowledged ids to the `event-store` actor in batches and, after
every (re)connect, republishes the events the store still holds as unpublished.

Events handed over while connected but not sent (paho's queue full: `dropped`; a client error
or a broker that refused the message: `failed`) stay unpublished in the store and are retried
on a timer (`mqtt.retry_interval_s`, at most half of `replay_window_s`) by the same replay, so a
broker that stays connected for days never strands them past the replay window.

The retained `last_event` carries the camera route's thumbnail URL (`camera_thumbnail_url`):
with an API key its token does not expire, so Home Assistant's image never breaks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import ray
from ray.util import metrics

from pipelines.config import Config
from pipelines.events import Event, camera_thumbnail_url, event_json
from pipelines.mqtt.client import MqttPublisherCore, Outcome
from pipelines.mqtt.topics import (
    CameraInfo,
    Topics,
    discovery_messages,
    last_event_from_event_payload,
    to_json,
)
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR, camera_actor_name

logger = logging.getLogger(__name__)

_RECENT_IDS = 20_000  # ids sent by this actor lately: not replayed again on reconnect
_MAX_ACKS_WAITING = 100_000  # acked ids kept while the store is away; older ones are let go
_MAX_PENDING_RINGS = 32  # ring commands waiting for dispatch; more are dropped (flood guard)
# Ack bookkeeping is batched: the background thread waits this long after a wake so that one
# `mark_published` call (and one metrics update) covers many acks, and observes at most
# _LATENCY_SAMPLES_PER_S ack latencies a second (a sample at high rates; the counters stay exact).
_ACK_GATHER_S = 0.02
_LATENCY_SAMPLES_PER_S = 200
_STORE_LOOKUP_S = 1.0  # how long a looked-up `event-store` handle (or its absence) is reused
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
        self._ack_latency_ms: list[float] = []
        self._latency_window = (0.0, 0)  # (second it started, samples taken in it)
        self._store_handle: Any = None
        self._store_looked_up = -_STORE_LOOKUP_S
        self._sent_at: dict[str, float] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._mark_refs: list[Any] = []
        self._replay_wanted = False
        window = mqtt_config.replay_window_s
        self._retry_interval_s = (
            min(mqtt_config.retry_interval_s, window / 2) if window > 0 else window
        )
        self._retry_at: float | None = None  # when unsent events are retried next
        # replay passes (after a connect or on the retry timer), those the timer started
        self._retry_counts = {"replay_passes": 0, "retry_passes": 0, "acks_let_go": 0}
        self._stopping = False
        self._replayed_total = 0
        self._filtered = 0  # events skipped by the object filter (stored, never published)
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
            on_rejected=self._on_rejected,
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
    async def publish_events(self, events: list[Event]) -> None:
        """Hand stored events to MQTT in order; returns at once (never waits for the broker).

        The store calls this once per group commit, so one Ray call carries the whole group.
        """
        sent = sum(self._publish(event, replay=False) == "sent" for event in events)
        if sent:
            self._metrics.record("published", "inc", sent, qos=self._qos)

    async def reconfigure(self, config: Config) -> dict[str, list[str]]:
        """Take a new config's cameras and link settings in place (cluster.reconfigure):
        discovery of removed cameras is cleared, that of new or changed ones (re)sent."""
        old = {c.id: c for c in self._config.cameras if c.enabled}
        self._config = config
        self._base_url = config.api.effective_base_url()
        key = config.api.api_key
        self._api_key = key.get_secret_value() if key is not None else None
        self._ttl_s = config.api.thumbnail_url_ttl_s
        new = {c.id: c for c in config.cameras if c.enabled}
        for camera_id in sorted(set(old) - set(new)):
            self._core.remove_discovery(camera_id)
        sw = _sw_version()
        for camera_id, camera in new.items():
            info = CameraInfo.from_config(camera)
            self._core.set_discovery(
                camera_id, discovery_messages(info, self._topics, self._base_url, sw)
            )
        return {"removed": sorted(set(old) - set(new)), "added": sorted(set(new) - set(old))}

    async def set_camera_status(
        self, camera_id: str, status: str, source_type: str, reason: str | None = None
    ) -> None:
        """Publish a camera's retained status (online/offline/unavailable/unplaceable)."""
        try:
            name = self._config.camera(camera_id).name or camera_id
        except KeyError:
            name = camera_id
        self._core.set_camera_status(camera_id, name, status, source_type, reason)

    async def set_activity(self, camera_id: str, on: bool) -> None:
        """Publish a camera's retained activity `ON`/`OFF`."""
        self._core.set_activity(camera_id, on)

    async def status(self) -> dict[str, Any]:
        """The core's connection state and counters plus actor-side bookkeeping."""
        out = self._core.status()
        with self._lock:
            out["acks_to_store"] = len(self._acked)
            out["replayed"] = max(out["replayed"], self._replayed_total)
            out["filtered"] = self._filtered
            out.update(self._ring_counts)
            out.update(self._retry_counts)
            retry_at = self._retry_at
        out["replay_window_s"] = self._config.mqtt.replay_window_s
        out["retry_in_s"] = (
            None if retry_at is None else round(max(0.0, retry_at - time.monotonic()), 1)
        )
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
    def _skip_filtered(self, event: Event) -> bool:
        """The object filter: an event the camera marked `filtered` (none of the objects its
        camera or zone asks for; never a ring) is stored only. Counted, never sent."""
        if not event.filtered or event.is_doorbell_ring:
            return False
        with self._lock:
            self._filtered += 1
        logger.debug("event %s filtered: stored, not published", event.event_id)
        return True

    def _publish(self, event: Event, *, replay: bool) -> Outcome | Literal["filtered"]:
        if self._skip_filtered(event):
            return "filtered"
        payload = event_json(event, self._base_url, self._api_key, self._ttl_s)
        with self._lock:
            self._sent_at[event.event_id] = time.monotonic()
        # last_event is built only when it is sent (retained updates coalesce)
        outcome = self._core.publish_event(
            event, payload, last_event_json=self._last_event_json(event, payload), replay=replay
        )
        if outcome == "sent":
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
            if outcome in ("dropped", "failed"):
                self._retry_later()
        return outcome

    def _last_event_json(self, event: Event, payload: str) -> Callable[[], str]:
        """The retained last_event JSON, built on demand; its thumbnail_url goes through the
        camera route, whose token (with an API key) never expires."""

        def build() -> str:
            last = last_event_from_event_payload(json.loads(payload))
            last["thumbnail_url"] = camera_thumbnail_url(
                event.camera_id, event.event_id, self._base_url, self._api_key
            )
            return to_json(last)

        return build

    def _retry_later(self) -> None:
        """Arm the retry timer (once): unsent events are replayed when it is due."""
        if self._retry_interval_s <= 0:
            return  # replay_window_s 0: the seed's behaviour, unsent events are dropped
        with self._lock:
            if self._retry_at is None:
                self._retry_at = time.monotonic() + self._retry_interval_s

    def _retry_due(self) -> bool:
        """Whether the retry timer has run out while connected (then it is disarmed)."""
        with self._lock:
            due = self._retry_at is not None and time.monotonic() >= self._retry_at
            if due and self._core.connected:
                self._retry_at = None
                self._retry_counts["retry_passes"] += 1
                return True
        return False

    def _on_rejected(self, event_ids: list[str]) -> None:
        # paho's thread: the broker refused these after they were sent; replay them later
        with self._lock:
            for event_id in event_ids:
                self._recent.pop(event_id, None)
        self._retry_later()

    def _on_acked(self, event_ids: list[str]) -> None:
        # paho's thread: record and wake the background thread, nothing slow (the metrics are
        # recorded there, in bulk).
        now = time.monotonic()
        with self._lock:
            self._acked.extend(event_ids)
            for event_id in event_ids:
                t0 = self._sent_at.pop(event_id, None)
                if t0 is not None and self._latency_sample(now):
                    self._ack_latency_ms.append((now - t0) * 1000.0)
        self._wake.set()

    def _latency_sample(self, now: float) -> bool:
        """Whether to keep this ack's latency (at most _LATENCY_SAMPLES_PER_S); under the lock."""
        started, taken = self._latency_window
        if now - started >= 1.0:
            started, taken = now, 0
        if taken >= _LATENCY_SAMPLES_PER_S:
            return False
        self._latency_window = (started, taken + 1)
        return True

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
        """The `event-store` handle (None when there is none), looked up at most once a second."""
        now = time.monotonic()
        if now - self._store_looked_up < _STORE_LOOKUP_S:
            return self._store_handle
        try:
            handle = ray.get_actor(STORE_ACTOR, namespace=self._config.ray.namespace)
        except ValueError:
            handle = None
        self._store_handle, self._store_looked_up = handle, now
        return handle

    def _take_mark_refs(self) -> list[Any]:
        with self._lock:
            refs, self._mark_refs = self._mark_refs, []
        return refs

    def _background(self) -> None:
        while not self._stopping:
            if self._wake.wait(0.2):
                time.sleep(_ACK_GATHER_S)  # let more acks join this batch
            self._wake.clear()
            try:
                self._send_acks()
                if self._replay_wanted or self._retry_due():
                    self._replay_wanted = False
                    self._replay_unpublished()
                self._metrics.record("queue_depth", "set", self._core.pending)
            except Exception:
                logger.exception("mqtt-publisher background step failed")

    def _send_acks(self) -> None:
        with self._lock:
            ids, self._acked = self._acked, []
            latencies, self._ack_latency_ms = self._ack_latency_ms, []
        for latency_ms in latencies:
            self._metrics.record("latency", "observe", latency_ms)
        if not ids:
            return
        self._metrics.record("acked", "inc", len(ids), qos=self._qos)
        store = self._store()
        if store is None:  # publisher alone (tests) or store restarting: keep them for later
            self._keep_acks(ids)
            return
        ref = store.mark_published.remote(ids)
        with self._lock:
            self._mark_refs.append(ref)
            if len(self._mark_refs) > 256:
                _ready, rest = ray.wait(
                    self._mark_refs, num_returns=len(self._mark_refs), timeout=0
                )
                self._mark_refs = rest

    def _keep_acks(self, ids: list[str]) -> None:
        """Put acked ids back for the next pass, keeping at most _MAX_ACKS_WAITING (the oldest
        are let go: they stay unpublished in the store and a replay may send them again)."""
        with self._lock:
            self._acked[:0] = ids
            excess = len(self._acked) - _MAX_ACKS_WAITING
            if excess > 0:
                del self._acked[:excess]
                self._retry_counts["acks_let_go"] += excess
        if excess > 0:
            logger.warning("store away: %d acks let go (the events may be sent twice)", excess)

    def _replay_unpublished(self) -> None:
        window = self._config.mqtt.replay_window_s
        if window <= 0:
            return  # the seed's behaviour: events from an outage are dropped
        store = self._store()
        if store is None:
            return
        events: list[Event] = ray.get(store.unpublished_events.remote(float(window)), timeout=120)
        with self._lock:
            self._retry_counts["replay_passes"] += 1
        if events:
            sent = self._republish(events, True)
            logger.info("replayed %d of %d unpublished events", sent, len(events))

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
            self._metrics.record("published", "inc", sent, qos=self._qos)
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
