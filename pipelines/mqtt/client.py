"""The MQTT publisher core: what liveobject publishes (events, retained states, discovery).

The broker link itself (paho client, connect/backoff, MQTT 5 → 3.1.1 fallback, ack tracking,
the bound on pending events) is `pipelines.mqtt.transport`; this module decides what is sent
and what an ack means. `publish_event` only hands a message to paho's queue and returns, so it
never blocks the caller. Hooks from the transport run on paho's thread: they never raise and
never wait on anything slow.

Lock order: this class never holds `self._lock` while calling into the transport (which calls
into paho) or into a callback of its owner.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pipelines.mqtt.inbound import InboundHandler, InboundHooks, RingCallback
from pipelines.mqtt.topics import (
    DISCOVERY_QOS,
    STATE_QOS,
    Topics,
    activity_payload,
    camera_registry_payload,
    camera_status_payload,
    clear_discovery_messages,
    last_event_from_event_payload,
    to_json,
)
from pipelines.mqtt.transport import InFlight, MqttTransport, TransportHooks

if TYPE_CHECKING:
    from pipelines.config import MQTTConfig
    from pipelines.events import Event

logger = logging.getLogger(__name__)

Outcome = Literal["sent", "unpublished", "dropped", "disabled", "failed"]
AckCallback = Callable[[list[str]], None]
# Status counters, in the order `status()` lists them; `connects` is the transport's.
_COUNTERS = (
    "published",
    "acked",
    "failed",
    "dropped",
    "unpublished",
    "replayed",
    "connects",
    "discovery_sent",
    "discovery_cleared",
    "rings_received",
    "rings_ignored",
    "births_coalesced",
    "registry_ignored",
    "rings_rate_limited",
)


class MqttPublisherCore:
    """Publishes events and retained state to one broker; reports acked event ids."""

    def __init__(
        self,
        mqtt_config: MQTTConfig,
        topics: Topics,
        on_acked: AckCallback | None = None,
        *,
        on_connected: Callable[[], None] | None = None,
        on_ring: RingCallback | None = None,
        on_rejected: AckCallback | None = None,
        is_doorbell: Callable[[str], bool] | None = None,
    ) -> None:
        self._config = mqtt_config
        self._on_rejected = on_rejected  # event ids the broker refused after sending
        self._topics = topics
        self._on_acked = on_acked
        self._on_connected = on_connected
        self._inbound = InboundHandler(
            topics,
            InboundHooks(
                publish_retained=lambda topic, payload: self._send(
                    topic, payload, DISCOVERY_QOS, retain=True
                ),
                current_cameras=self._discovery_ids,
                republish_state=self._republish_state,
                count=self._count,
                on_ring=on_ring,
                is_doorbell=is_doorbell or (lambda _camera_id: True),
            ),
            discovery=mqtt_config.discovery.enabled,
            ring_rate_per_min=mqtt_config.ring_rate_per_min,
        )
        self._transport = MqttTransport(
            mqtt_config,
            topics.status,
            TransportHooks(
                subscriptions=self._inbound.subscriptions,
                on_connected=self._on_transport_connected,
                on_disconnected=self._on_transport_disconnected,
                on_settled=self._settle,
                on_message=self._inbound.handle,
            ),
        )
        self._lock = threading.Lock()
        self._state_inflight: set[str] = set()
        self._state_dirty: set[str] = set()
        self._discovery: dict[str, list[tuple[str, str]]] = {}
        self._retained: dict[str, str | Callable[[], str]] = {}
        self._last_event_ts: dict[str, str] = {}
        self._latencies: list[float] = []
        self._counts = dict.fromkeys(_COUNTERS, 0)

    # ------------------------------------------------------------------ lifecycle
    @property
    def enabled(self) -> bool:
        """Whether MQTT is enabled in the config."""
        return bool(self._config.enabled)

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted our connection and it is still up."""
        return self._transport.connected

    def start(self) -> None:
        """Start connecting in the background (no-op when disabled or already started)."""
        if not self.enabled or self._transport.started:
            return
        self._update_registry()  # even with no camera: then every old camera is cleared
        self._transport.start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block up to timeout_s until connected (for tests and startup only)."""
        return self._transport.wait_connected(timeout_s)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Publish `offline` (retained), wait briefly for it, disconnect and stop the thread."""
        self._inbound.stop()
        self._transport.stop(timeout_s)

    # ------------------------------------------------------------------ events
    def publish_event(
        self,
        event: Event,
        payload_json: str,
        *,
        last_event_json: str | Callable[[], str] | None = None,
        replay: bool = False,
        newest: dict[str, tuple[Event, str]] | None = None,
    ) -> Outcome:
        """Hand one event to paho without waiting; the outcome says whether it was sent.

        The camera's retained `last_event` follows each event handed to the transport; with
        `newest` (a batch), the newest such event per camera is kept there instead, and the
        caller updates `last_event` once per camera (`update_last_event`)."""
        refused = self._refusal()
        if refused is not None:
            return refused
        try:
            topic = self._topics.event(event.camera_id)
        except ValueError as exc:  # never publish to a topic built from a hostile id
            self._count("failed", 1)
            self._transport.note_error("event %s not published: %s", event.event_id, exc)
            return "failed"
        outcome = self._send(
            topic,
            payload_json,
            self._config.qos,
            retain=False,
            event_id=event.event_id,
            expiry=self._config.message_expiry_s,
        )
        if outcome == "sent" and replay:
            self._count("replayed", 1)
        if newest is None:
            self.update_last_event(event, payload_json, last_event_json)
        else:
            kept = newest.get(event.camera_id)
            if kept is None or kept[0].timestamp <= event.timestamp:
                newest[event.camera_id] = (event, payload_json)
        return outcome

    def update_last_event(
        self, event: Event, payload_json: str, last_json: str | Callable[[], str] | None = None
    ) -> None:
        """The camera's retained `last_event` from this event, unless a newer one was sent."""
        try:
            self._update_last_event(event, payload_json, last_json)
        except Exception:
            logger.exception("MQTT last_event update failed for event %s", event.event_id)

    def _refusal(self) -> Outcome | None:
        """Why no event can be handed to paho now (counted), or None when one can."""
        if not self.enabled:
            return "disabled"
        if not self._transport.started or not self._transport.connected:
            self._count("unpublished", 1)
            return "unpublished"
        if not self._transport.queue_full():
            return None
        with self._lock:
            self._counts["dropped"] += 1
            dropped = self._counts["dropped"]
        if dropped == 1 or dropped % 1000 == 0:
            logger.warning(
                "MQTT pending queue full (%d); %d events left unpublished so far",
                self._config.queue_size,
                dropped,
            )
        return "dropped"

    def _update_last_event(
        self, event: Event, payload_json: str, last_json: str | Callable[[], str] | None
    ) -> None:
        if last_json is None:

            def last_json() -> str:  # built only if it is actually sent (updates coalesce)
                return to_json(last_event_from_event_payload(json.loads(payload_json)))

        stamp = event.timestamp.isoformat()
        topic = self._topics.last_event(event.camera_id)
        with self._lock:  # checked and stored at once: feed and replay threads interleave
            if stamp < self._last_event_ts.get(event.camera_id, ""):
                return  # an older (replayed) event must not replace the newest one
            self._last_event_ts[event.camera_id] = stamp
            self._retained[topic] = last_json
        self._push_retained(topic)

    # ------------------------------------------------------------------ retained state
    def set_activity(self, camera_id: str, on: bool) -> None:
        """Retained `ON`/`OFF` activity state of a camera."""
        self._set_retained(self._topics.activity(camera_id), activity_payload(on))

    def set_camera_status(
        self,
        camera_id: str,
        camera_name: str,
        status: Any,
        source_type: str,
        reason: str | None = None,
    ) -> None:
        """Retained status JSON of a camera (online/offline/unavailable/unplaceable)."""
        payload = camera_status_payload(camera_id, camera_name, status, source_type, reason=reason)
        self._set_retained(self._topics.camera_status(camera_id), to_json(payload))

    def set_discovery(self, camera_id: str, messages: list[tuple[str, str]]) -> None:
        """Remember a camera's discovery configs (re-sent on connect) and send them now."""
        with self._lock:
            self._discovery[camera_id] = list(messages)
        if self._transport.connected:
            self._send_discovery([camera_id])
        self._update_registry()

    def remove_discovery(self, camera_id: str) -> None:
        """Forget a camera's discovery configs and clear them on the broker (removed camera)."""
        with self._lock:
            known = self._discovery.pop(camera_id, None) is not None
        if known and self._config.discovery.enabled:
            messages = clear_discovery_messages(camera_id, self._topics)
            self._count("discovery_cleared", len(messages))
            for topic, empty in messages:
                self._send(topic, empty, DISCOVERY_QOS, retain=True)
        self._update_registry()

    def _discovery_ids(self) -> set[str]:
        with self._lock:
            return set(self._discovery)

    def _count(self, name: str, n: int) -> None:
        with self._lock:
            self._counts[name] += n

    def _update_registry(self) -> None:
        # `{prefix}/cameras` (retained) lists the cameras that have discovery configs, so that
        # the next run can clear the configs of cameras removed from the config meanwhile.
        if not self._config.discovery.enabled:
            return
        with self._lock:
            ids = list(self._discovery)
        payload = camera_registry_payload(ids, self._topics.discovery_prefix)
        self._set_retained(self._topics.cameras, payload)

    def _set_retained(self, topic: str, payload: str | Callable[[], str]) -> None:
        # Latest value wins: while an update of this topic is unacknowledged, newer values
        # only mark it dirty and the newest is sent when the ack comes (bounded traffic).
        with self._lock:
            self._retained[topic] = payload
        self._push_retained(topic)

    def _push_retained(self, topic: str) -> None:
        """Send the topic's current retained value, or mark it dirty while one is in flight."""
        with self._lock:
            if not self._transport.connected:
                return
            if topic in self._state_inflight:
                self._state_dirty.add(topic)
                return
            self._state_inflight.add(topic)
        self._send_state(topic)

    def _send_state(self, topic: str) -> None:
        """Send a retained topic's current value; the caller marked it in flight."""
        with self._lock:
            value = self._retained.get(topic)
        try:
            text = self._resolve(topic)
        except Exception:  # a deferred payload that fails: the topic is not left in flight,
            with self._lock:  # nor built again on every connect
                self._state_inflight.discard(topic)
                if self._retained.get(topic) is value:
                    del self._retained[topic]
            logger.exception("MQTT retained %s not sent: its payload could not be built", topic)
            return
        self._send(topic, text, STATE_QOS, retain=True, state_topic=topic)

    def _resolve(self, topic: str) -> str:
        """The retained payload of a topic as text (building a deferred one once)."""
        with self._lock:
            value = self._retained[topic]
        if callable(value):
            text = value()
            with self._lock:
                if self._retained.get(topic) is value:  # unless a newer value came meanwhile
                    self._retained[topic] = text
            return text
        return value

    def _republish_state(self) -> None:
        with self._lock:
            topics = list(self._retained)
            cameras = list(self._discovery)
        self._send_discovery(cameras)
        for topic in topics:  # each one's value when it is sent: a newer update made while
            self._push_retained(topic)  # this runs is never replaced by an older copy

    def _send_discovery(self, camera_ids: list[str]) -> None:
        if not self._config.discovery.enabled:
            return
        with self._lock:
            messages = [m for cid in camera_ids for m in self._discovery.get(cid, [])]
            self._counts["discovery_sent"] += len(messages)
        for topic, payload in messages:
            self._send(topic, payload, DISCOVERY_QOS, retain=True)

    # ------------------------------------------------------------------ sending and acks
    def _send(
        self,
        topic: str,
        payload: str,
        qos: int,
        *,
        retain: bool,
        event_id: str | None = None,
        expiry: int | None = None,
        state_topic: str | None = None,
    ) -> Outcome:
        outcome = self._transport.publish(
            topic,
            payload,
            qos,
            retain=retain,
            expiry=expiry,
            event_id=event_id,
            state_topic=state_topic,
        )
        with self._lock:
            if outcome != "sent" and state_topic is not None:
                self._state_inflight.discard(state_topic)
            if event_id is not None:
                self._counts["published" if outcome == "sent" else outcome] += 1
        return outcome

    def _settle(self, entry: InFlight, failed: bool) -> None:
        """Account for one acknowledged (or rejected) message; runs on paho's thread."""
        resend: str | None = None
        with self._lock:
            if entry.event_id is not None:
                if failed:
                    self._counts["failed"] += 1
                else:
                    self._counts["acked"] += 1
                    self._latencies.append(time.monotonic() - entry.sent_at)
                    if len(self._latencies) > 100_000:
                        del self._latencies[:50_000]
            if entry.state_topic is not None:
                self._state_inflight.discard(entry.state_topic)
                if entry.state_topic in self._state_dirty and self._transport.connected:
                    self._state_dirty.discard(entry.state_topic)
                    self._state_inflight.add(entry.state_topic)
                    resend = entry.state_topic
        if not failed and entry.event_id is not None:
            self._notify_acked([entry.event_id])
        elif failed and entry.event_id is not None and self._on_rejected is not None:
            try:  # still unpublished in the store: the owner retries it
                self._on_rejected([entry.event_id])
            except Exception:
                logger.exception("MQTT on_rejected callback raised; continuing")
        if resend is not None:
            self._send_state(resend)

    def _notify_acked(self, event_ids: list[str]) -> None:
        if self._on_acked is None:
            return
        try:
            self._on_acked(event_ids)
        except Exception:
            logger.exception("MQTT on_acked callback raised; continuing")

    def _on_transport_connected(self) -> None:
        self._republish_state()
        if self._on_connected is not None:
            self._on_connected()

    def _on_transport_disconnected(self) -> None:
        # Everything retained is re-sent on the next connect. A state still unacknowledged
        # stays in flight: paho sends it again after the connect hook, so the newest value
        # goes when that copy's ack comes (sent at once, it would arrive first and be replaced).
        with self._lock:
            self._state_dirty |= self._state_inflight

    # ------------------------------------------------------------------ status
    @property
    def broker(self) -> str:
        """`host:port` of the broker (never credentials)."""
        return self._transport.broker

    @property
    def pending(self) -> int:
        """Event messages handed to paho and not yet acknowledged."""
        return self._transport.pending

    def ack_latencies(self, clear: bool = False) -> list[float]:
        """Seconds from publish_event to ack (socket write for QoS 0), oldest first."""
        with self._lock:
            out = list(self._latencies)
            if clear:
                self._latencies.clear()
        return out

    def status(self) -> dict[str, Any]:
        """Connection state and counters (no credentials)."""
        with self._lock:
            counts = dict(self._counts)
            recent = sorted(self._latencies[-1000:])
        counts["connects"] = self._transport.connects
        p50 = p99 = None
        if recent:
            p50 = round(recent[(len(recent) - 1) // 2] * 1000, 3)
            p99 = round(recent[round(0.99 * (len(recent) - 1))] * 1000, 3)
        return {
            "enabled": self.enabled,
            "connected": self._transport.connected,
            "broker": self.broker,
            "protocol": self._transport.protocol,
            "qos": self._config.qos,
            "pending": self._transport.pending,
            "queue_size": self._config.queue_size,
            "inflight_window": self._transport.window,  # max_inflight, capped by the broker
            "last_error": self._transport.last_error,
            "reason": self._transport.reason,  # why not connected now, in words
            "ack_p50_ms": p50,  # hand-over → ack over the last 1000 acked events
            "ack_p99_ms": p99,
            **counts,
        }
