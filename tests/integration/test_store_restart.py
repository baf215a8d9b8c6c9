"""Restarts lose and duplicate nothing, on the shared Ray cluster with the real actors.

- The event-store actor killed while a camera saves: the camera keeps every analysed event in
  its bounded outbox and retries; once a store runs again the outbox drains, every segment is
  stored, none dropped.
- A camera actor killed mid-file: Ray restarts it, it replays the file, and its derived event ids
  make the replay idempotent: one row per motion window in DuckDB and no event id twice on MQTT.
- events.duckdb corrupted while the run was down: the store rebuilds from Parquet and starts;
  nothing published before is published again.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import paho.mqtt.client as mqtt
import pytest

from pipelines.config import Config
from pipelines.samples import generate_sample_video
from tests.support.mosquitto import Mosquitto
from tests.support.openai_server import FakeOpenAI, paced
from tests.support.ray_cluster import camera_status
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.heavy(30)]

WINDOWS = [(1.0 + 2 * k, 1.8 + 2 * k) for k in range(8)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("restart-clips")
    return generate_sample_video(folder / "yard.mp4", seconds=18, motion_windows=WINDOWS, seed=9)


@pytest.fixture(scope="module")
def vlm(ray_session: object) -> Iterator[FakeOpenAI]:
    """The `vlm` app over a local OpenAI-compatible server answering after 1 s."""
    from ray import serve

    from pipelines.config import VLMConfig
    from serve_apps.vlm import build_vlm_app

    server = FakeOpenAI(paced(delay_s=1.0))
    config = VLMConfig(
        backend="openai",
        model="slow",
        base_url=server.base_url,
        num_cpus=0.1,
        max_batch_size=4,
        image_size=96,
    )
    serve.run(build_vlm_app(config), name="vlm", route_prefix=None)
    try:
        yield server
    finally:
        serve.delete("vlm")
        server.close()


def make_config(tmp_path: Path, clip: Path, namespace: str, mqtt_port: int | None) -> Config:
    mqtt_cfg: dict[str, Any] = {"enabled": False}
    if mqtt_port is not None:
        mqtt_cfg = {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": namespace}
    return Config.model_validate(
        {
            "ray": {"namespace": namespace},
            "cameras": [
                {
                    "id": "yard",
                    "source": str(clip),
                    "detect_fps": 5,
                    "motion": {"end_after_s": 0.5},
                    "max_unsaved_events": 32,
                }
            ],
            "vlm": {"image_size": 96, "dedupe": {"enabled": False}},  # every segment: a call
            "storage": {"path": str(tmp_path / "store")},
            "mqtt": mqtt_cfg,
        }
    )


def status(actor: Any) -> dict[str, Any]:
    """The camera's status; {} while Ray restarts it (the call fails then)."""
    from ray.exceptions import RayActorError

    try:
        return camera_status(actor)
    except RayActorError:
        return {}


def close_store(store: Any) -> None:
    """Close the store (releasing the DuckDB file for the checks), then remove the actor."""
    import ray

    try:
        ray.get(store.close.remote(), timeout=60)
    finally:
        ray.kill(store, no_restart=True)


def stored_rows(config: Config) -> list[tuple[str, float]]:
    path = config.storage.path / "events.duckdb"
    with duckdb.connect(str(path), read_only=True) as db:
        return [
            (str(r[0]), float(r[1]))
            for r in db.execute("SELECT event_id, media_offset_s FROM events").fetchall()
        ]


class EventIds:
    """A real subscriber recording every event id (and when it arrived) on the event topic."""

    def __init__(self, port: int, topic: str) -> None:
        self.ids: list[str] = []
        self.late: list[tuple[str, str]] = []  # (timestamp, arrival) where timestamp > arrival
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._client.subscribe(topic, qos=1)
        assert subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        arrived = datetime.now(UTC)
        payload = json.loads(msg.payload)
        self.ids.append(payload["event_id"])
        stamped = datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
        if stamped > arrived:
            self.late.append((payload["timestamp"], arrived.isoformat()))

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def test_store_killed_while_cameras_save_loses_nothing(
    tmp_path: Path, clip: Path, vlm: FakeOpenAI
) -> None:
    import ray

    from cluster.actors.ingest import start_camera
    from cluster.actors.store import get_store

    config = make_config(tmp_path, clip, "restart-store", None)
    store = get_store(config)
    ray.get(store.counts.remote())
    camera = start_camera(config, "yard")
    try:
        wait_for(lambda: status(camera)["events"] >= 1, 120, "a first stored event")
        ray.kill(store, no_restart=True)  # the store is gone; saves fail from now on
        held = wait_for(
            lambda: (s := status(camera))["unsaved"] >= 2 and s["save_retrying"] and s,
            120,
            "the camera to hold unsaved events",
        )
        assert held["dropped"] == 0
        store = get_store(config)  # a store runs again (same DuckDB file)
        final = wait_for(lambda: (s := status(camera))["done"] and s, 120, "the outbox to drain")
    finally:
        ray.kill(camera, no_restart=True)
        close_store(store)
    assert final["unsaved"] == 0 and final["dropped"] == 0 and final["save_failures"] >= 1
    assert final["segments"] == len(WINDOWS) and final["merged_pending"] == 0
    rows = stored_rows(config)
    assert len(rows) == len(WINDOWS) == final["events"]
    assert sorted(round(offset) for _id, offset in rows) == [round(s) for s, _e in WINDOWS]


def test_camera_killed_mid_file_replays_without_duplicates(
    tmp_path: Path, clip: Path, vlm: FakeOpenAI, mosquitto: Mosquitto
) -> None:
    import ray

    from cluster.actors.ingest import start_camera
    from cluster.actors.publisher import get_publisher
    from cluster.actors.store import get_store

    config = make_config(tmp_path, clip, "restart-camera", mosquitto.port)
    subscriber = EventIds(mosquitto.port, "restart-camera/camera/+/event")
    store = get_store(config)
    publisher = get_publisher(config, store)
    wait_for(lambda: ray.get(publisher.status.remote())["connected"], 60, "MQTT connected")
    camera = start_camera(config, "yard")
    try:
        before = wait_for(
            lambda: (s := status(camera))["events"] >= 2 and not s["done"] and s,
            120,
            "some events stored, the file not done",
        )
        old_pid = status(camera)["pid"]
        ray.kill(camera, no_restart=False)  # a crash: Ray restarts the actor
        after = wait_for(
            lambda: (s := status(camera)).get("restarted") and s["done"] and s,
            180,
            "the restarted camera to finish the file",
        )
        assert status(camera)["pid"] != old_pid
        ray.get(publisher.flush.remote(30.0), timeout=60)
    finally:
        subscriber.stop()
        ray.kill(camera, no_restart=True)
        ray.get(publisher.shutdown.remote(), timeout=30)
        ray.kill(publisher, no_restart=True)
        close_store(store)
    assert after["already_stored"] >= before["events"]  # the replay found them stored
    rows = stored_rows(config)
    offsets = Counter(round(offset, 2) for _id, offset in rows)
    assert len(rows) == len(WINDOWS) and max(offsets.values()) == 1, offsets
    assert sorted(round(o) for o in offsets) == [round(s) for s, _e in WINDOWS]
    seen = Counter(subscriber.ids)
    assert seen and max(seen.values()) == 1, [i for i, n in seen.items() if n > 1]
    assert set(seen) == {event_id for event_id, _o in rows}
    assert not subscriber.late, subscriber.late  # no timestamp after its arrival


def test_a_corrupt_database_at_start_is_rebuilt_and_nothing_published_again(
    ray_session: object, tmp_path: Path, clip: Path, mosquitto: Mosquitto
) -> None:
    """events.duckdb corrupted while the run was down: the event-store actor moves it aside and
    rebuilds from Parquet (pipelines.storage.rebuild), the run's start-up calls answer, and the
    publisher, reading the feed from its acknowledged cursor, publishes none of them again."""
    import os

    import ray

    from cluster.actors.publisher import get_publisher
    from cluster.actors.store import get_store
    from pipelines.events import Event, utcnow
    from pipelines.storage import EventStore
    from tests.support.mqtt import Subscriber, kill_actors

    namespace = "rebuild"
    config = make_config(tmp_path, clip, namespace, mosquitto.port)
    earlier = EventStore(Path(config.storage.path))
    events = [
        Event(
            camera_id="yard",
            camera_name="Yard",
            description=f"a delivery, visit {i}",
            objects_detected=("person",),
            confidence=70,
            source_type="file",
            timestamp=utcnow(),  # inside the publisher's replay window
        )
        for i in range(5)
    ]
    earlier.append(events, {})
    earlier.mark_published([e.event_id for e in events])
    assert earlier.export_parquet() == 5
    earlier.close()
    db = Path(config.storage.path) / "events.duckdb"
    db.write_bytes(os.urandom(db.stat().st_size))

    sub = Subscriber(mosquitto.port, [f"{namespace}/camera/+/event"])
    try:
        store = get_store(config)
        counts = ray.get(store.counts.remote(), timeout=60)  # the run's first call: answered
        assert (counts["stored"], counts["unpublished"]) == (5, 0), counts
        publisher = get_publisher(config, store)
        wait_for(lambda: ray.get(publisher.status.remote())["connected"], 30, "MQTT connected")
        ray.get(publisher.flush.remote(10), timeout=30)  # the feed read to its end
        assert ray.get(publisher.status.remote())["published"] == 0
        assert not sub.messages, [m.topic for m in sub.messages]
        moved = [p.name for p in db.parent.iterdir() if p.name.startswith("events.duckdb.corrupt-")]
        assert len(moved) == 1, moved
    finally:
        sub.close()
        kill_actors(namespace)
