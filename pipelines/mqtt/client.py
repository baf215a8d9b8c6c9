"""The MQTT publisher core: a plain-Python wrapper of a paho-mqtt 2.x client.

paho runs its network loop in its own thread (`loop_start`); `publish_event` only hands a
message to paho's queue and returns, so it never blocks the caller. Callbacks run on paho's
thread: they never raise (paho would stop its loop) and never wait on anything slow.

Lock order: paho holds its own message mutex while it calls `on_publish`, so this class never
holds `self._lock` while calling into paho; an ack that arrives before its message id was
registered is parked in `self._early` and settled at registration.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pipelines.mqtt.inbound import InboundHandler, InboundHooks, RingCallback
from pipelines.mqtt.topics import (
    DISCOVERY_QOS,
    PAYLOAD_OFFLINE,
    PAYLOAD_ONLINE,
    STATE_QOS,
    Topics,
    activity_payload,
    camera_registry_payload,
    camera_status_payload,
    last_event_from_event_payload,
    to_json,
)
from pipelines.redact import redact

if TYPE_CHECKING:
    from pipelines.config import MQTTConfig
    from pipelines.events import Event

logger = logging.getLogger(__name__)

Outcome = Literal["sent", "unpublished", "dropped", "disabled", "failed"]
AckCallback = Callable[[list[str]], None]
# CONNACK codes that mean "this broker does not speak MQTT 5": v5 0x84, v3.1.1 1.
_UNSUPPORTED_PROTOCOL = {0x84, 1}
CONNACK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class _Pending:
    event_id: str | None  # None for state/discovery messages
    sent_at: float
    state_topic: str | None = None  # retained state topic (coalesced updates)


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
    ) -> None:
        self._config = mqtt_config
        self._topics = topics
        self._on_acked = on_acked
        self._on_connected = on_connected
        self._inbound = InboundHandler(
            topics,
            InboundHooks(
                publish_retained=lambda topic, payload: self._publish(
                    topic, payload, DISCOVERY_QOS, retain=True
                ),
                current_cameras=self._discovery_ids,
                republish_state=self._republish_state,
                count=self._count,
                on_ring=on_ring,
            ),
            discovery=mqtt_config.discovery.enabled,
        )
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._protocol: str = mqtt_config.protocol
        self._client_id = mqtt_config.client_id or f"liveobject-{secrets.token_hex(4)}"
        self._connected = False
        self._stopping = False
        self._ever_connected = False
        self._socket_opened_at: float | None = None
        self._pending: dict[int, _Pending] = {}
        self._early: dict[int, bool] = {}  # mid -> failed, for acks that beat registration
        self._state_inflight: set[str] = set()
        self._state_dirty: set[str] = set()
        self._pending_events = 0  # entries of self._pending that carry an event id
        self._discovery: dict[str, list[tuple[str, str]]] = {}
        self._retained: dict[str, str | Callable[[], str]] = {}
        self._last_event_ts: dict[str, str] = {}
        self._latencies: list[float] = []
        self._last_error: str | None = None
        password = mqtt_config.password
        self._secrets = [password.get_secret_value()] if password is not None else []
        self._counts = dict.fromkeys(
            (
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
            ),
            0,
        )

    # ------------------------------------------------------------------ lifecycle
    @property
    def enabled(self) -> bool:
        """Whether MQTT is enabled in the config."""
        return bool(self._config.enabled)

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted our connection and it is still up."""
        return self._connected

    def start(self) -> None:
        """Start connecting in the background (no-op when disabled or already started)."""
        if not self.enabled or self._client is not None:
            return
        self._stopping = False
        self._update_registry()  # even with no camera: then every old camera is cleared
        self._client = self._make_client(self._protocol)
        self._client.connect_async(
            self._config.host, self._config.port, keepalive=self._config.keepalive_s
        )
        self._client.loop_start()
        if self._protocol == "5":
            threading.Thread(
                target=self._watch_first_connack, name="mqtt-v5-watch", daemon=True
            ).start()
        logger.info(
            "MQTT connecting to %s (MQTT %s, client id %s)",
            self.broker,
            self._protocol,
            self._client_id,
        )

    def wait_connected(self, timeout_s: float) -> bool:
        """Block up to timeout_s until connected (for tests and startup only)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._connected:
                return True
            time.sleep(0.01)
        return self._connected

    def stop(self, timeout_s: float = 2.0) -> None:
        """Publish `offline` (retained), wait briefly for it, disconnect and stop the thread."""
        client = self._client
        if client is None:
            return
        self._stopping = True
        try:
            if self._connected:
                info = client.publish(self._topics.status, PAYLOAD_OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=timeout_s)
        except Exception as exc:  # a dead socket must not prevent the stop
            self._note_error("publishing offline failed: %s", exc)
        try:
            client.disconnect()
        finally:
            client.loop_stop()
            self._connected = False
            self._client = None

    def _make_client(self, protocol: str) -> mqtt.Client:
        cfg = self._config
        v5 = protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        client.suppress_exceptions = True
        if cfg.username:
            client.username_pw_set(cfg.username, self._secrets[0] if self._secrets else None)
        if cfg.tls.enabled:
            client.tls_set(
                ca_certs=str(cfg.tls.ca_certs) if cfg.tls.ca_certs else None,
                certfile=str(cfg.tls.certfile) if cfg.tls.certfile else None,
                keyfile=str(cfg.tls.keyfile) if cfg.tls.keyfile else None,
            )
            client.tls_insecure_set(bool(cfg.tls.insecure))
        client.will_set(self._topics.status, PAYLOAD_OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        # mosquitto's default Receive Maximum; a client that exceeds it is disconnected or
        # gets "quota exceeded" (paho cannot adopt the CONNACK value on a live connection).
        client.max_inflight_messages_set(20)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_socket_open = self._on_socket_open
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # ------------------------------------------------------------------ publishing
    def publish_event(
        self,
        event: Event,
        payload_json: str,
        *,
        last_event_json: str | Callable[[], str] | None = None,
        replay: bool = False,
    ) -> Outcome:
        """Hand one event to paho without waiting; the outcome says whether it was sent."""
        if not self.enabled:
            return "disabled"
        client = self._client
        if client is None or not self._connected:
            with self._lock:
                self._counts["unpublished"] += 1
            return "unpublished"
        with self._lock:
            if self._pending_events >= self._config.queue_size:
                self._counts["dropped"] += 1
                dropped = self._counts["dropped"]
            else:
                dropped = 0
        if dropped:
            if dropped == 1 or dropped % 1000 == 0:
                logger.warning(
                    "MQTT pending queue full (%d); %d events left unpublished so far",
                    self._config.queue_size,
                    dropped,
                )
            return "dropped"
        try:
            topic = self._topics.event(event.camera_id)
        except ValueError as exc:  # never publish to a topic built from a hostile id
            with self._lock:
                self._counts["failed"] += 1
            self._note_error("event %s not published: %s", event.event_id, exc)
            return "failed"
        outcome = self._publish(
            topic,
            payload_json,
            self._config.qos,
            retain=False,
            event_id=event.event_id,
            expiry=self._config.message_expiry_s,
        )
        if outcome == "sent" and replay:
            with self._lock:
                self._counts["replayed"] += 1
        try:
            self._update_last_event(event, payload_json, last_event_json)
        except Exception:
            logger.exception("MQTT last_event update failed for event %s", event.event_id)
        return outcome

    def _update_last_event(
        self, event: Event, payload_json: str, last_json: str | Callable[[], str] | None
    ) -> None:
        if last_json is None:

            def last_json() -> str:  # built only if it is actually sent (updates coalesce)
                return to_json(last_event_from_event_payload(json.loads(payload_json)))

        stamp = event.timestamp.isoformat()
        with self._lock:
            if stamp < self._last_event_ts.get(event.camera_id, ""):
                return  # an older (replayed) event must not replace the newest one
            self._last_event_ts[event.camera_id] = stamp
        self._set_retained(self._topics.last_event(event.camera_id), last_json)

    def set_activity(self, camera_id: str, on: bool) -> None:
        """Retained `ON`/`OFF` activity state of a camera."""
        self._set_retained(self._topics.activity(camera_id), activity_payload(on))

    def set_camera_status(
        self, camera_id: str, camera_name: str, status: Any, source_type: str
    ) -> None:
        """Retained status JSON of a camera (online/offline/unavailable)."""
        payload = camera_status_payload(camera_id, camera_name, status, source_type)
        self._set_retained(self._topics.camera_status(camera_id), to_json(payload))

    def set_discovery(self, camera_id: str, messages: list[tuple[str, str]]) -> None:
        """Remember a camera's discovery configs (re-sent on connect) and send them now."""
        with self._lock:
            self._discovery[camera_id] = list(messages)
        if self._connected:
            self._send_discovery([camera_id])
        self._update_registry()

    def clear_discovery(self, camera_id: str, messages: list[tuple[str, str]]) -> None:
        """Forget a camera and publish its empty discovery configs (removes its entities)."""
        with self._lock:
            self._discovery.pop(camera_id, None)
            self._counts["discovery_cleared"] += len(messages)
        for topic, payload in messages:
            self._publish(topic, payload, DISCOVERY_QOS, retain=True)
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
            if not self._connected:
                return
            if topic in self._state_inflight:
                self._state_dirty.add(topic)
                return
            self._state_inflight.add(topic)
        self._publish(topic, self._resolve(topic), STATE_QOS, retain=True, state_topic=topic)

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

    def _publish(
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
        client = self._client
        outcome: Outcome | None = None
        info = None
        if client is None:
            outcome = "unpublished"
        else:
            properties = None
            if expiry and self._protocol == "5":
                properties = Properties(PacketTypes.PUBLISH)
                properties.MessageExpiryInterval = int(expiry)
            try:
                info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
            except Exception as exc:
                self._note_error("publish to %s failed: %s", topic, exc)
                outcome = "failed"
            else:
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    self._note_error("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
                    outcome = "failed"
                elif info.rc == mqtt.MQTT_ERR_NO_CONN and qos == 0:
                    # The link dropped after our check. paho keeps QoS>0 messages and resends
                    # them on reconnect, so those stay pending; a QoS 0 one is gone.
                    outcome = "unpublished"
        if outcome is not None or info is None:
            with self._lock:
                if state_topic is not None:
                    self._state_inflight.discard(state_topic)
                if event_id is not None:
                    self._counts["failed" if outcome == "failed" else "unpublished"] += 1
            return outcome or "unpublished"
        entry = _Pending(event_id, time.monotonic(), state_topic)
        with self._lock:
            if event_id is not None:
                self._counts["published"] += 1
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = entry
                if event_id is not None:
                    self._pending_events += 1
        if early is not None:  # paho's thread acked before we registered the id
            self._complete(info.mid, entry, early)
        return "sent"

    def _complete(self, mid: int, entry: _Pending, failed: bool) -> None:
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
                if entry.state_topic in self._state_dirty and self._connected:
                    self._state_dirty.discard(entry.state_topic)
                    self._state_inflight.add(entry.state_topic)
                    resend = entry.state_topic
        if failed:
            self._note_error("broker rejected message %d", mid)
        elif entry.event_id is not None:
            self._notify_acked([entry.event_id])
        if resend is not None:
            self._publish(resend, self._resolve(resend), STATE_QOS, retain=True, state_topic=resend)

    def _notify_acked(self, event_ids: list[str]) -> None:
        if self._on_acked is None:
            return
        try:
            self._on_acked(event_ids)
        except Exception:
            logger.exception("MQTT on_acked callback raised; continuing")

    def _republish_state(self) -> None:
        with self._lock:
            retained = list(self._retained.items())
            cameras = list(self._discovery)
        self._send_discovery(cameras)
        for topic, payload in retained:
            self._set_retained(topic, payload)

    def _send_discovery(self, camera_ids: list[str]) -> None:
        if not self._config.discovery.enabled:
            return
        with self._lock:
            messages = [m for cid in camera_ids for m in self._discovery.get(cid, [])]
            self._counts["discovery_sent"] += len(messages)
        for topic, payload in messages:
            self._publish(topic, payload, DISCOVERY_QOS, retain=True)

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any
    ) -> None:
        try:
            if reason_code.is_failure:
                self._note_error("broker refused the connection: %s", reason_code)
                if self._protocol == "5" and reason_code.value in _UNSUPPORTED_PROTOCOL:
                    self._fall_back_to_311(client)
                return
            self._connected = True
            self._ever_connected = True
            with self._lock:
                self._counts["connects"] += 1
                connects = self._counts["connects"]
            logger.info("MQTT connected to %s (MQTT %s)", self.broker, self._protocol)
            self._publish(self._topics.status, PAYLOAD_ONLINE, 1, retain=True)
            subscriptions = self._inbound.subscriptions()  # before the registry is re-sent
            if subscriptions:
                client.subscribe(subscriptions)
            self._republish_state()
            if self._on_connected is not None:
                self._on_connected()
            logger.debug("MQTT connect #%d done", connects)
        except Exception:
            logger.exception("MQTT on_connect handling failed")

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        try:
            self._note_error("cannot connect to %s", self.broker)
        except Exception:  # pragma: no cover - logging must not kill paho's thread
            logger.debug("on_connect_fail handling failed", exc_info=True)

    def _on_disconnect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any
    ) -> None:
        try:
            was_connected = self._connected
            self._connected = False
            with self._lock:  # everything retained is re-sent on the next connect
                self._state_inflight.clear()
                self._state_dirty.clear()
            if self._stopping:
                return
            self._note_error("disconnected from %s: %s", self.broker, reason_code)
            # A broker that only speaks 3.1.1 may drop a v5 CONNECT without any CONNACK.
            if not was_connected and not self._ever_connected and self._protocol == "5":
                self._fall_back_to_311(client)
        except Exception:
            logger.exception("MQTT on_disconnect handling failed")

    def _on_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reason_code: Any, _props: Any
    ) -> None:
        try:
            failed = bool(getattr(reason_code, "is_failure", False))
            with self._lock:
                entry = self._pending.pop(mid, None)
                if entry is None:
                    self._early[mid] = failed
                    return
                if entry.event_id is not None:
                    self._pending_events -= 1
            if failed:
                logger.debug("message %d rejected: %s", mid, reason_code)
            self._complete(mid, entry, failed)
        except Exception:
            logger.exception("MQTT on_publish handling failed")

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: Any) -> None:
        try:
            self._inbound.handle(message.topic, bytes(message.payload), bool(message.retain))
        except Exception:
            logger.exception("MQTT on_message handling failed")

    def _on_socket_open(self, _client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
        self._socket_opened_at = time.monotonic()

    def _watch_first_connack(self) -> None:
        # A 3.1.1-only broker (e.g. amqtt) answers a v5 CONNECT with a 3.1.1 CONNACK that
        # paho's v5 parser cannot read, so no callback ever fires: treat "TCP open, no
        # CONNACK within CONNACK_TIMEOUT_S" as a refusal of MQTT 5.
        while not self._stopping and not self._ever_connected and self._protocol == "5":
            opened = self._socket_opened_at
            if opened is not None and time.monotonic() - opened > CONNACK_TIMEOUT_S:
                client = self._client
                if client is not None and not self._connected:
                    self._note_error("no CONNACK to an MQTT 5 CONNECT from %s", self.broker)
                    self._fall_back_to_311(client)
                return
            time.sleep(0.2)

    def _fall_back_to_311(self, old: mqtt.Client) -> None:
        if self._protocol != "5":
            return  # already falling back
        logger.warning("broker %s does not accept MQTT 5; falling back to 3.1.1", self.broker)
        self._protocol = "3.1.1"

        def swap() -> None:
            try:
                old.on_connect = old.on_disconnect = old.on_publish = None  # type: ignore[assignment]
                old.loop_stop()
                old.disconnect()
            except Exception:
                logger.debug("closing the MQTT 5 client failed", exc_info=True)
            if self._stopping:
                return
            client = self._make_client("3.1.1")
            self._client = client
            client.connect_async(
                self._config.host, self._config.port, keepalive=self._config.keepalive_s
            )
            client.loop_start()

        # loop_stop cannot join paho's thread from inside it.
        threading.Thread(target=swap, name="mqtt-fallback", daemon=True).start()

    # ------------------------------------------------------------------ status
    def _note_error(self, fmt: str, *args: object) -> None:
        text = redact(fmt % args, self._secrets)
        self._last_error = text
        logger.warning("MQTT: %s", text)

    @property
    def broker(self) -> str:
        """`host:port` of the broker (never credentials)."""
        return f"{self._config.host}:{self._config.port}"

    @property
    def pending(self) -> int:
        """Event messages handed to paho and not yet acknowledged."""
        with self._lock:
            return self._pending_events

    def pending_event_ids(self) -> set[str]:
        """Ids of events handed to paho and not yet acknowledged."""
        with self._lock:
            return {p.event_id for p in self._pending.values() if p.event_id is not None}

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
            pending = self._pending_events
            recent = sorted(self._latencies[-1000:])
        p50 = p99 = None
        if recent:
            p50 = round(recent[(len(recent) - 1) // 2] * 1000, 3)
            p99 = round(recent[round(0.99 * (len(recent) - 1))] * 1000, 3)
        return {
            "enabled": self.enabled,
            "connected": self._connected,
            "broker": self.broker,
            "protocol": self._protocol,
            "qos": self._config.qos,
            "pending": pending,
            "queue_size": self._config.queue_size,
            "last_error": self._last_error,
            "ack_p50_ms": p50,  # hand-over → ack over the last 1000 acked events
            "ack_p99_ms": p99,
            **counts,
        }
