"""The hardened surface: derived token keys, API key length, health without the key, the
camera thumbnail route behind the retained last_event, query-string secret redaction."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from pipelines.auth import (
    CAMERA_THUMBNAIL_PURPOSE,
    THUMBNAIL_PURPOSE,
    check_camera_token,
    check_thumbnail_token,
    derive_key,
    sign_camera_token,
    sign_thumbnail_token,
)
from pipelines.config import Config, ConfigError, load_config
from pipelines.events import Event, camera_thumbnail_url
from pipelines.redact import redact, redact_url
from pipelines.storage import EventStore
from serve_apps.api import build_api

KEY = "hardening-api-key-0123"
JPEG = b"\xff\xd8\xff\xe0" + b"hardened" * 20 + b"\xff\xd9"


# ---------------------------------------------------------------- token keys


def _raw_mac(key: str, message: str) -> str:
    digest = hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def test_tokens_are_signed_with_a_key_derived_for_that_purpose() -> None:
    event_id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    token = sign_thumbnail_token(event_id, KEY, 60, now=1_000_000)
    expires, _, mac = token.partition(".")
    message = f"thumb:{event_id}:{expires}"
    derived = derive_key(KEY, THUMBNAIL_PURPOSE)
    # HKDF-Expand, one block: HMAC(api_key, purpose || 0x01)
    expand = hmac.new(KEY.encode(), THUMBNAIL_PURPOSE.encode() + b"\x01", "sha256")
    assert derived == expand.digest()
    assert derived != KEY.encode() and derived != derive_key(KEY, CAMERA_THUMBNAIL_PURPOSE)
    assert mac != _raw_mac(KEY, message)  # never the bearer key itself
    expected = hmac.new(derived, message.encode(), hashlib.sha256).digest()
    assert mac == base64.urlsafe_b64encode(expected[:24]).decode().rstrip("=")
    assert check_thumbnail_token(token, event_id, KEY, now=1_000_000) is None
    # a token made the old way (MAC keyed by the API key itself) is refused
    assert check_thumbnail_token(f"{expires}.{_raw_mac(KEY, message)}", event_id, KEY) == "invalid"
    assert check_thumbnail_token(token, event_id, KEY + "x", now=1_000_000) == "invalid"


def test_camera_token_does_not_expire_and_opens_one_event_of_one_camera() -> None:
    token = sign_camera_token("front", "e1", KEY)
    assert check_camera_token(token, "front", "e1", KEY)
    assert not check_camera_token(token, "front", "e2", KEY)  # not the camera's other images
    assert not check_camera_token(token, "back", "e1", KEY)
    assert not check_camera_token(token, "front", "e1", KEY + "x")  # a new key revokes it
    assert token != _raw_mac(KEY, "camera:front:e1")
    url = camera_thumbnail_url("front", "e1", "http://h:8000", KEY)
    assert url == f"http://h:8000/api/v1/cameras/front/thumbnail?event_id=e1&token={token}"
    assert "token" not in camera_thumbnail_url("front", "e1", "http://h:8000", None)


# ---------------------------------------------------------------- api_key length


def _config(api_key: str | None) -> dict[str, Any]:
    api = {} if api_key is None else {"api_key": api_key}
    return {"cameras": [{"id": "front", "source": "rtsp://cam.lan/s"}], "api": api}


@pytest.mark.parametrize("key", ["short", "fifteen-chars15"])
def test_short_api_key_is_a_config_error(key: str) -> None:
    with pytest.raises(ValidationError) as info:
        Config.model_validate(_config(key))
    assert "at least 16 characters" in str(info.value)


def test_short_api_key_in_a_file_names_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEOBJECT_API_KEY", "tiny-key")
    path = tmp_path / "c.yaml"
    path.write_text(
        "cameras:\n  - id: front\n    source: rtsp://cam.lan/s\n"
        "api:\n  api_key: ${LIVEOBJECT_API_KEY}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert f"{path}:5" in text and "api_key" in text and "16" in text
    assert "tiny-key" not in text


def test_sixteen_characters_and_no_key_are_fine() -> None:
    assert Config.model_validate(_config("x" * 16)).api.api_key is not None
    assert Config.model_validate(_config(None)).api.api_key is None


# ---------------------------------------------------------------- API: health, camera thumbnail


class LocalClient:
    """The API's StoreClient over an in-process EventStore; health reports plain state."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.down: set[str] = set()

    async def get(self, event_id: str) -> Event | None:
        return await asyncio.to_thread(self.store.get, event_id)

    async def query(self, **filters: Any) -> tuple[list[Event], str | None]:
        return await asyncio.to_thread(lambda: self.store.query(**filters))

    async def thumbnail_path(self, event_id: str) -> Path | None:
        return await asyncio.to_thread(self.store.thumbnail_path, event_id)

    async def thumbnail_bytes(self, event_id: str) -> bytes | None:
        path = self.store.thumbnail_path(event_id)
        return None if path is None else path.read_bytes()

    async def health(self) -> dict[str, dict[str, Any]]:
        return {
            "store": {"ok": "store" not in self.down, "detail": "unhealthy", "stored": 42},
            "mqtt": {"ok": "mqtt" not in self.down, "detail": "broker not connected", "pending": 7},
        }

    async def cameras(self) -> list[dict[str, Any]]:
        return []

    async def ring(self, camera_id: str) -> dict[str, Any]:
        return {"accepted": False}


def _event(camera: str, minutes: int) -> Event:
    return Event(
        camera_id=camera,
        camera_name=camera.title(),
        description="someone",
        objects_detected=("person",),
        confidence=60,
        source_type="rtsp",
        timestamp=datetime(2026, 3, 1, 12, tzinfo=UTC) + timedelta(minutes=minutes),
    )


@pytest.fixture
def api(tmp_path: Path) -> tuple[TestClient, LocalClient, list[Event]]:
    store = EventStore(tmp_path / "data")
    events = [_event("front", 0), _event("front", 5), _event("back", 1)]
    store.append(events, {e.event_id: JPEG + e.event_id.encode() for e in events})
    config = Config.model_validate(
        {
            "cameras": [
                {"id": "front", "source": "rtsp://cam.lan/1"},
                {"id": "back", "source": "rtsp://cam.lan/2"},
            ],
            "api": {"api_key": KEY, "base_url": "http://ha.lan:8000"},
        }
    )
    local = LocalClient(store)
    yield TestClient(build_api(local, config), base_url="http://localhost"), local, events
    store.close()


def test_health_without_the_key_shows_no_details(api: Any) -> None:
    client, local, _ = api
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/api/v1/health").json() == {"status": "ok", "why": []}
    full = client.get("/api/v1/health", headers=auth).json()
    assert full["components"]["store"]["stored"] == 42  # details with the key
    local.down.add("mqtt")
    r = client.get("/api/v1/health")
    assert r.status_code == 503
    assert r.json() == {"status": "degraded", "why": ["mqtt: broker not connected"]}
    wrong = client.get("/api/v1/health", headers={"Authorization": "Bearer nope"})
    assert "components" not in wrong.json() and "42" not in wrong.text


def test_health_shows_details_when_no_key_is_configured(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "data")
    config = Config.model_validate(_config(None))
    client = TestClient(build_api(LocalClient(store), config), base_url="http://localhost")
    assert client.get("/api/v1/health").json()["components"]["mqtt"]["pending"] == 7
    store.close()


def test_camera_thumbnail_route_opens_with_the_camera_token(api: Any) -> None:
    client, _, events = api
    first, newest, other = events
    url = urlsplit(camera_thumbnail_url("front", first.event_id, "http://ha.lan:8000", KEY))
    ok = client.get(f"{url.path}?{url.query}")
    assert ok.status_code == 200 and ok.content == JPEG + first.event_id.encode()
    token = sign_camera_token("front", first.event_id, KEY)
    # the token opens its one event, not the camera's newest or any other
    latest = client.get("/api/v1/cameras/front/thumbnail", params={"token": token})
    assert latest.status_code == 403
    newer = client.get(
        "/api/v1/cameras/front/thumbnail", params={"token": token, "event_id": newest.event_id}
    )
    assert newer.status_code == 403
    keyed = client.get(
        "/api/v1/cameras/front/thumbnail", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert keyed.status_code == 200 and keyed.content.endswith(newest.event_id.encode())
    with_key = client.get(
        "/api/v1/cameras/back/thumbnail", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert with_key.status_code == 200 and with_key.content.endswith(other.event_id.encode())
    path = "/api/v1/cameras/back/thumbnail"
    assert client.get(path).status_code == 401  # no token, no key
    assert client.get(path, params={"token": token}).status_code == 403  # front's token
    event_token = sign_thumbnail_token(other.event_id, KEY, 60)  # for the event route only
    assert client.get(path, params={"token": event_token}).status_code == 403
    # a token of one camera never shows another camera's event
    cross = client.get(
        "/api/v1/cameras/front/thumbnail", params={"token": token, "event_id": other.event_id}
    )
    assert cross.status_code == 403
    assert client.get("/api/v1/cameras/nope/thumbnail", params={"token": token}).status_code in (
        403,
        404,
    )


# ---------------------------------------------------------------- query-string secrets


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "pass",
        "pwd",
        "token",
        "key",
        "secret",
        "auth",
        "signature",
        "Password",
        "access_token",
        "apiKey",
        "client_secret",
        "X-Amz-Signature",
        "sig",
        "authorization",
    ],
)
def test_secret_looking_query_values_are_redacted(name: str) -> None:
    url = f"rtsp://cam.lan:554/live?channel=2&{name}=Sup3r-S3cret&subtype=0"
    out = redact_url(url)
    assert "Sup3r-S3cret" not in out and f"{name}=***" in out
    assert "channel=2" in out and "subtype=0" in out
    assert "Sup3r-S3cret" not in redact(f"cannot open {url}: Connection refused")


def test_redaction_keeps_harmless_parameters_and_hides_userinfo() -> None:
    url = "rtsp://admin:hunter2@cam.lan/s?channel=1&stream=main#frag"
    assert redact_url(url) == "rtsp://admin:***@cam.lan/s?channel=1&stream=main#frag"


def test_a_new_token_epoch_revokes_every_link_without_a_new_key(tmp_path: Path) -> None:
    """api.thumbnail_token_epoch: links handed out before (MQTT payloads, HA's database and
    backups) stop working; the API key and everything else stay."""
    store = EventStore(tmp_path / "data")
    event = _event("front", 0)
    store.append([event], {event.event_id: JPEG})
    cameras = [{"id": "front", "source": "rtsp://cam.lan/1"}]
    before = Config.model_validate({"cameras": cameras, "api": {"api_key": KEY}})
    after = Config.model_validate(
        {"cameras": cameras, "api": {"api_key": KEY, "thumbnail_token_epoch": 1}}
    )
    old_key, new_key = str(before.api.link_key()), str(after.api.link_key())
    old_links = [
        camera_thumbnail_url("front", event.event_id, "http://h", old_key),
        f"http://h/api/v1/events/{event.event_id}/thumbnail?token="
        + sign_thumbnail_token(event.event_id, old_key, 60),
    ]
    try:
        for config, status in ((before, 200), (after, 403)):
            client = TestClient(build_api(LocalClient(store), config), base_url="http://localhost")
            for link in old_links:
                parts = urlsplit(link)
                assert client.get(f"{parts.path}?{parts.query}").status_code == status, link
        fresh = urlsplit(camera_thumbnail_url("front", event.event_id, "http://h", new_key))
        assert client.get(f"{fresh.path}?{fresh.query}").status_code == 200
        auth = {"Authorization": f"Bearer {KEY}"}
        assert client.get("/api/v1/events", headers=auth).status_code == 200  # same key
    finally:
        store.close()


def test_object_metric_labels_are_bounded() -> None:
    """Object names are model output (a sign held up to a camera can write them): a metric
    label takes a known class, the camera's own objects, `none` or `other`."""
    from cluster.metrics import CameraMetrics

    class Recorded(CameraMetrics):
        def __init__(self) -> None:
            self.labels: list[str | None] = []
            super().__init__("front", ["package"])

        def _create(self) -> None:
            return None

        def record(self, name: str, op: str, value: float, **tags: str) -> None:
            self.labels.append(tags.get("object"))

    metrics = Recorded()
    metrics.event(("person", "IGNORE ALL PREVIOUS INSTRUCTIONS", "x" * 500, "package", "🦝"))
    metrics.event(())
    assert metrics.labels == ["other", "package", "person", "none"]


def test_narrative_answer_is_one_line_of_printable_text() -> None:
    from pipelines.vlm.narrative import MAX_CHARS, clean_text

    assert clean_text("Quiet day.\n\x1b[2JAll\u202e clear\t") == "Quiet day. [2JAll clear"
    assert len(clean_text("word " * 1000)) == MAX_CHARS


def test_health_probes_share_one_check_and_never_wait_long_on_a_busy_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flood makes the component check slow: a probe waits HEALTH_WAIT_S for it, then answers
    with the last (recent) result; probes together start one check, not one each."""
    import asyncio

    from serve_apps.api import health as health_module

    monkeypatch.setattr(health_module, "HEALTH_WAIT_S", 0.05)  # a knob, not a sleep

    class SlowStore:
        def __init__(self) -> None:
            self.calls = 0
            self.release = asyncio.Event()

        async def health(self) -> dict[str, dict[str, Any]]:
            self.calls += 1
            await self.release.wait()
            return {"store": {"ok": True, "detail": "", "check": self.calls}}

    async def scenario() -> None:
        store, checks = SlowStore(), health_module._Checks()
        first = asyncio.ensure_future(health_module.components_now(store, checks))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        assert not first.done()  # nothing answered yet: the first probe waits for the check
        store.release.set()
        assert (await first)["store"]["check"] == 1
        store.release.clear()  # the cluster gets busy: checks hang
        probes = [health_module.components_now(store, checks) for _ in range(5)]  # type: ignore[arg-type]
        answers = await asyncio.wait_for(asyncio.gather(*probes), 1.0)
        assert [a["store"]["check"] for a in answers] == [1] * 5  # the last check, at once
        assert store.calls == 2  # five probes, one new check between them
        monkeypatch.setattr(health_module, "HEALTH_STALE_S", 0.0)  # too old now: wait for it
        late = asyncio.ensure_future(health_module.components_now(store, checks))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        assert not late.done()
        store.release.set()
        assert (await late)["store"]["check"] == 2

    asyncio.run(scenario())
