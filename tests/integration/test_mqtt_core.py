"""MqttPublisherCore against a real mosquitto and a real QoS 2 subscriber (no Ray).

Covers AC1 (topic), AC2/AC7 (schema, optional fields), AC4 (QoS as received), AC5 (publish
never blocks, broker down or hung), AC6 (disabled: no client; disconnected: no publish),
reconnect with `online` + discovery re-send, LWT on unclean drop, and callbacks that raise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as paho_client
import pytest

from pipelines.config import MQTTConfig
from pipelines.events import event_json, event_schema
from pipelines.mqtt.client import MqttPublisherCore
from pipelines.mqtt.topics import CameraInfo, Topics, discovery_messages
from tests.support.mqtt import (
    Subscriber,
    make_event,
    mqtt_settings,
    percentile,
    readable_broker_log,
    unique_prefix,
)
from tests.support.network import free_port, wait_port
from tests.support.waiting import wait_for

BASE = "http://127.0.0.1:8000"
REPO = Path(__file__).resolve().parents[2]


class Acks:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, ids: list[str]) -> None:
        with self.lock:
            self.ids.extend(ids)


def _start(config: MQTTConfig, on_acked: Any = None) -> tuple[MqttPublisherCore, Topics]:
    topics = Topics(config.topic_prefix, config.discovery.prefix)
    core = MqttPublisherCore(config, topics, on_acked)
    core.start()
    assert core.wait_connected(10), core.status()
    return core, topics


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    wait_for(predicate, timeout, "the condition", interval=0.02)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_events_arrive_on_camera_topic_at_configured_qos(mosquitto: Any, qos: int) -> None:
    prefix = unique_prefix()
    sub = Subscriber(mosquitto.port, [f"{prefix}/#"])
    acks = Acks()
    config = mqtt_settings(mosquitto.port, prefix, qos=qos, message_expiry_s=120)
    core, topics = _start(config, acks)
    try:
        events = [make_event(), make_event(full=True), make_event(camera_id="garage")]
        for event in events:
            assert core.publish_event(event, event_json(event, BASE)) == "sent"
        topic = topics.event("front_door")
        assert topic == f"{prefix}/camera/front_door/event"  # AC1
        sub.wait_for(
            lambda _m: len(sub.on(topic)) == 2 and len(sub.on(topics.event("garage"))) == 1
        )
        received = sub.on(topic) + sub.on(topics.event("garage"))
        assert [m.json()["event_id"] for m in received] == [e.event_id for e in events]
        for msg in received:
            jsonschema.validate(msg.json(), event_schema())  # AC2
            assert msg.qos == qos  # AC4: subscribed at 2, so this is the publish QoS
            assert msg.retain is False
            assert msg.expiry is not None and 0 < msg.expiry <= 120
        hostile = make_event(camera_id="a/#")
        assert core.publish_event(hostile, event_json(hostile, BASE)) == "failed"
        full = received[1].json()  # AC7
        for name in (
            "smart_detection_type",
            "is_doorbell_ring",
            "provider_used",
            "analysis_mode",
            "ai_confidence",
            "correlation_group_id",
        ):
            assert name in full
        assert "is_doorbell_ring" not in received[0].json()
        _wait(lambda: len(acks.ids) == 3)
        assert sorted(acks.ids) == sorted(e.event_id for e in events)
        last_topic = topics.last_event("front_door")
        # retained last_event updates arrive in order; the newest one (events[1]) comes last
        sub.wait_for(
            lambda _m: (
                bool(sub.on(last_topic))
                and sub.on(last_topic)[-1].json()["event_id"] == events[1].event_id
            )
        )
        assert all(
            m.json()["event_id"] in {events[0].event_id, events[1].event_id}
            for m in sub.on(last_topic)
        )
        assert sub.on(topics.last_event("front_door"))[-1].qos == 1
        status = core.status()
        assert status["published"] == 3 and status["acked"] == 3 and status["pending"] == 0
        assert status["broker"] == f"127.0.0.1:{mosquitto.port}" and status["protocol"] == "5"
    finally:
        core.stop()
        sub.close()


BLOCKED_S = 2.0


def test_publish_never_blocks_even_when_broker_hangs_or_stops(mosquitto: Any) -> None:
    prefix = unique_prefix()
    core, _topics = _start(mqtt_settings(mosquitto.port, prefix, qos=1))
    timings: list[float] = []
    outcomes: dict[str, int] = {}

    def burst(n: int) -> None:
        for _ in range(n):
            event = make_event()
            payload = event_json(event, BASE)
            t0 = time.perf_counter()
            outcome = core.publish_event(event, payload)
            timings.append(time.perf_counter() - t0)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    try:
        burst(200)  # healthy broker
        assert mosquitto.proc is not None
        os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # hung broker: no acks, socket still open
        try:
            burst(300)
        finally:
            os.kill(mosquitto.proc.pid, signal.SIGCONT)
        mosquitto.stop(signal.SIGTERM)  # broker gone
        burst(100)  # some may still be handed to paho before the drop is noticed
        _wait(lambda: not core.connected)
        burst(200)
        p50, p99 = percentile(timings, 50) * 1000, percentile(timings, 99) * 1000
        print(
            f"\npublish_event latency over {len(timings)} calls: p50={p50:.3f} ms p99={p99:.3f} ms"
        )
        # never blocks: a call that waited on the hung or gone broker would take seconds (its
        # socket timeouts); a busy 2-core machine can delay any call by a few hundred ms
        assert max(timings) < BLOCKED_S, f"slowest publish_event took {max(timings):.3f} s"
        assert outcomes.get("unpublished", 0) >= 200
        assert core.status()["unpublished"] == outcomes["unpublished"]
    finally:
        core.stop()


def test_disabled_creates_no_client_and_no_connection(
    mosquitto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[object] = []
    real_init = paho_client.Client.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        created.append(self)
        real_init(self, *args, **kwargs)

    readable_broker_log(mosquitto)  # one probe connection, counted
    monkeypatch.setattr(paho_client.Client, "__init__", counting_init)
    config = mqtt_settings(mosquitto.port, unique_prefix(), enabled=False)
    core = MqttPublisherCore(config, Topics(config.topic_prefix), None)
    core.start()
    event = make_event()
    assert core.publish_event(event, event_json(event, BASE)) == "disabled"
    core.set_activity("front_door", True)
    time.sleep(0.5)
    assert created == []
    assert mosquitto.connection_count() == 1  # the probe only
    status = core.status()
    assert status["enabled"] is False and status["connected"] is False
    assert status["published"] == 0
    core.stop()


def test_disconnected_means_no_publish_and_counts_unpublished(mosquitto: Any) -> None:
    readable_broker_log(mosquitto)
    prefix = unique_prefix()
    core, topics = _start(mqtt_settings(mosquitto.port, prefix, qos=1))
    try:
        mosquitto.stop(signal.SIGTERM)
        _wait(lambda: not core.connected)
        held_back = [make_event() for _ in range(5)]
        for i, event in enumerate(held_back, start=1):
            assert core.publish_event(event, event_json(event, BASE)) == "unpublished"
            assert core.status()["unpublished"] == i
        assert core.status()["pending"] == 0
        mosquitto.start()
        sub = Subscriber(mosquitto.port, [f"{prefix}/#"])
        try:
            _wait(lambda: core.connected, 15)
            after = make_event()
            assert core.publish_event(after, event_json(after, BASE)) == "sent"
            sub.wait_for(lambda _m: bool(sub.on(topics.event("front_door"))))
            time.sleep(0.5)
            assert sub.event_ids(topics.event("front_door")) == [after.event_id]
            # The broker received exactly one PUBLISH on the event topic: paho was never
            # handed the held-back events (it would have resent QoS 1 ones on reconnect).
            core.stop()
            mosquitto.stop()  # flushes the broker's log file
            received = [
                line
                for line in mosquitto.log().splitlines()
                if "Received PUBLISH" in line and topics.event("front_door") in line
            ]
            assert len(received) == 1, received
        finally:
            sub.close()
    finally:
        core.stop()


def test_reconnect_republishes_online_discovery_and_delivers_new_events(mosquitto: Any) -> None:
    prefix = unique_prefix()
    acks = Acks()
    config = mqtt_settings(mosquitto.port, prefix, qos=1)
    core, topics = _start(config, acks)
    cam = CameraInfo("front_door", "Front Door", "file")
    core.set_discovery(cam.camera_id, discovery_messages(cam, topics, BASE, "test"))
    core.set_camera_status("front_door", "Front Door", "online", "file")
    disc_topic = topics.discovery("event", "front_door", "event")
    sub = Subscriber(mosquitto.port, [f"{prefix}/#", f"{config.discovery.prefix}/#"])
    try:
        sub.wait_for(lambda _m: bool(sub.on(disc_topic)) and bool(sub.on(topics.status)))
        before = [make_event() for _ in range(10)]
        for event in before:
            core.publish_event(event, event_json(event, BASE))
        sub.wait_for(lambda _m: len(sub.on(topics.event("front_door"))) == 10)

        mosquitto.stop(signal.SIGTERM)  # mid-stream broker restart
        _wait(lambda: not core.connected)
        gap = [make_event() for _ in range(5)]
        assert all(core.publish_event(e, event_json(e, BASE)) == "unpublished" for e in gap)
        mosquitto.start()
        _wait(lambda: core.connected and sub.subscribed.is_set(), 20)
        assert core.status()["connects"] == 2
        # The restarted broker lost every retained message; the core re-sent them.
        sub.wait_for(
            lambda _m: (
                len(sub.on(disc_topic)) >= 2
                and [m.payload for m in sub.on(topics.status)][-1] == b"online"
                and len(sub.on(topics.camera_status("front_door"))) >= 2
            )
        )
        after = [make_event() for _ in range(20)]
        for event in after:
            assert core.publish_event(event, event_json(event, BASE)) == "sent"
        sub.wait_for(lambda _m: len(sub.on(topics.event("front_door"))) >= 30)
        got = sub.event_ids(topics.event("front_door"))
        assert got[-20:] == [e.event_id for e in after]
        assert not {e.event_id for e in gap} & set(got)
        _wait(lambda: {e.event_id for e in after} <= set(acks.ids))

        # Home Assistant restarts: discovery is re-sent when it announces itself online.
        seen = len(sub.on(disc_topic))
        pub = paho_client.Client(paho_client.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        pub.publish(topics.ha_status, "online", qos=1).wait_for_publish(5)
        sub.wait_for(lambda _m: len(sub.on(disc_topic)) > seen)
        pub.publish(topics.ha_status, "offline", qos=1).wait_for_publish(5)
        time.sleep(0.3)
        assert len(sub.on(disc_topic)) == seen + 1
        pub.disconnect()
        pub.loop_stop()
    finally:
        core.stop()
        sub.close()


def test_clean_stop_publishes_offline_retained(mosquitto: Any) -> None:
    prefix = unique_prefix()
    core, topics = _start(mqtt_settings(mosquitto.port, prefix))
    core.stop()
    sub = Subscriber(mosquitto.port, [topics.status])
    try:
        msgs = sub.wait_for(lambda m: bool(m))
        assert (msgs[0].payload, msgs[0].retain) == (b"offline", True)
    finally:
        sub.close()


def test_last_will_offline_after_unclean_drop(mosquitto: Any, tmp_path: Path) -> None:
    prefix = unique_prefix()
    script = tmp_path / "publisher.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            from pipelines.config import MQTTConfig
            from pipelines.mqtt.client import MqttPublisherCore
            from pipelines.mqtt.topics import Topics
            config = MQTTConfig(host="127.0.0.1", port={mosquitto.port}, topic_prefix="{prefix}")
            core = MqttPublisherCore(config, Topics("{prefix}"))
            core.start()
            assert core.wait_connected(10)
            print("ready", flush=True)
            time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        status_topic = f"{prefix}/status"
        sub = Subscriber(mosquitto.port, [status_topic])
        sub.wait_for(lambda m: bool(m) and m[-1].payload == b"online")
        sub.close()
        proc.kill()  # SIGKILL: no DISCONNECT is ever sent
        proc.wait(10)
        late = Subscriber(mosquitto.port, [status_topic])
        try:
            msgs = late.wait_for(lambda m: bool(m) and m[-1].payload == b"offline", 10)
            assert msgs[-1].retain is True
        finally:
            late.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_callback_exceptions_do_not_stop_publishing(mosquitto: Any) -> None:
    prefix = unique_prefix()
    calls: list[list[str]] = []

    def boom(ids: list[str]) -> None:
        calls.append(ids)
        raise RuntimeError("on_acked exploded")

    sub = Subscriber(mosquitto.port, [f"{prefix}/#"])
    core, topics = _start(mqtt_settings(mosquitto.port, prefix, qos=1), boom)
    try:
        events = [make_event() for _ in range(5)]
        for event in events:
            assert core.publish_event(event, event_json(event, BASE)) == "sent"
            time.sleep(0.05)
        sub.wait_for(lambda _m: len(sub.on(topics.event("front_door"))) == 5)
        _wait(lambda: len(calls) == 5)
        assert core.connected and core.status()["acked"] == 5
    finally:
        core.stop()
        sub.close()


def test_pending_queue_is_bounded(mosquitto: Any) -> None:
    prefix = unique_prefix()
    core, _topics = _start(mqtt_settings(mosquitto.port, prefix, qos=1, queue_size=10))
    assert mosquitto.proc is not None
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # no acks come back
    try:
        outcomes = [
            core.publish_event(e, event_json(e, BASE)) for e in (make_event() for _ in range(25))
        ]
        assert outcomes.count("sent") == 10 and outcomes.count("dropped") == 15
        status = core.status()
        assert status["dropped"] == 15 and status["pending"] == 10
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
    _wait(lambda: core.status()["pending"] == 0)
    core.stop()


def test_falls_back_to_mqtt_311_when_broker_refuses_v5(tmp_path: Path) -> None:
    """amqtt (the demo's fallback broker) speaks only 3.1.1 and refuses an MQTT 5 CONNECT."""
    port = free_port()
    broker = subprocess.Popen(
        [sys.executable, "-m", "pipelines.broker", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 30)
        prefix = unique_prefix()
        sub = Subscriber(port, [f"{prefix}/#"], protocol=paho_client.MQTTv311)
        config = mqtt_settings(port, prefix, qos=1)
        assert config.protocol == "5"
        core = MqttPublisherCore(config, Topics(prefix, config.discovery.prefix), None)
        core.start()
        try:
            assert core.wait_connected(15), core.status()
            assert core.status()["protocol"] == "3.1.1"
            event = make_event()
            assert core.publish_event(event, event_json(event, BASE)) == "sent"
            sub.wait_for(lambda _m: bool(sub.on(f"{prefix}/camera/front_door/event")))
            _wait(lambda: core.status()["acked"] == 1)
        finally:
            core.stop()
            sub.close()
    finally:
        broker.terminate()
        broker.wait(10)


def test_retained_state_updates_coalesce_to_the_latest_value(mosquitto: Any) -> None:
    prefix = unique_prefix()
    core, topics = _start(mqtt_settings(mosquitto.port, prefix))
    sub = Subscriber(mosquitto.port, [topics.activity("front_door")])
    try:
        assert mosquitto.proc is not None
        os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # the first update stays unacknowledged
        try:
            for i in range(101):
                core.set_activity("front_door", i % 2 == 0)  # ends with ON
        finally:
            os.kill(mosquitto.proc.pid, signal.SIGCONT)
        sub.wait_for(lambda m: len(m) >= 2, 10)
        time.sleep(0.3)
        payloads = [m.payload for m in sub.messages]
        assert payloads[-1] == b"ON"
        assert len(payloads) == 2, payloads  # the first value, then only the newest
    finally:
        core.stop()
        sub.close()


def test_a_reconnect_resend_never_replaces_a_newer_retained_value(mosquitto: Any) -> None:
    """The connect hook re-sends every retained topic while events keep arriving (the CI flake
    behind this test: a resend of the value read before an update replaced the newer one)."""
    prefix = unique_prefix()
    core, topics = _start(mqtt_settings(mosquitto.port, prefix))
    last_topic = topics.last_event("front_door")
    sub = Subscriber(mosquitto.port, [last_topic])
    older, newer = make_event(), make_event()
    try:
        assert core.publish_event(older, event_json(older, BASE)) == "sent"
        sub.wait_for(lambda m: len(m) >= 1)
        send_discovery = core._send_discovery

        def newer_event_meanwhile(camera_ids: list[str]) -> None:  # between read and resend
            assert core.publish_event(newer, event_json(newer, BASE)) == "sent"
            send_discovery(camera_ids)

        core._send_discovery = newer_event_meanwhile  # type: ignore[method-assign]
        core._on_transport_connected()
        sub.wait_for(lambda m: m[-1].json()["event_id"] == newer.event_id)
        time.sleep(0.3)  # every resend has landed: the newest value is still the last one
        assert sub.messages[-1].json()["event_id"] == newer.event_id
        assert {m.json()["event_id"] for m in sub.messages} == {older.event_id, newer.event_id}
    finally:
        core.stop()
        sub.close()


def test_a_state_unacknowledged_when_the_link_drops_never_outlives_a_newer_one(
    mosquitto: Any,
) -> None:
    """paho re-sends a state message left unacknowledged by a dropped link, after the connect
    hook has run: the value set meanwhile is sent after it, so the broker keeps the newest."""
    prefix = unique_prefix()
    core, topics = _start(mqtt_settings(mosquitto.port, prefix))
    topic = topics.activity("front_door")

    def settled() -> bool:
        return core.connected and not core._state_inflight and not core._state_dirty

    try:
        core.set_activity("front_door", True)
        _wait(settled)
        _off_in_flight_when_the_link_drops(core, mosquitto)
        mosquitto.start()  # a new broker on the same port: nothing retained yet
        _wait(settled, 20)
        time.sleep(0.5)  # any later re-send has reached the broker
        retained = _retained(mosquitto.port, topic)
        assert retained.retain and retained.payload == b"ON"
    finally:
        core.stop()


def _off_in_flight_when_the_link_drops(core: MqttPublisherCore, mosquitto: Any) -> None:
    """front_door's activity `OFF` written to the socket and never acknowledged, the broker
    gone with it, then `ON` (the newest value) set while disconnected."""
    assert mosquitto.proc is not None
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)
    core.set_activity("front_door", False)
    mosquitto.stop(signal.SIGKILL)
    _wait(lambda: not core.connected)
    core.set_activity("front_door", True)


def _retained(port: int, topic: str) -> Any:
    """The message the broker retains on `topic`, as a new subscriber receives it."""
    sub = Subscriber(port, [topic])
    try:
        (retained,) = sub.wait_for(lambda m: len(m) >= 1)
        return retained
    finally:
        sub.close()


def test_a_retained_payload_that_cannot_be_built_does_not_block_its_topic(
    mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix()
    core, topics = _start(mqtt_settings(mosquitto.port, prefix))
    sub = Subscriber(mosquitto.port, [topics.last_event("front_door")])
    broken, newer = make_event(), make_event()

    def unbuildable() -> str:
        raise ValueError("a payload that cannot be built")

    try:
        core.update_last_event(broken, event_json(broken, BASE), unbuildable)
        core.update_last_event(newer, event_json(newer, BASE))  # the topic is not stuck
        sub.wait_for(lambda m: bool(m) and m[-1].json()["event_id"] == newer.event_id)
        assert "could not be built" in caplog.text  # said, with the topic
    finally:
        core.stop()
        sub.close()


def test_a_state_in_flight_when_the_client_is_replaced_is_sent_again(mosquitto: Any) -> None:
    """Falling back to MQTT 3.1.1 makes a new paho client: the old one's unacknowledged state
    will never be acknowledged, so its topic must not stay in flight (its newest value is sent
    on the new connection)."""
    prefix = unique_prefix()
    core, topics = _start(mqtt_settings(mosquitto.port, prefix))
    topic = topics.activity("front_door")
    transport = core._transport
    try:
        _off_in_flight_when_the_link_drops(core, mosquitto)  # OFF: the old client's
        assert transport._client is not None
        transport._fall_back_to_311(transport._client)  # as a broker refusing MQTT 5 makes it
        mosquitto.start()
        _wait(lambda: core.connected and transport.protocol == "3.1.1", 20)
        retained = _retained(mosquitto.port, topic)
        assert retained.retain and retained.payload == b"ON"
        _wait(lambda: not transport._pending)  # the new client's acks came; none of the old's
    finally:
        core.stop()
