"""Noise-control fields in the store and the API: zones (and `zone=`), reused, filtered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import jsonschema
from fastapi.testclient import TestClient

from pipelines.events import Event, event_schema, utcnow
from pipelines.storage import MIGRATIONS, EventStore
from pipelines.storage.schema import schema_version
from serve_apps.api import build_api
from tests.support.store_client import LocalStoreClient, make_config

NOW = utcnow().replace(microsecond=0)


def event(i: int, **kw: object) -> Event:
    fields: dict[str, object] = {
        "camera_id": "front",
        "camera_name": "Front",
        "description": f"event {i}",
        "objects_detected": ("vehicle",),
        "confidence": 40,
        "source_type": "rtsp",
        "timestamp": NOW - timedelta(seconds=100 - i),
    }
    fields.update(kw)
    return Event(**fields)  # type: ignore[arg-type]


def test_zones_reuse_and_filter_are_stored_and_queryable(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "data")
    try:
        first = event(0, zones=("driveway",), confidence_source="tokens")
        reused = event(
            1,
            zones=("driveway", "gate"),
            provider_used="reused",
            reused_from=first.event_id,
            confidence_source="tokens",
        )
        filtered = event(2, objects_detected=("package",), filtered=True)
        plain = event(3)
        store.append([first, reused, filtered, plain])
        assert store.get(reused.event_id) == reused  # every new field round-trips
        assert store.get(filtered.event_id) == filtered  # stored: the API can show it
        by_zone = [e.event_id for e in store.query(zone="driveway")[0]]
        assert by_zone == [reused.event_id, first.event_id]
        assert [e.event_id for e in store.query(zone="gate")[0]] == [reused.event_id]
        assert store.query(zone="porch")[0] == []
        # a filtered event is never handed out for publishing, and counted apart
        assert filtered.event_id not in {e.event_id for e in store.unpublished_events(3600)}
        assert filtered.event_id not in {e.event_id for e in store.events_since(3600)}
        assert store.counts() == {"stored": 4, "published": 0, "unpublished": 3, "filtered": 1}
        store.mark_published([first.event_id])
        assert store.counts()["unpublished"] == 2
    finally:
        store.close()


def test_api_filters_by_zone_and_shows_the_new_fields(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "data")
    try:
        first = event(0, zones=("driveway",))
        reused = event(1, provider_used="reused", reused_from=first.event_id)
        filtered = event(2, zones=("front path",), filtered=True)
        store.append([first, reused, filtered])
        config = make_config()
        client = TestClient(
            build_api(LocalStoreClient(store, config), config), base_url="http://localhost"
        )
        body = client.get("/api/v1/events", params={"zone": "driveway"}).json()
        assert [e["event_id"] for e in body["events"]] == [first.event_id]
        assert body["events"][0]["zones"] == ["driveway"]
        spaced = client.get("/api/v1/events", params={"zone": "front path"}).json()
        assert [e["event_id"] for e in spaced["events"]] == [filtered.event_id]
        one = client.get(f"/api/v1/events/{reused.event_id}").json()
        jsonschema.validate(one, event_schema())
        assert one["provider_used"] == "reused" and one["reused_from"] == first.event_id
        assert "zones" not in one and "filtered" not in one
        for bad in ("../x", "", "a" * 65, "zone;drop"):
            assert client.get("/api/v1/events", params={"zone": bad}).status_code == 422
    finally:
        store.close()


def test_a_database_from_before_the_noise_controls_is_migrated(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    con = duckdb.connect(str(data / "events.duckdb"))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    older = [(v, sql) for v, sql in MIGRATIONS if v < 4]
    for version, statements in older:
        for sql in statements:
            con.execute(sql)
        con.execute("INSERT INTO schema_version VALUES (?)", [version])
    old_id = str(uuid.uuid4())
    con.execute(
        "INSERT INTO events (seq, event_id, camera_id, camera_name, description, "
        'objects_detected, confidence, source_type, "timestamp", frame_count, merged_motion, '
        "stored_at) VALUES (1, ?, 'front', 'Front', 'old', ['person'], 70, 'rtsp', ?, 3, 0, ?)",
        [
            old_id,
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 1, 1, tzinfo=UTC),
        ],
    )
    con.close()
    store = EventStore(data)
    try:
        assert schema_version(store.con) == MIGRATIONS[-1][0]
        old = store.get(old_id)
        assert old is not None and old.zones is None and old.filtered is False
        new = event(5, zones=("gate",), filtered=True, reused_from=old_id)
        assert store.append([new]) == 1
        assert store.get(new.event_id) == new
        assert store.counts()["filtered"] == 1
    finally:
        store.close()


def test_a_day_with_files_from_before_the_new_columns_still_compacts(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = EventStore(tmp_path / "data")
    try:
        day = datetime(2026, 1, 2, 12, tzinfo=UTC)
        store.append(
            [event(i, timestamp=day + timedelta(seconds=i), zones=("gate",)) for i in range(3)]
        )
        assert store.export_parquet() == 3
        folder = store.parquet_dir / "date=2026-01-02"
        (new_file,) = folder.glob("part-*.parquet")
        old = pq.read_table(new_file).drop_columns(
            ["zones", "reused_from", "filtered", "confidence_source"]
        )
        old = old.set_column(0, "event_id", pa.array([str(uuid.uuid4()) for _ in range(3)]))
        pq.write_table(old, folder / "part-000000000900-000000000902-old00000.parquet")
        assert store.compact_parquet(max_files=1) == 1
        (merged,) = folder.glob("part-*.parquet")
        table = pq.read_table(merged)
        assert table.num_rows == 6
        assert table.column("zones").to_pylist().count(None) == 3
    finally:
        store.close()
