"""Store benchmark: batch append vs raw DuckDB Arrow insert, API list latency, Parquet export.

Usage: python benchmarks/bench_store.py [N_EVENTS]   (default 1,000,000)
Writes benchmarks/results/store.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from pipelines.config import Config
from pipelines.events import Event
from pipelines.storage import MIGRATIONS, EventStore
from serve_apps.api import build_api

BATCH = 1000
CAMERAS = [f"cam{i}" for i in range(8)]
BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_events(n: int) -> list[Event]:
    objs = [("person",), ("car",), ("dog", "person"), ()]
    return [
        Event(
            camera_id=CAMERAS[i % len(CAMERAS)],
            camera_name="Camera",
            description=f"A person walks past the gate ({i})",
            objects_detected=objs[i % 4],
            confidence=i % 101,
            source_type="rtsp",
            timestamp=BASE + timedelta(milliseconds=250 * i),
            analysis_mode="multi_frame",
            frame_count=12,
        )
        for i in range(n)
    ]


class LocalClient:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def query(self, **f):  # type: ignore[no-untyped-def]
        return self.store.query(**f)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    out: dict[str, object] = {
        "n_events": n,
        "batch": BATCH,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "cpus": os.cpu_count(),
        "loadavg_at_start": round(os.getloadavg()[0], 2),  # other work on the machine
    }
    t = time.perf_counter()
    events = make_events(n)
    out["build_events_s"] = round(time.perf_counter() - t, 2)
    with tempfile.TemporaryDirectory() as tmp:
        store = EventStore(Path(tmp) / "store")
        # Raw DuckDB: the same rows as ready-made Arrow tables into the same schema, no
        # dedupe/lock/model work. Built up front (not timed), with the seqs the store will use.
        raw = duckdb.connect(str(Path(tmp) / "raw.duckdb"))
        raw.execute("SET TimeZone='UTC'")
        for sql in MIGRATIONS[0][1]:
            raw.execute(sql)
        tables = []
        for i in range(0, n, BATCH):
            store._seq = i
            tables.append(store._arrow_rows(events[i : i + BATCH]))
        store._seq = 0
        # Interleaved batch by batch, so both see the same machine load and table sizes.
        store_s = raw_s = 0.0
        for k, i in enumerate(range(0, n, BATCH)):
            t = time.perf_counter()
            store.append(events[i : i + BATCH], {})
            store_s += time.perf_counter() - t
            t = time.perf_counter()
            raw.register("_b", tables[k])
            raw.execute("INSERT INTO events SELECT * FROM _b ON CONFLICT DO NOTHING")
            raw.unregister("_b")
            raw_s += time.perf_counter() - t
        assert store.counts()["stored"] == n
        raw.close()
        del tables
        out["append_events_per_s"] = round(n / store_s)
        out["raw_duckdb_arrow_events_per_s"] = round(n / raw_s)
        out["append_vs_raw_ratio"] = round(raw_s / store_s, 3)

        from fastapi.testclient import TestClient

        config = Config.model_validate(
            {"cameras": [{"id": c, "source": "rtsp://x/y"} for c in CAMERAS]}
        )
        client = TestClient(build_api(LocalClient(store), config))  # type: ignore[arg-type]
        for k in range(20):  # warm-up: first touches of the table's blocks are not the steady state
            client.get("/api/v1/events", params={"camera_id": CAMERAS[k % 8], "limit": 50})
        lat = []
        for k in range(200):
            t = time.perf_counter()
            r = client.get("/api/v1/events", params={"camera_id": CAMERAS[k % 8], "limit": 50})
            lat.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200 and len(r.json()["events"]) == min(50, n // 8)
        lat.sort()
        out["api_list_p50_ms"] = round(statistics.median(lat), 2)
        out["api_list_p99_ms"] = round(lat[int(len(lat) * 0.99) - 1], 2)
        # The store query alone (no HTTP, no payload building): where the API time goes.
        qlat = []
        for k in range(200):
            t = time.perf_counter()
            store.query(camera_id=CAMERAS[k % 8], limit=50)
            qlat.append((time.perf_counter() - t) * 1000)
        qlat.sort()
        out["store_query_p50_ms"] = round(statistics.median(qlat), 2)
        out["store_query_p99_ms"] = round(qlat[int(len(qlat) * 0.99) - 1], 2)

        t = time.perf_counter()
        rows = store.export_parquet()
        export_s = time.perf_counter() - t
        out["parquet_export_rows"] = rows
        out["parquet_export_rows_per_s"] = round(rows / export_s)
        store.close()
    out["loadavg_at_end"] = round(os.getloadavg()[0], 2)
    path = Path(__file__).parent / "results" / "store.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
