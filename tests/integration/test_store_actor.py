"""The `event-store` actor on real Ray: SIGKILL mid-append, restart, nothing committed is lost."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient

from cluster.actors.store import get_store
from pipelines.config import Config
from pipelines.events import Event, utcnow
from pipelines.storage import EventStore
from serve_apps.api import RayStoreClient, build_api

pytestmark = pytest.mark.integration

CALLERS = 4
PER_CALLER = 100
KILL_AFTER = 100  # saves returned before the SIGKILL
JPEG = b"\xff\xd8\xff\xe0" + b"thumbnail" * 30 + b"\xff\xd9"


def make_event(caller: int, i: int) -> Event:
    return Event(
        camera_id=f"cam{caller}",
        camera_name=f"Camera {caller}",
        description=f"caller {caller} event {i}",
        objects_detected=("person",) if i % 2 else (),
        confidence=i % 101,
        source_type="file",
        timestamp=utcnow() - timedelta(seconds=i),
    )


def test_sigkill_mid_append_restarts_with_every_committed_event(
    ray_session: Any, tmp_path: Path
) -> None:
    import ray

    namespace = f"store-crash-{uuid.uuid4().hex[:8]}"
    config = Config.model_validate(
        {
            "ray": {"namespace": namespace},
            "cameras": [{"id": f"cam{k}", "source": "rtsp://cam.lan/s"} for k in range(CALLERS)],
            "storage": {"path": str(tmp_path / "store"), "parquet_flush_interval_s": 1},
            "mqtt": {"enabled": False},
            "correlation": {"window_s": 0},  # events compare equal field by field
        }
    )
    store = get_store(config)
    returned: list[Event] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    enough = threading.Event()

    def caller(k: int) -> None:
        try:
            for i in range(PER_CALLER):
                ev = make_event(k, i)
                saved = ray.get(store.save.remote(ev, JPEG), timeout=60)
                assert saved.event_id == ev.event_id
                with lock:
                    returned.append(ev)
                    if len(returned) >= KILL_AFTER:
                        enough.set()
        except BaseException as exc:  # reported below
            errors.append(exc)
            enough.set()

    try:
        pid = ray.get(store.pid.remote(), timeout=60)
        threads = [threading.Thread(target=caller, args=(k,)) for k in range(CALLERS)]
        for t in threads:
            t.start()
        assert enough.wait(60), "callers made no progress"
        assert not errors, errors
        os.kill(pid, signal.SIGKILL)  # saves are in flight right now
        killed_at = time.monotonic()
        with lock:
            committed_before_kill = list(returned)

        # The API answers again within 30 s (Ray restarts the actor; the client looks it up).
        api = TestClient(build_api(RayStoreClient(config), config), base_url="http://localhost")
        probe = committed_before_kill[0]
        while True:
            r = api.get(f"/api/v1/events/{probe.event_id}")
            if r.status_code == 200:
                break
            assert r.status_code == 503, (r.status_code, r.text)
            assert time.monotonic() - killed_at < 30, "API did not come back within 30 s"
            time.sleep(0.2)
        recovered_s = time.monotonic() - killed_at
        assert r.json()["description"] == probe.description
        assert ray.get(store.pid.remote(), timeout=30) != pid  # a new process reopened the file

        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors  # in-flight saves were retried on the restarted actor
        assert len(returned) == CALLERS * PER_CALLER

        # Every save that returned is stored exactly once, with its thumbnail.
        counts = ray.get(store.counts.remote(), timeout=30)
        assert counts["stored"] == CALLERS * PER_CALLER
        for ev in committed_before_kill[:: max(1, len(committed_before_kill) // 25)]:
            assert ray.get(store.get.remote(ev.event_id), timeout=30) == ev
            assert ray.get(store.thumbnail_bytes.remote(ev.event_id), timeout=30) == JPEG
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            r = api.get("/api/v1/events", params=params)
            assert r.status_code == 200
            body = r.json()
            seen += [e["event_id"] for e in body["events"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(e.event_id for e in returned)
        print(f"API back {recovered_s:.1f} s after SIGKILL")  # shown with -s
        ray.get(store.close.remote(), timeout=60)
    finally:
        ray.kill(store, no_restart=True)

    # The file on disk, opened by this process now the actor is gone: everything is there.
    reopened = EventStore(tmp_path / "store")
    try:
        assert reopened.counts()["stored"] == CALLERS * PER_CALLER
    finally:
        reopened.close()
    # Parquet exported across the crash (every second, and on close): each event exactly once.
    glob = tmp_path / "store" / "parquet" / "**" / "*.parquet"
    n, distinct = duckdb.sql(
        f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{glob}', "
        "hive_partitioning=true)"
    ).fetchall()[0]
    assert n == distinct == CALLERS * PER_CALLER
