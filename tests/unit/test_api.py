"""The HTTP API over a real EventStore (tmp_path) through an in-process async StoreClient."""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.auth import sign_thumbnail_token
from pipelines.events import Event, event_schema
from pipelines.storage import EventStore
from serve_apps.api import build_api
from tests.support.store_client import LocalStoreClient, make_config

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
JPEG = b"\xff\xd8\xff\xe0" + b"thumb" * 20 + b"\xff\xd9"
KEY = "s3cret-key-long-enough"  # api.api_key needs 16+ characters


def make_event(i: int, camera: str = "front") -> Event:
    return Event(
        camera_id=camera,
        camera_name=camera.title(),
        description=f"event {i}",
        objects_detected=("person",) if i % 2 else ("car",),
        confidence=50,
        source_type="rtsp",
        timestamp=BASE + timedelta(seconds=i // 3),
        analysis_mode="single_frame",
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    store = EventStore(tmp_path_factory.mktemp("api") / "data")
    events = [make_event(i, "front" if i % 4 else "door") for i in range(321)]
    store.append(events, {e.event_id: JPEG for e in events[:10]})
    # a file next to the thumbnails dir that traversal would reach
    (store.path / "secret.jpg").write_bytes(b"SECRET")
    yield {"store": store, "events": events}
    store.close()


def client_for(world: dict[str, Any], api_key: str | None = None) -> tuple[TestClient, Any]:
    config = make_config(api_key)
    local = LocalStoreClient(world["store"], config)
    return TestClient(build_api(local, config), base_url="http://localhost"), local


@pytest.fixture(scope="module")
def open_client(world: dict[str, Any]) -> TestClient:
    return client_for(world)[0]


def test_get_event_matches_mqtt_payload(open_client: TestClient, world: dict[str, Any]) -> None:
    ev = world["events"][5]
    r = open_client.get(f"/api/v1/events/{ev.event_id}")
    assert r.status_code == 200
    body = r.json()
    jsonschema.validate(body, event_schema())
    assert body["event_id"] == ev.event_id
    assert body["thumbnail_url"] == (
        f"http://cam.example:8000/api/v1/events/{ev.event_id}/thumbnail"
    )
    assert body["analysis_mode"] == "single_frame" and "provider_used" not in body
    upper = open_client.get(f"/api/v1/events/{ev.event_id.upper()}")
    assert upper.status_code == 200 and upper.json()["event_id"] == ev.event_id
    missing = open_client.get(f"/api/v1/events/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json() == {"detail": "event not found"}


def test_thumbnail_served_as_jpeg(open_client: TestClient, world: dict[str, Any]) -> None:
    ev = world["events"][0]
    r = open_client.get(f"/api/v1/events/{ev.event_id}/thumbnail")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg" and r.content == JPEG
    none = open_client.get(f"/api/v1/events/{world['events'][50].event_id}/thumbnail")
    assert none.status_code == 404 and none.json()["detail"]


def test_list_filters_and_limits(open_client: TestClient, world: dict[str, Any]) -> None:
    r = open_client.get("/api/v1/events")
    body = r.json()
    assert r.status_code == 200 and len(body["events"]) == 50 and body["next_cursor"]
    stamps = [e["timestamp"] for e in body["events"]]
    assert stamps == sorted(stamps, reverse=True)
    door = open_client.get("/api/v1/events", params={"camera_id": "door", "limit": 500}).json()
    assert len(door["events"]) == 81 and door["next_cursor"] is None
    assert {e["camera_id"] for e in door["events"]} == {"door"}
    people = open_client.get("/api/v1/events", params={"object": "person", "limit": 500}).json()
    assert len(people["events"]) == 160
    window = open_client.get(
        "/api/v1/events",
        params={
            "since": "2026-03-01T12:00:10Z",
            "until": "2026-03-01T12:00:19+00:00",
            "limit": 500,
        },
    ).json()
    assert len(window["events"]) == 30
    naive = open_client.get(
        "/api/v1/events", params={"since": "2026-03-01T12:00:10", "until": "2026-03-01T12:00:19"}
    ).json()
    assert len(naive["events"]) == 30
    for bad in [
        {"limit": 0},
        {"limit": 501},
        {"limit": "x"},
        {"since": "yesterday"},
        {"camera_id": "../etc"},
        {"camera_id": "A" * 70},
        {"object": "a'; DROP"},
        {"cursor": "x" * 300},
    ]:
        resp = open_client.get("/api/v1/events", params=bad)
        assert resp.status_code == 422, bad
        assert "detail" in resp.json()
    junk = open_client.get("/api/v1/events", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert junk.status_code == 400 and junk.json()["detail"]


def test_pagination_every_event_exactly_once(
    open_client: TestClient, world: dict[str, Any]
) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": 17}
        if cursor:
            params["cursor"] = cursor
        body = open_client.get("/api/v1/events", params=params).json()
        seen += [e["event_id"] for e in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 321 and set(seen) == {e.event_id for e in world["events"]}


TRAVERSALS = [
    "..",
    "%2e%2e",
    "..%2f..%2fsecret.jpg",
    "%2e%2e%2f%2e%2e%2fsecret.jpg",
    "%252e%252e%252fsecret.jpg",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    "..%5c..%5csecret.jpg",
    "abc%00def",
    "%00",
    "x" * 5000,
    "12345678-1234-1234-1234-1234567890ab%00",
    "12345678-1234-1234-1234-1234567890ab%2f..",
    "%C0%AE%C0%AE",
    "%ff%fe",
]


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_path_traversal_never_500_never_escapes(open_client: TestClient, bad: str) -> None:
    for url in (
        f"/api/v1/events/{bad}",
        f"/api/v1/events/{bad}/thumbnail",
        f"/api/v1/cameras/{bad}/ring",
    ):
        method = open_client.post if url.endswith("/ring") else open_client.get
        r = method(url)
        assert 400 <= r.status_code < 500, (url, r.status_code)
        assert r.headers["content-type"].startswith("application/json"), url
        assert b"SECRET" not in r.content and b"root:" not in r.content


def test_cameras_and_ring(world: dict[str, Any]) -> None:
    client, local = client_for(world)
    cams = client.get("/api/v1/cameras").json()["cameras"]
    assert [c["camera_id"] for c in cams] == ["front", "door"]
    assert client.post("/api/v1/cameras/door/ring").status_code == 202
    assert local.rings == ["door"]
    r = client.post("/api/v1/cameras/front/ring")
    assert r.status_code == 409 and "doorbell" in r.json()["detail"]
    assert client.post("/api/v1/cameras/garage/ring").status_code == 404
    assert client.post("/api/v1/cameras/Bad..Id/ring").status_code == 404
    assert client.get("/api/v1/cameras/door/ring").status_code == 405
    assert local.rings == ["door"]


def test_health_200_and_503(world: dict[str, Any]) -> None:
    client, local = client_for(world, api_key=KEY)
    r = client.get("/api/v1/health")  # no key needed
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["why"] == []
    local.down.add("mqtt")
    r = client.get("/api/v1/health", headers={"Authorization": f"Bearer {KEY}"})
    body = r.json()
    assert r.status_code == 503 and body["components"]["mqtt"]["ok"] is False
    assert body["why"] == ["mqtt: down"]


def test_auth_required_when_key_set(world: dict[str, Any]) -> None:
    client, _ = client_for(world, api_key=KEY)
    ev = world["events"][1]
    urls = [
        "/api/v1/events",
        f"/api/v1/events/{ev.event_id}",
        f"/api/v1/events/{ev.event_id}/thumbnail",
        "/api/v1/cameras",
    ]
    for url in urls:
        assert client.get(url).status_code == 401, url
        assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(url, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
        ok = client.get(url, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200, url
    assert client.post("/api/v1/cameras/door/ring").status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.post("/api/v1/cameras/door/ring", headers=auth).status_code == 202
    # the payload's thumbnail_url carries a working token
    body = client.get(f"/api/v1/events/{ev.event_id}", headers=auth).json()
    assert "?token=" in body["thumbnail_url"]
    path = body["thumbnail_url"].removeprefix("http://cam.example:8000")
    r = client.get(path)
    assert r.status_code == 200 and r.content == JPEG
    # the OpenAPI document stays reachable; the interactive pages (CDN scripts) are off by default
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert "/api/v1/events" in client.get("/openapi.json").json()["paths"]


def test_auth_off_everything_open(open_client: TestClient, world: dict[str, Any]) -> None:
    ev = world["events"][2]
    for url in [
        "/api/v1/events",
        f"/api/v1/events/{ev.event_id}",
        f"/api/v1/events/{ev.event_id}/thumbnail",
        "/api/v1/cameras",
        "/api/v1/health",
    ]:
        assert open_client.get(url).status_code == 200, url
    body = open_client.get(f"/api/v1/events/{ev.event_id}").json()
    assert "token=" not in body["thumbnail_url"]


def test_signed_thumbnail_token(world: dict[str, Any]) -> None:
    client, _ = client_for(world, api_key=KEY)
    ev, other = world["events"][3], world["events"][4]
    url = f"/api/v1/events/{ev.event_id}/thumbnail"
    good = sign_thumbnail_token(ev.event_id, KEY, 60)
    assert client.get(url, params={"token": good}).status_code == 200
    expired = sign_thumbnail_token(ev.event_id, KEY, 60, now=time.time() - 3600)
    r = client.get(url, params={"token": expired})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    assert client.get(url, params={"token": tampered}).status_code == 403
    for_other = sign_thumbnail_token(other.event_id, KEY, 60)
    assert client.get(url, params={"token": for_other}).status_code == 403
    wrong_key = sign_thumbnail_token(ev.event_id, "other-key", 60)
    assert client.get(url, params={"token": wrong_key}).status_code == 403
    longer = good.split(".")[0] + "9." + good.split(".")[1]
    assert client.get(url, params={"token": longer}).status_code == 403
    for junk in ["", ".", "abc", "9" * 40 + ".x", "\x00", "1.\u00e9"]:
        assert client.get(url, params={"token": junk}).status_code in (403, 422), junk
    # a token is not an API key elsewhere
    ev_url = f"/api/v1/events/{ev.event_id}"
    assert client.get(ev_url, params={"token": good}).status_code == 401


def test_unexpected_error_is_json_500_without_internals(world: dict[str, Any]) -> None:
    config = make_config()

    class Broken(LocalStoreClient):
        async def get(self, event_id: str) -> Event | None:
            raise RuntimeError("/secret/internal/path exploded")

    client = TestClient(
        build_api(Broken(world["store"], config), config),
        raise_server_exceptions=False,
        base_url="http://localhost",
    )
    r = client.get(f"/api/v1/events/{uuid.uuid4()}")
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    assert b"secret" not in r.content


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
_segment = st.one_of(
    _text,
    st.sampled_from(
        [
            "..",
            "%2e%2e%2f",
            "%252e%252e%252f",
            "%00",
            "/etc/passwd",
            "door",
            "front",
            str(uuid.UUID(int=7)),
        ]
    ),
    st.uuids().map(str),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segment=_segment,
    params=st.dictionaries(
        st.sampled_from(["camera_id", "since", "until", "object", "limit", "cursor", "token"]),
        st.one_of(
            _text,
            st.integers(-(10**20), 10**20).map(str),
            st.datetimes().map(lambda d: d.isoformat()),
            st.sampled_from(
                [
                    "9999-12-31T23:59:59-23:59",
                    "0001-01-01T00:00:00+23:59",
                    "2026-03-01T12:00:00Z",
                    "-1",
                    "1e309",
                    "NaN",
                ]
            ),
        ),
        max_size=4,
    ),
    route=st.sampled_from(["events", "event", "thumbnail", "cameras", "ring", "health"]),
)
def test_fuzz_routes_never_500(
    world: dict[str, Any], segment: str, params: dict[str, str], route: str
) -> None:
    client = _fuzz_client(world)
    url = {
        "events": "/api/v1/events",
        "event": f"/api/v1/events/{segment}",
        "thumbnail": f"/api/v1/events/{segment}/thumbnail",
        "cameras": "/api/v1/cameras",
        "ring": f"/api/v1/cameras/{segment}/ring",
        "health": "/api/v1/health",
    }[route]
    method = client.post if route == "ring" else client.get
    try:
        r = method(url, params=params, headers={"Authorization": f"Bearer {KEY}"})
    except Exception as exc:  # httpx refusing to build the URL is not a server response
        if "Invalid" in type(exc).__name__ or isinstance(exc, (ValueError, UnicodeError)):
            return
        raise
    assert r.status_code < 500, (url, params, r.status_code, r.text[:200])
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/json")


_FUZZ: dict[int, TestClient] = {}


def _fuzz_client(world: dict[str, Any]) -> TestClient:
    key = id(world)
    if key not in _FUZZ:
        _FUZZ.clear()
        _FUZZ[key] = client_for(world, api_key=KEY)[0]
    return _FUZZ[key]


def _calls(dependant: Dependant) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _on_the_loop(call: Any) -> bool:
    # a coroutine or async-generator function, or an instance with an async __call__ (the
    # fastapi.security schemes)
    return (
        inspect.iscoroutinefunction(call)
        or inspect.isasyncgenfunction(call)
        or inspect.iscoroutinefunction(type(call).__call__)
    )


def test_every_route_and_dependency_runs_on_the_event_loop() -> None:
    """FastAPI runs a plain `def` endpoint or dependency in a worker thread: a thread hop per
    request, and CPU the API spends under load."""
    config = make_config("k" * 32)
    app = build_api(LocalStoreClient(None, config), config)  # type: ignore[arg-type]
    # the routes as served: their dependencies with those of the routers that include them
    routes = [
        ctx for ctx in iter_route_contexts(app.routes) if isinstance(ctx.original_route, APIRoute)
    ]
    assert len(routes) >= 12
    sync = {
        f"{route.path}: {getattr(call, '__qualname__', call)}"
        for route in routes
        for call in _calls(route.dependant)
        if not _on_the_loop(call)
    }
    assert not sync
