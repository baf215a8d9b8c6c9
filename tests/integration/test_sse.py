"""GET /api/v1/events/stream (Server-Sent Events) over real HTTP.

* Through Ray Serve during a real run (camera actor → `vlm` app → `event-store` actor): every
  saved event arrives, in saving order, with the list route's JSON; a reconnect with
  Last-Event-ID yields exactly the missed ones; the key is required; a client that never reads
  is cut off at the connection's byte bound (Serve's proxy has no back-pressure).
* Under uvicorn (which has back-pressure), without a key: filters, bounded replay in several
  resumes, an unknown Last-Event-ID, and a never-reading client cut off when its bounded queue
  overflows while the hub's memory stays within the bound.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.config import Config
from pipelines.events import Event, utcnow
from pipelines.samples import generate_sample_video
from pipelines.storage import EventStore
from serve_apps.api import build_api
from serve_apps.api.local import LocalStoreClient
from tests.support.openai_server import FakeOpenAI, Reply
from tests.support.ray_cluster import camera_status
from tests.support.uvicorn_server import Uvicorn
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.heavy(30)]

KEY = "sse-test-key-0123456789"
VLM_ANSWER = json.dumps(
    {"description": "A person carries a box to the door", "objects": ["person"], "confidence": 0.8}
)


# ---------------------------------------------------------------- helpers


@dataclass
class Reader:
    """A real SSE client in a thread: records every message; ends at `stop` (next heartbeat)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    status: int | None = None
    ended: bool = False
    heartbeats: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=60) as response:
                self.status = response.status_code
                message: dict[str, Any] = {"event": "message"}
                for line in response.iter_lines():
                    if self.stop.is_set():
                        return
                    if line.startswith(":"):
                        self.heartbeats += line.startswith(": heartbeat")
                        continue
                    if not line:
                        if "data" in message:
                            self.messages.append(message)
                        message = {"event": "message"}
                        continue
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    message[name] = json.loads(value) if name == "data" else value
        finally:
            self.ended = True

    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["event"] == "message"]

    def ids(self) -> list[str]:
        return [m["id"] for m in self.events()]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()


def catch_up(
    url: str, last_id: str, count: int, headers: dict[str, str] | None = None
) -> list[str]:
    """The ids of the next `count` events after last_id, resuming as the server asks."""
    ids: list[str] = []
    while len(ids) < count:
        reader = Reader(url, {**(headers or {}), "Last-Event-ID": last_id})
        need = count - len(ids)
        wait_for(lambda r=reader, n=need: r.ended or len(r.events()) >= n, 120, "events")
        reader.close()
        ids += reader.ids()
        resume = [m for m in reader.messages if m["event"] == "resume"]
        assert ids and (resume or len(ids) >= count)
        last_id = resume[-1]["data"]["last_event_id"] if resume else ids[-1]
        assert last_id == ids[-1]
    return ids


def make_event(i: int, camera: str = "front", text: str = "A red car", pad: int = 0) -> Event:
    return Event(
        camera_id=camera,
        camera_name=camera.title(),
        description=f"{text} {i}" + " x" * pad,
        objects_detected=("vehicle",) if "car" in text else ("person",),
        confidence=70,
        source_type="rtsp",
        timestamp=utcnow() - timedelta(seconds=1),
    )


def local_app(tmp_path: Path, stream: dict[str, Any]) -> tuple[EventStore, Uvicorn]:
    store = EventStore(tmp_path / "data")
    config = Config.model_validate(
        {
            "cameras": [{"id": "front", "source": "f.mp4"}, {"id": "drive", "source": "d.mp4"}],
            "api": {"base_url": "http://cam.example:8000", "stream": stream},
        }
    )
    return store, Uvicorn(build_api(LocalStoreClient(store, config), config))


def hub_status(base: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = httpx.get(f"{base}/api/v1/events/stream/status", headers=headers or {}, timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# ---------------------------------------------------------------- uvicorn, no key


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[EventStore, Uvicorn]]:
    stream = {"heartbeat_s": 1, "poll_s": 0.05, "replay_max": 5, "queue_size": 64}
    store, server = local_app(tmp_path, stream)
    try:
        yield store, server
    finally:
        server.stop()
        store.close()


def test_live_filters_and_exact_resume_without_key(local: tuple[EventStore, Uvicorn]) -> None:
    store, server = local
    stream = f"{server.url}/api/v1/events/stream"
    everything = Reader(stream)
    filtered = Reader(f"{stream}?camera_id=drive&q=RED")
    wait_for(lambda: hub_status(server.url)["clients"] == 2, 30, "two clients")
    wait_for(lambda: everything.heartbeats >= 1, 30, "a heartbeat while idle (heartbeat_s 1)")
    batch_a = [
        make_event(i, "drive" if i % 3 else "front", "A red car" if i % 2 else "A man")
        for i in range(10)
    ]
    store.append(batch_a)
    wait_for(lambda: len(everything.events()) >= 10, 30, "the first batch live")
    assert everything.status == 200 and everything.ids() == [e.event_id for e in batch_a]
    wanted = [e.event_id for e in batch_a if e.camera_id == "drive" and "red" in e.description]
    wait_for(lambda: len(filtered.events()) >= len(wanted), 30, "the filtered events")
    assert filtered.ids() == wanted
    for message in everything.events()[:3]:  # the same JSON as the list route (and MQTT)
        got = httpx.get(f"{server.url}/api/v1/events/{message['id']}").json()
        assert message["data"] == got
    everything.close()
    filtered.close()

    # 12 saved while away; replay_max 5: three connections, each resuming where the last ended
    batch_b = [make_event(100 + i) for i in range(12)]
    store.append(batch_b)
    last, got = batch_a[-1].event_id, []
    for expected_len in (5, 5, 2):
        reader = Reader(stream, {"Last-Event-ID": last})
        wait_for(lambda r=reader, n=expected_len: len(r.events()) >= n, 30, "the missed events")
        if expected_len == 5:
            wait_for(lambda r=reader: r.ended, 30, "the server to end the stream")
            resume = reader.messages[-1]
            assert resume["event"] == "resume" and resume["data"]["reason"] == "replay_limit"
            assert resume["data"]["last_event_id"] == reader.ids()[-1]
        got += reader.ids()
        last = reader.ids()[-1]
        if expected_len == 2:  # replay done: this stream carries on live
            late = make_event(999)
            store.append([late])
            wait_for(lambda r=reader: len(r.events()) == 3, 30, "a live event after replay")
            assert reader.ids()[-1] == late.event_id
        reader.close()
    assert got == [e.event_id for e in batch_b]  # exactly the missed ones, once each, in order

    unknown = Reader(stream, {"Last-Event-ID": str(uuid.uuid4())})
    wait_for(lambda: unknown.messages, 30, "the gap notice")
    assert unknown.messages[0]["event"] == "gap"
    store.append([fresh := make_event(1000)])
    wait_for(lambda: unknown.ids() == [fresh.event_id], 30, "live after the gap")
    unknown.close()
    nine_terms = " ".join(f"w{i}" for i in range(9))
    assert httpx.get(stream, params={"q": nine_terms}).status_code == 400


def test_never_reading_client_is_cut_off_with_bounded_queue(tmp_path: Path) -> None:
    stream = {"heartbeat_s": 1, "poll_s": 0.05, "queue_size": 8, "replay_max": 100_000}
    store, server = local_app(tmp_path, stream)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(lambda: hub_status(server.url)["clients"] == 1, 30, "the silent client")
        events = [make_event(i, pad=600) for i in range(6000)]  # ~1.5 kB each: 9 MB
        for start in range(0, len(events), 500):
            store.append(events[start : start + 500])
        state = wait_for(
            lambda: (s := hub_status(server.url))["overflows"] == 1 and s["clients"] == 0 and s,
            60,
            "the silent client to be cut off",
        )
        assert state["max_queue_depth"] <= 8  # never more than the bound held for it
        assert state["dropped_events"] >= 1
        hub = server.app.state.stream_hub
        assert not hub.subscribers  # nothing of it is left in the hub
        # what did reach the socket is a gap-free prefix, then the connection is closed
        sock.settimeout(30)
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
        sock.close()
        got = [
            line[4:]
            for line in data.decode(errors="replace").splitlines()
            if line.startswith("id: ")
        ]
        assert 0 < len(got) < len(events)
        assert got == [e.event_id for e in events[: len(got)]]
        # it resumes from the last event it received and gets exactly the rest (following
        # the server's `resume` messages: each connection carries at most max_bytes)
        rest = catch_up(f"{server.url}/api/v1/events/stream", got[-1], len(events) - len(got))
        assert rest == [e.event_id for e in events[len(got) :]]
    finally:
        server.stop()
        store.close()


# ---------------------------------------------------------------- Ray Serve, a real run, a key


@pytest.fixture(scope="module")
def cluster(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import ray
    from ray import serve

    from cluster.actors.store import get_store
    from serve_apps.api import build_api_app
    from serve_apps.vlm import build_vlm_app

    root = tmp_path_factory.mktemp("sse")
    chat = FakeOpenAI(Reply(VLM_ANSWER))
    clip = generate_sample_video(
        root / "porch.mp4", seconds=9, motion_windows=[(1, 2.5), (4, 5.5), (7, 8.5)], seed=4
    )
    config = Config.model_validate(
        {
            "ray": {"namespace": "sse-tests"},
            "cameras": [
                {
                    "id": "porch",
                    "source": str(clip),
                    "detect_fps": 5,
                    "motion": {"end_after_s": 0.5},
                }
            ],
            "vlm": {
                "backend": "openai",
                "model": "ok",
                "base_url": chat.base_url,
                "num_cpus": 0.1,
                "max_batch_size": 4,
                "image_size": 96,
            },
            "storage": {"path": str(root / "data")},
            "mqtt": {"enabled": False},
            "api": {
                "api_key": KEY,
                "stream": {"heartbeat_s": 1, "poll_s": 0.1, "max_bytes": 64 * 1024},
            },
        }
    )
    serve.run(build_vlm_app(config.vlm), name="vlm", route_prefix=None)
    store = get_store(config)
    ray.get(store.counts.remote())
    serve.run(build_api_app(config), name="sse-api", route_prefix="/sse")
    base = f"http://127.0.0.1:{ray_session.serve_port}/sse"
    cameras: list[Any] = []
    try:
        yield {"config": config, "store": store, "base": base, "cameras": cameras}
    finally:
        for actor in cameras:
            ray.kill(actor, no_restart=True)
        serve.delete("sse-api")
        serve.delete("vlm")
        ray.kill(store, no_restart=True)
        chat.close()


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_real_run_through_serve_with_key(cluster: dict[str, Any]) -> None:
    import ray

    from cluster.actors.ingest import start_camera

    base, store = cluster["base"], cluster["store"]
    stream = f"{base}/api/v1/events/stream"
    assert httpx.get(stream, timeout=30).status_code == 401
    bad = httpx.get(stream, headers={"Authorization": "Bearer wrong-key-0123456789"}, timeout=30)
    assert bad.status_code == 401 and bad.json() == {"detail": "missing or wrong API key"}
    assert httpx.get(f"{base}/api/v1/events/stream/status", timeout=30).status_code == 401

    page = httpx.get(f"{base}/", timeout=30)  # the review page, through Serve
    assert page.status_code == 200 and 'data-auth="key"' in page.text

    reader = Reader(stream, AUTH)
    wait_for(lambda: hub_status(base, AUTH)["clients"] == 1, 60, "the stream to connect")
    camera = start_camera(cluster["config"], "porch")
    cluster["cameras"].append(camera)
    wait_for(lambda: camera_status(camera)["done"], 180, "the camera run")
    saved = ray.get(store.events_after.remote(0, None, 1000))
    assert len(saved) >= 2  # the clip has three motion windows
    wait_for(lambda: len(reader.events()) >= len(saved), 60, "every saved event on the stream")
    assert reader.ids() == [event.event_id for _seq, event in saved]
    for message in reader.events():
        listed = httpx.get(f"{base}/api/v1/events/{message['id']}", headers=AUTH, timeout=30)
        expected = listed.json()
        # thumbnail tokens are signed per response (their expiry moves): compare the rest
        assert (
            message["data"]["thumbnail_url"].split("?")[0]
            == expected.pop("thumbnail_url").split("?")[0]
        )
        assert {k: v for k, v in message["data"].items() if k != "thumbnail_url"} == expected
        assert message["data"]["description"] == "A person carries a box to the door"
    reader.close()

    # saved while nobody listens, the way a camera saves: exactly these on resume
    missed = [make_event(i, "porch", "A person waves") for i in range(3)]
    for event in missed:  # one after another, as a camera's outbox saves (three calls at
        ray.get(store.save.remote(event, None))  # once may be committed in any order)
    again = Reader(stream, {**AUTH, "Last-Event-ID": reader.ids()[-1]})
    wait_for(lambda: len(again.events()) >= 3, 60, "the missed events")
    assert again.ids() == [e.event_id for e in missed]
    again.close()

    never_reading_client_hits_the_byte_bound(base, store)


def never_reading_client_hits_the_byte_bound(base: str, store: Any) -> None:
    """Serve's proxy buffers without back-pressure, so the connection's byte bound (64 KiB
    here) ends the stream of a client that never reads; the hub forgets the client."""
    import ray

    before = hub_status(base, AUTH)["ended_byte_limit"]
    sock = socket.create_connection(("127.0.0.1", int(base.split(":")[2].split("/")[0])))
    request = (
        f"GET /sse/api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}"
    )
    sock.sendall(f"{request}\r\n\r\n".encode())
    wait_for(lambda: hub_status(base, AUTH)["clients"] == 1, 60, "the silent client")
    bulk = [make_event(i, "porch", "A person", pad=400) for i in range(150)]  # ~1 kB each
    ray.get([store.save.remote(event, None) for event in bulk])
    wait_for(
        lambda: (s := hub_status(base, AUTH))["clients"] == 0 and s["ended_byte_limit"] > before,
        60,
        "the byte bound to end the silent stream",
    )
    sock.settimeout(30)
    data = b""
    while b"event: resume" not in data:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    sock.close()
    assert b"byte_limit" in data


def test_eight_open_streams_leave_every_other_route_answering(cluster: dict[str, Any]) -> None:
    """Each open stream holds one of the replica's request slots for hours: with Serve's
    default of 5 slots, 8 streams made every other route hang (> 30 s). Slots are now sized
    from `api.stream.max_clients` plus ones only short requests can use."""
    import ray

    base, store = cluster["base"], cluster["store"]
    stream = f"{base}/api/v1/events/stream"
    before = hub_status(base, AUTH)["clients"]
    readers = [Reader(stream, AUTH) for _ in range(8)]
    try:
        wait_for(lambda: hub_status(base, AUTH)["clients"] == before + 8, 60, "8 open streams")
        found = ray.get(store.events_after.remote(0, None, 1))
        if not found:  # run alone: the module's first test starts the camera that saves them
            made = Event(
                camera_id="porch",
                camera_name="Porch",
                description="a parcel on the step",
                objects_detected=("package",),
                confidence=70,
                source_type="file",
                timestamp=utcnow(),
            )
            ray.get(store.save.remote(made, None))
            found = ray.get(store.events_after.remote(0, None, 1))
        [(_seq, event)] = found
        routes = [
            "/api/v1/cameras",
            "/api/v1/events?limit=5",
            "/api/v1/health",
            f"/api/v1/events/{event.event_id}",
            "/api/v1/events/stream/status",
            "/",
        ]
        for route in routes:  # a starved route would not answer at all: a bound, not a timing
            answer = httpx.get(f"{base}{route}", headers=AUTH, timeout=5)
            # (health says 503 when a part is degraded: the camera here has finished its clip)
            ok = (200, 503) if route == "/api/v1/health" else (200,)
            assert answer.status_code in ok, (route, answer.status_code)
        status = hub_status(base, AUTH)
        assert status["max_ongoing_requests"] == status["max_clients"] + 64
        assert status["short_request_slots"] == 64
    finally:
        for reader in readers:
            reader.close()
