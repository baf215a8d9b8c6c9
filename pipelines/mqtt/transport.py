"""The MQTT link: a paho-mqtt 2.x client, its connection, acks and the bound on pending events.

paho runs its network loop in its own thread (`loop_start`); `publish` only hands a message to
paho's queue and returns, so it never blocks the caller. Callbacks run on paho's thread: they
never raise (paho would stop its loop) and never wait on anything slow.

Lock order: paho holds its own message mutex while it calls `on_publish`, so this class never
holds `self._lock` while calling into paho or into a hook; an ack that arrives before its
message id was registered is parked in `self._early` and settled at registration.

What is published, and what an ack means for it, is `pipelines.mqtt.client`'s business: this
module only carries an `InFlight` record from `publish` to the `on_settled` hook.
"""

from __future__ import annotations

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

from pipelines.mqtt.diagnose import connect_failure, refusal
from pipelines.mqtt.topics import PAYLOAD_OFFLINE, PAYLOAD_ONLINE
from pipelines.redact import redact

if TYPE_CHECKING:
    from pipelines.config import MQTTConfig

logger = logging.getLogger(__name__)

SendOutcome = Literal["sent", "unpublished", "failed"]
PAHO_STATE_ROOM = 8192  # paho's queue beyond mqtt.queue_size: discovery, states, registry clears
# CONNACK codes that mean "this broker does not speak MQTT 5": v5 0x84, v3.1.1 1.
_UNSUPPORTED_PROTOCOL = {0x84, 1}
CONNACK_TIMEOUT_S = 3.0
RECEIVE_MAXIMUM_UNTIL_CONNACK = 20  # mosquitto's default Receive Maximum
MQTT5_DEFAULT_RECEIVE_MAXIMUM = 65535  # a CONNACK without the property (MQTT 5, 3.2.2.3.3)


@dataclass(frozen=True)
class InFlight:
    """One message handed to paho and not yet acknowledged."""

    event_id: str | None  # None for state/discovery messages; events count toward the bound
    state_topic: str | None  # retained state topic (coalesced updates)
    sent_at: float
    qos: int = 1


@dataclass(frozen=True)
class TransportHooks:
    """What the transport tells its owner; every hook runs on paho's thread and returns fast."""

    subscriptions: Callable[[], list[tuple[str, int]]]  # (filter, QoS) to subscribe on connect
    on_connected: Callable[[], None]  # after `online` is sent and subscriptions are made
    on_disconnected: Callable[[], None]
    on_settled: Callable[[InFlight, bool], None]  # (message, failed) once its ack came
    on_message: Callable[[str, bytes, bool], None]  # (topic, payload, retained)


class MqttTransport:
    """One broker connection: connect with backoff, MQTT 5 → 3.1.1 fallback, ack tracking."""

    def __init__(self, mqtt_config: MQTTConfig, status_topic: str, hooks: TransportHooks) -> None:
        self._config = mqtt_config
        self._status_topic = status_topic
        self._hooks = hooks
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._protocol: str = mqtt_config.protocol
        self._client_id = mqtt_config.client_id or f"liveobject-{secrets.token_hex(4)}"
        self._connected = False
        self._stopping = False
        self._ever_connected = False
        self._socket_opened_at: float | None = None
        self._pending: dict[int, InFlight] = {}
        self._early: dict[int, bool] = {}  # mid -> failed, for acks that beat registration
        self._pending_events = 0  # entries of self._pending that carry an event id
        self.window = min(mqtt_config.max_inflight, RECEIVE_MAXIMUM_UNTIL_CONNACK)  # in-flight
        self._connects = 0
        self._last_error: str | None = None
        self._reason: str | None = None  # why not connected now (None while connected)
        self._diagnosing = threading.Lock()  # one connect-failure diagnosis at a time
        self._connack_seen = False  # a CONNACK came (a refusal too): no 3.1.1 fallback needed
        password = mqtt_config.password
        self._secrets = [password.get_secret_value()] if password is not None else []

    # ------------------------------------------------------------------ state
    @property
    def started(self) -> bool:
        """Whether a paho client exists (between `start` and `stop`)."""
        return self._client is not None

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted our connection and it is still up."""
        return self._connected

    @property
    def broker(self) -> str:
        """`host:port` of the broker (never credentials)."""
        return f"{self._config.host}:{self._config.port}"

    @property
    def protocol(self) -> str:
        """The MQTT version in use: `5`, or `3.1.1` after a fallback."""
        return self._protocol

    @property
    def connects(self) -> int:
        """Successful connects so far."""
        with self._lock:
            return self._connects

    @property
    def last_error(self) -> str | None:
        """The latest problem, redacted."""
        return self._last_error

    @property
    def reason(self) -> str | None:
        """Why the broker is not connected now, in words (None while connected)."""
        return None if self._connected else self._reason

    @property
    def pending(self) -> int:
        """Event messages handed to paho and not yet acknowledged."""
        with self._lock:
            return self._pending_events

    def queue_full(self) -> bool:
        """Whether `queue_size` event messages await their ack (the next is dropped)."""
        with self._lock:
            return self._pending_events >= self._config.queue_size

    def note_reason(self, text: str) -> None:
        """Keep why the broker is not connected; logged once per change, redacted."""
        text = redact(text, self._secrets)
        self._last_error = text
        if text != self._reason:
            self._reason = text
            logger.warning("MQTT not connected: %s", text)

    def note_error(self, fmt: str, *args: object) -> None:
        """Log a problem as a warning and keep it as `last_error` (secrets redacted)."""
        text = redact(fmt % args, self._secrets)
        self._last_error = text
        logger.warning("MQTT: %s", text)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start connecting in the background (no-op when already started)."""
        if self._client is not None:
            return
        self._stopping = False
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
                info = client.publish(self._status_topic, PAYLOAD_OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=timeout_s)
        except Exception as exc:  # a dead socket must not prevent the stop
            self.note_error("publishing offline failed: %s", exc)
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
        client.will_set(self._status_topic, PAYLOAD_OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        # Until the CONNACK says more (`_on_connect` adopts the broker's Receive Maximum):
        # at most mosquitto's default, so that the first messages never exceed a quota.
        client.max_inflight_messages_set(min(cfg.max_inflight, RECEIVE_MAXIMUM_UNTIL_CONNACK))
        # Bounded: the events pending (mqtt.queue_size, counted by the core) plus room for
        # discovery and retained states; beyond it paho refuses (`failed`: retried later).
        client.max_queued_messages_set(cfg.queue_size + PAHO_STATE_ROOM)
        client.on_connect = self._on_connect
        client.on_socket_open = self._on_socket_open
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # ------------------------------------------------------------------ publishing
    def publish(
        self,
        topic: str,
        payload: str,
        qos: int,
        *,
        retain: bool,
        expiry: int | None = None,
        event_id: str | None = None,
        state_topic: str | None = None,
    ) -> SendOutcome:
        """Hand one message to paho without waiting; once sent, its ack reaches `on_settled`."""
        info = self._hand_to_paho(topic, payload, qos, retain, expiry)
        if isinstance(info, str):
            return info
        entry = InFlight(event_id, state_topic, time.monotonic(), qos)
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = entry
                if event_id is not None:
                    self._pending_events += 1
        if early is not None:  # paho's thread acked before we registered the id
            self._settle(info.mid, entry, early)
        return "sent"

    def _hand_to_paho(
        self, topic: str, payload: str, qos: int, retain: bool, expiry: int | None
    ) -> mqtt.MQTTMessageInfo | Literal["unpublished", "failed"]:
        """paho's receipt of a message it will send, or why it will not."""
        client = self._client
        if client is None:
            return "unpublished"
        properties = None
        if expiry and self._protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = int(expiry)
        try:
            info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        except Exception as exc:
            self.note_error("publish to %s failed: %s", topic, exc)
            return "failed"
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.note_error("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
            return "failed"
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos == 0:
            # The link dropped after our check. paho keeps QoS>0 messages and resends
            # them on reconnect, so those stay pending; a QoS 0 one is gone.
            return "unpublished"
        return info

    def _forget_lost_qos0(self) -> int:
        """paho resends unacknowledged QoS 1/2 messages after a reconnect but drops the QoS 0
        ones it had queued: they will never be "published", so their entries are settled as
        failed (the events stay unpublished in the store and the retry sends them) instead of
        counting toward the pending bound for ever. How many were dropped."""
        lost = self._fail_pending(lambda entry: entry.qos == 0)
        if lost:
            logger.warning("%d QoS 0 messages were lost with the connection; retried later", lost)
        return lost

    def _fail_pending(self, lost: Callable[[InFlight], bool]) -> int:
        """Settle as failed the unacknowledged messages that will never be acknowledged: an
        event stays unpublished and is retried, a retained state is sent again (its newest
        value) on the next connect. How many."""
        with self._lock:
            gone = [(mid, entry) for mid, entry in self._pending.items() if lost(entry)]
            for mid, entry in gone:
                del self._pending[mid]
                if entry.event_id is not None:
                    self._pending_events -= 1
        for _mid, entry in gone:
            self._hooks.on_settled(entry, True)
        return len(gone)

    def _settle(self, mid: int, entry: InFlight, failed: bool) -> None:
        if failed:
            self.note_error("broker rejected message %d", mid)
        self._hooks.on_settled(entry, failed)

    def _subscribe(self, client: mqtt.Client) -> None:
        subscriptions = self._hooks.subscriptions()
        if subscriptions:
            client.subscribe(subscriptions)

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, props: Any
    ) -> None:
        try:
            if reason_code.is_failure:
                self._connack_seen = True  # the broker speaks this protocol: it answered
                self.note_reason(
                    refusal(reason_code, self.broker, with_password=bool(self._config.username))
                )
                if self._protocol == "5" and reason_code.value in _UNSUPPORTED_PROTOCOL:
                    self._fall_back_to_311(client)
                return
            self._forget_lost_qos0()
            self._adopt_window(client, props)
            self._connected = True
            self._ever_connected = True
            if self._reason is not None:
                logger.info("MQTT connected again (it was: %s)", self._reason)
                self._reason = None
            with self._lock:
                self._connects += 1
                connects = self._connects
            logger.info("MQTT connected to %s (MQTT %s)", self.broker, self._protocol)
            self.publish(self._status_topic, PAYLOAD_ONLINE, 1, retain=True)
            self._subscribe(client)  # before the owner re-sends retained state
            self._hooks.on_connected()
            logger.debug("MQTT connect #%d done", connects)
        except Exception:
            logger.exception("MQTT on_connect handling failed")

    def _adopt_window(self, client: mqtt.Client, props: Any) -> None:
        """The in-flight window of this connection: `mqtt.max_inflight`, at most the broker's
        Receive Maximum (MQTT 5; a client that exceeds it is disconnected).

        paho's setter refuses an open connection, and only this CONNACK tells the broker's
        limit, so the attribute behind it is set here, on paho's thread, before paho sends
        anything more: the next ack fills the new window from paho's queue. (paho's doubt is
        about switching between 0, unlimited, and a limit; both values here are ≥ 1.)"""
        receive_max = MQTT5_DEFAULT_RECEIVE_MAXIMUM
        if self._protocol == "5":
            receive_max = getattr(props, "ReceiveMaximum", None) or receive_max
        window = min(self._config.max_inflight, receive_max)
        if window != client.max_inflight_messages and hasattr(client, "_max_inflight_messages"):
            client._max_inflight_messages = window
        self.window = client.max_inflight_messages

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        # paho says only that it failed: retrace the connection off paho's thread to say why
        if self._diagnosing.acquire(blocking=False):
            threading.Thread(target=self._diagnose, name="mqtt-why", daemon=True).start()

    def _diagnose(self) -> None:
        try:
            cfg = self._config
            why = connect_failure(cfg.host, cfg.port, cfg.tls)
            if not self._connected and not self._stopping:
                self.note_reason(why or f"cannot connect to {self.broker}")
        except Exception:  # pragma: no cover - a diagnosis must not kill anything
            logger.debug("MQTT connect-failure diagnosis failed", exc_info=True)
        finally:
            self._diagnosing.release()

    def _on_disconnect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any
    ) -> None:
        try:
            was_connected = self._connected
            self._connected = False
            self._hooks.on_disconnected()
            if self._stopping:
                return
            if was_connected or self._reason is None:  # a refusal said why already
                self.note_reason(f"disconnected from {self.broker}: {reason_code}")
            # A broker that only speaks 3.1.1 may drop a v5 CONNECT without any CONNACK.
            if (
                not was_connected
                and not self._ever_connected
                and not self._connack_seen
                and self._protocol == "5"
            ):
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
            self._settle(mid, entry, failed)
        except Exception:
            logger.exception("MQTT on_publish handling failed")

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: Any) -> None:
        try:
            self._hooks.on_message(message.topic, bytes(message.payload), bool(message.retain))
        except Exception:
            logger.exception("MQTT on_message handling failed")

    def _on_socket_open(self, _client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
        self._socket_opened_at = time.monotonic()

    # ------------------------------------------------------------------ MQTT 5 -> 3.1.1
    def _watch_first_connack(self) -> None:
        # A 3.1.1-only broker (e.g. amqtt) answers a v5 CONNECT with a 3.1.1 CONNACK that
        # paho's v5 parser cannot read, so no callback ever fires: treat "TCP open, no
        # CONNACK within CONNACK_TIMEOUT_S" as a refusal of MQTT 5.
        while not (self._stopping or self._ever_connected or self._connack_seen):
            if self._protocol != "5":
                return
            opened = self._socket_opened_at
            if opened is not None and time.monotonic() - opened > CONNACK_TIMEOUT_S:
                client = self._client
                if client is not None and not self._connected:
                    self.note_error("no CONNACK to an MQTT 5 CONNECT from %s", self.broker)
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
            # the old client's unacknowledged messages go with it (the new one numbers from 1)
            with self._lock:
                self._early.clear()
            self._fail_pending(lambda _entry: True)
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
