"""A secret in a source URL's query string never reaches logs, `status`, the API or MQTT.

Cameras whose URLs carry secrets as query values (`token=`, `password=`, a signed URL's
`X-Amz-Signature=`, ...) point at a closed port, so they fail and their error texts, which
quote the URL, go everywhere an error goes: the actor's log, `liveobject status`, the API's
camera list, the retained camera status on a real mosquitto. None may hold a secret value.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from cluster.actors.ingest import start_camera
from cluster.actors.publisher import get_publisher
from cluster.actors.store import get_store
from pipelines.config import Config
from pipelines.mqtt.topics import Topics
from pipelines.naming import ingest_actor_name
from tests.support.mqtt import Subscriber, kill_actors, poll, unique_prefix
from tests.support.network import free_port
from tests.support.ray_cluster import ray_logs

pytestmark = pytest.mark.integration

SECRETS = {
    "password": "pw-Q7s3cr3t-a1",
    "pass": "ps-Q7s3cr3t-b2",
    "pwd": "pd-Q7s3cr3t-c3",
    "access_token": "tk-Q7s3cr3t-d4",
    "apikey": "ky-Q7s3cr3t-e5",
    "client_secret": "sc-Q7s3cr3t-f6",
    "auth": "au-Q7s3cr3t-g7",
    "X-Amz-Signature": "sg-Q7s3cr3t-h8",
}
API_KEY = "redaction-test-key-0123456789"


def query() -> str:
    return "channel=1&" + "&".join(f"{name}={value}" for name, value in SECRETS.items())


def leaked(text: str) -> list[str]:
    return [value for value in SECRETS.values() if value in text]


@pytest.fixture
def config(ray_session: Any, mosquitto: Any, tmp_path: Path) -> Iterator[Config]:
    closed = free_port()
    cfg = Config.model_validate(
        {
            "ray": {"namespace": f"redact-{unique_prefix()}"},
            "cameras": [
                {"id": "cam_rtsp", "source": f"rtsp://127.0.0.1:{closed}/live?{query()}"},
                {"id": "cam_http", "source": f"http://127.0.0.1:{closed}/video.mjpg?{query()}"},
            ],
            "storage": {"path": str(tmp_path / "store")},
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "topic_prefix": unique_prefix()},
            "api": {"api_key": API_KEY},
        }
    )
    yield cfg
    for camera in cfg.cameras:
        kill_actors(cfg.ray.namespace, (ingest_actor_name(camera.id),))
    kill_actors(cfg.ray.namespace)


def test_query_string_secrets_never_leave_the_cluster(
    config: Config, mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from cluster.status import gather_status
    from serve_apps.api import RayStoreClient, build_api

    caplog.set_level(logging.DEBUG)
    topics = Topics(config.mqtt.topic_prefix, config.mqtt.discovery.prefix)
    sub = Subscriber(mosquitto.port, [f"{config.mqtt.topic_prefix}/#", "homeassistant/#"])
    store = get_store(config)
    ray.get(store.counts.remote(), timeout=60)
    publisher = get_publisher(config, store)
    poll(publisher.status.remote, lambda s: s["connected"], timeout=30)
    try:
        actors = {camera.id: start_camera(config, camera.id) for camera in config.cameras}
        for cid, actor in actors.items():  # both fail: their errors quote the URL
            poll(
                actor.status.remote,
                lambda s, cid=cid: s[cid]["status"] == "unavailable" and s[cid]["last_error"],
                timeout=60,
            )
        # status: what `liveobject status` gathers, with the source shown redacted
        state = gather_status(config.ray.namespace)
        text = json.dumps(state, default=str)
        assert not leaked(text), text
        for camera_id in actors:
            source = state["cameras"][camera_id]["source"]
            assert "access_token=***" in source and "X-Amz-Signature=***" in source, source
            assert "channel=1" in source  # only secret-looking values are hidden
        # the API: cameras (with their errors), events, health with and without the key
        with TestClient(
            build_api(RayStoreClient(config), config), base_url="http://localhost"
        ) as client:
            auth = {"Authorization": f"Bearer {API_KEY}"}
            cameras = client.get("/api/v1/cameras", headers=auth)
            assert cameras.status_code == 200 and not leaked(cameras.text), cameras.text
            assert all(c["last_error"] for c in cameras.json()["cameras"])
            for path in ("/api/v1/events", "/api/v1/health"):
                for headers in (auth, {}):
                    resp = client.get(path, headers=headers)
                    assert not leaked(resp.text), (path, resp.text)
        # MQTT: every message on the broker for this run, retained camera statuses included
        for camera_id in actors:
            sub.wait_for(lambda _m, c=camera_id: bool(sub.on(topics.camera_status(c))), 30)
        time.sleep(0.5)  # let anything else in flight arrive too
        assert sub.messages
        for message in sub.messages:
            assert not leaked(message.topic + message.payload.decode(errors="replace"))
        # logs: every Ray process of the session (the actors' errors are there) and ours
        logs = ray_logs()
        assert "camera cam_rtsp" in logs and "camera cam_http" in logs  # the failures are logged
        assert not leaked(logs)
        assert not leaked(caplog.text)
    finally:
        sub.close()
