"""Why the broker is not connected, named where an operator looks (no Ray): a TLS broker whose
CA the config does not trust, a refused password, a closed port and a name that does not
resolve, each against a real mosquitto (TLS certificates made here) through the publisher's
real paho client. The reason is logged once per change, holds no secret, and clears on connect;
the console line and health carry it. Events stored under a refused password are published once
a publisher runs with the fixed config."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster.status import plain_lines
from pipelines.config import MQTTConfig, TLSConfig
from pipelines.mqtt.client import MqttPublisherCore
from pipelines.mqtt.publishing import EventPublisher
from pipelines.mqtt.topics import Topics
from pipelines.storage import EventStore
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Subscriber, actor_config, make_event, mqtt_settings, unique_prefix
from tests.support.network import free_port
from tests.support.publisher_ports import FakeCameras, FakeMetrics, LocalFeed
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SECRET = "wrong-secret-4711"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def make_ca(folder: Path, common: str) -> tuple[Path, x509.Certificate, Any]:
    """A self-signed CA: its PEM file, certificate and key."""
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _write(folder, common, cert, key)[0], cert, key


def make_server_cert(folder: Path, ca: x509.Certificate, ca_key: Any) -> tuple[Path, Path]:
    """A broker certificate for 127.0.0.1 signed by the CA."""
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("broker"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _write(folder, "server", cert, key)


def _core(config: MQTTConfig) -> MqttPublisherCore:
    core = MqttPublisherCore(config, Topics(config.topic_prefix, config.discovery.prefix))
    core.start()
    return core


def _reason_of(core: MqttPublisherCore, *words: str, timeout: float = 20.0) -> str:
    """The publisher's reason once it holds every word."""
    status: dict[str, Any] = {}

    def named() -> bool:
        status.update(core.status())
        return bool(status["reason"]) and all(w in status["reason"] for w in words)

    wait_for(named, timeout, f"a reason naming {words}", interval=0.1, context=lambda: str(status))
    assert status["connected"] is False
    return str(status["reason"])


def test_a_broker_certificate_from_an_untrusted_ca_is_named_and_never_downgraded(
    tmp_path: Path,
) -> None:
    ca_file, ca, ca_key = make_ca(tmp_path, "broker-ca")
    other_ca_file, _, _ = make_ca(tmp_path, "other-ca")
    cert, key = make_server_cert(tmp_path, ca, ca_key)
    broker = Mosquitto(tmp_path, extra_conf=f"certfile {cert}\nkeyfile {key}\n")
    broker.start()
    untrusted = trusted = None
    try:
        tls = TLSConfig(enabled=True, ca_certs=other_ca_file)
        untrusted = _core(mqtt_settings(broker.port, unique_prefix(), tls=tls))
        reason = _reason_of(untrusted, "certificate verification failed for 127.0.0.1")
        assert "mqtt.tls.ca_certs" in reason
        time.sleep(1.5)  # paho retries; still no connection (no fallback to plain text)
        assert untrusted.status()["connected"] is False and untrusted.status()["acked"] == 0

        tls = TLSConfig(enabled=True, ca_certs=ca_file)  # the fixed config connects
        trusted = _core(mqtt_settings(broker.port, unique_prefix(), tls=tls))
        assert trusted.wait_connected(15), trusted.status()
        assert trusted.status()["reason"] is None
    finally:
        for core in (untrusted, trusted):
            if core is not None:
                core.stop()
        broker.stop()


def test_a_refused_password_is_named_once_without_the_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed (Debian package `mosquitto`)")
    passwords = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(passwords), "liveobject", "right-secret"], check=True)
    broker = Mosquitto(tmp_path, extra_conf=f"password_file {passwords}\n", anonymous=False)
    broker.start()
    caplog.set_level(logging.INFO, logger="pipelines.mqtt")
    core = None
    try:
        config = mqtt_settings(broker.port, unique_prefix(), username="liveobject", password=SECRET)
        core = _core(config)
        reason = _reason_of(core, "not authorised", "mqtt.password")
        wait_for(lambda: broker.log().count("New connection from") >= 3, 20, "paho to retry")
        assert SECRET not in reason and SECRET not in str(core.status())
        said = [r.getMessage() for r in caplog.records if "MQTT not connected" in r.getMessage()]
        assert len(said) == 1, said  # once per change, not once per retry
        assert SECRET not in caplog.text
    finally:
        if core is not None:
            core.stop()
        broker.stop()


def test_a_closed_port_and_an_unknown_name_are_named(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    closed = _core(mqtt_settings(port, unique_prefix()))
    unknown = _core(mqtt_settings(1883, unique_prefix(), host="no-such-broker.invalid"))
    try:
        reason = _reason_of(closed, f"connection refused by 127.0.0.1:{port}", "mqtt.port")
        assert _reason_of(unknown, "name not resolved: no-such-broker.invalid")
    finally:
        closed.stop()
        unknown.stop()

    # the console line (live table and plain output) and health carry the reason
    snap = {"cameras": {}, "mqtt": {"enabled": True, "connected": False, "reason": reason}}
    assert f"NOT CONNECTED: {reason}" in plain_lines(snap)[-1]
    assert _health_of({"connected": False, "reason": reason}) == {
        "ok": False,
        "detail": reason,  # with the key (`components`)
        "public": "broker not connected: connection refused",  # `why`, without the address
        "pending": 0,
    }
    assert _health_of({"connected": True, "reason": None})["detail"] == ""


def _health_of(publisher_status: dict[str, Any]) -> dict[str, Any]:
    """The MQTT entry of /api/v1/health for a publisher that reports this status."""
    from pipelines.config import Config
    from serve_apps.api.client import RayStoreClient

    client = RayStoreClient(Config.model_validate({"cameras": [{"id": "a", "source": "a.mp4"}]}))

    async def call(_actor: str, _method: str, *_a: Any, **_k: Any) -> dict[str, Any]:
        return publisher_status

    client._call = call  # type: ignore[method-assign]  # the actor's answer, without Ray
    return asyncio.run(client._mqtt_ok())


def test_events_stored_under_a_refused_password_are_published_once_it_is_fixed(
    tmp_path: Path,
) -> None:
    """The whole way: the product's EventPublisher reads a real EventStore's feed; with a wrong
    password nothing is published and the events stay unpublished in the DuckDB file; a
    publisher built from the fixed config (the next run) publishes each of them once."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed (Debian package `mosquitto`)")
    passwords = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(passwords), "liveobject", "right-secret"], check=True)
    subprocess.run([tool, "-b", str(passwords), "reader", "reader-secret"], check=True)
    broker = Mosquitto(tmp_path, extra_conf=f"password_file {passwords}\n", anonymous=False)
    prefix = unique_prefix()
    publishers: list[EventPublisher] = []
    store = sub = None

    def publisher(password: str) -> EventPublisher:
        config = actor_config(
            broker.port, tmp_path / "data", prefix=prefix, username="liveobject", password=password
        )
        made = EventPublisher(
            config,
            store=LocalFeed(store),
            cameras=FakeCameras(),
            metrics=FakeMetrics(),
            sw_version="t",
        )
        publishers.append(made)
        made.start()
        return made

    try:
        broker.start()
        store = EventStore(tmp_path / "data")
        sub = Subscriber(
            broker.port, [f"{prefix}/camera/+/event"], auth=("reader", "reader-secret")
        )
        wrong = publisher(SECRET)
        wait_for(lambda: "not authorised" in str(wrong.status().get("reason")), 20, "the reason")
        events = [make_event(description=f"A parcel is left at the door, {i}.") for i in range(3)]
        store.save_batch(events, None, 0)
        wait_for(lambda: broker.log().count("not authorised") >= 2, 20, "paho to retry")
        assert sub.messages == []
        assert len(store.unpublished_events()) == 3  # still waiting in the store
        wrong.shutdown()

        fixed = publisher("right-secret")
        ids = [e.event_id for e in events]
        sub.wait_for(lambda m: len(m) >= 3, 30)
        wait_for(lambda: not store.unpublished_events(), 20, "the acks stored")
        fixed.flush(10)
        assert [m.json()["event_id"] for m in sub.messages] == ids  # each once, in order
        assert fixed.status()["reason"] is None
    finally:
        for made in publishers:
            made.shutdown()
        if sub is not None:
            sub.close()
        if store is not None:
            store.close()
        broker.stop()
