"""Safe on a shared network: the Host allowlist (DNS rebinding), cross-site state changes, response
headers, and a start refused when the API would listen beyond loopback without a key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cluster.runtime import deploy
from pipelines.config import Config, ConfigError
from pipelines.storage import EventStore
from serve_apps.api import build_api
from serve_apps.api.guard import allowed_hosts, host_name
from tests.support.store_client import LocalStoreClient, make_config

KEY = "s3cret-key-long-enough"
CAMERAS = [{"id": "front", "source": "rtsp://cam1.lan/stream"}]


def config_with(**sections: object) -> Config:
    return Config.model_validate({"cameras": CAMERAS, **sections})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = EventStore(tmp_path / "data")
    config = make_config()  # no key: what a rebinding page would find
    try:
        yield TestClient(
            build_api(LocalStoreClient(store, config), config), base_url="http://localhost"
        )
    finally:
        store.close()


def test_a_foreign_host_is_refused(client: TestClient) -> None:
    rebound = client.get("/api/v1/events", headers={"Host": "attacker.example"})
    assert rebound.status_code == 421 and rebound.json()["detail"].startswith("unknown host")
    assert (
        client.get("/api/v1/events", headers={"Host": "attacker.example:8000"}).status_code == 421
    )
    # loopback names and the host of api.base_url pass, with or without a port
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "cam.example:8000", "CAM.example"):
        assert client.get("/api/v1/events", headers={"Host": host}).status_code == 200, host


def test_a_cross_site_post_cannot_ring_the_doorbell(client: TestClient) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    evil = client.post(
        "/api/v1/cameras/door/ring", headers={**form, "Origin": "http://attacker.example"}
    )
    assert evil.status_code == 403 and evil.json() == {"detail": "cross-site request refused"}
    opaque = client.post("/api/v1/cameras/door/ring", headers={**form, "Origin": "null"})
    assert opaque.status_code == 403
    fetch = client.post("/api/v1/cameras/door/ring", headers={"Sec-Fetch-Site": "cross-site"})
    assert fetch.status_code == 403
    # the review page (same origin) and clients that are not browsers get through to the route
    # (which refuses here for its own reason: no camera actors run in this process)
    for headers in ({"Origin": "http://localhost:8000", "Sec-Fetch-Site": "same-origin"}, {}):
        assert client.post("/api/v1/cameras/door/ring", headers=headers).status_code != 403


def test_json_answers_are_neither_sniffed_nor_cached(client: TestClient) -> None:
    answer = client.get("/api/v1/events")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    assert client.get("/").headers["x-content-type-options"] == "nosniff"


def test_allowed_hosts_come_from_base_url_bind_host_and_the_list() -> None:
    config = config_with(
        api={
            "host": "192.168.1.20",
            "api_key": KEY,
            "base_url": "https://cams.home.example",
            "allowed_hosts": ["NVR.lan"],
        }
    )
    hosts = allowed_hosts(config)
    assert {"cams.home.example", "192.168.1.20", "nvr.lan", "localhost", "127.0.0.1"} <= hosts
    assert host_name("[fe80::1]:80") == "fe80::1" and host_name("fe80::1") == "fe80::1"
    with pytest.raises(ValueError):
        config_with(api={"allowed_hosts": ["evil.example/path"]})


@pytest.mark.parametrize(
    ("api", "refused"),
    [
        ({}, False),  # the default binds 127.0.0.1
        ({"host": "0.0.0.0"}, True),
        ({"host": "192.168.1.20"}, True),
        ({"host": "0.0.0.0", "api_key": KEY}, False),
        ({"host": "0.0.0.0", "allow_unauthenticated": True}, False),
        ({"host": "localhost"}, False),
        ({"host": "127.0.0.2"}, False),
        ({"host": "127.example.com"}, True),  # a name that merely starts like loopback
    ],
)
def test_listening_beyond_loopback_needs_a_key_or_an_explicit_yes(
    api: dict[str, object], refused: bool
) -> None:
    config = config_with(api=api)
    assert (config.api.exposure_refusal() is not None) is refused
    assert config_with().api.host == "127.0.0.1"


def test_a_run_that_would_open_the_api_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    config = config_with(
        api={"host": "0.0.0.0"}, storage={"path": str(tmp_path)}, mqtt={"enabled": False}
    )
    with pytest.raises(ConfigError) as refused:  # before Ray or a broker is started
        deploy(config, include_dashboard=False)
    assert "api.api_key" in str(refused.value) and "allow_unauthenticated" in str(refused.value)
