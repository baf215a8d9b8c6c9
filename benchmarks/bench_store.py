"""Store and API through the product: the `event-store` actor's group commit, the HTTP API
behind Ray Serve's proxy, and the Parquet export.

- events/s saved through the `event-store` actor from 8 camera outboxes (`SaveBuffer`, what a
  camera saves through: every event waiting goes in one `save_many.remote` group of ≤ 64), a
  backlog of --appends events, committed in groups by its single writer, vs raw DuckDB inserting
  the same rows as ready-made Arrow tables in groups of the same average size into the same
  schema (the two alternate for --rounds rounds; best of each); once without thumbnails (the
  ratio row) and once with 1280x720 JPEG thumbnails; the same 8 outboxes into a minimal store
  actor that only makes the rows and inserts them (the same calls, one commit at a time of every
  group waiting; no id lookup, correlation or bookkeeping); the same from 256 camera outboxes
  (a site of hundreds of cameras, each one event a minute: each event's correlation window holds
  dozens of other cameras' starts); and, beside it, one `save.remote(event, thumbnail)` call per
  event (`--concurrency` in flight) against its own raw baseline;
- `GET /api/v1/events?camera_id=…&limit=50` p50/p99 over HTTP through the Serve proxy (the
  `api` app over the `event-store` actor) with --events (1,000,000) stored events; the same
  query through the actor alone (no HTTP) beside it;
- Parquet export rows/s of `EventStore.export_parquet` (what the store actor's maintenance loop
  runs) over those rows vs raw DuckDB `COPY … TO` Parquet partitioned by day.

    .venv/bin/python benchmarks/bench_store.py [--quick] [--events 1000000] [--appends 20000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` when run as a script

from benchmarks.harness import (
    Row,
    Target,
    exit_on_sigterm,
    free_port,
    pct,
    quick_requested,
    ratio,
    start_ray,
    stop_ray,
    write_results,
)
from pipelines.config import Config
from pipelines.events import Event
from pipelines.storage import EventStore

CAMERAS = [f"cam{i}" for i in range(8)]
SITE = [f"cam{i}" for i in range(256)]  # a site of hundreds of cameras (the 256-outbox row)


def make_events(n: int, cameras: list[str] = CAMERAS) -> list[Event]:
    """n events of the cameras (by default the 8 of CAMERAS) ending now, each camera one a
    minute on average (a busy site: with 8 cameras another camera's event starts within the
    10 s correlation window about a third of the time; with 256, dozens do), in random order
    within a few seconds (deterministic)."""
    rng = random.Random(0)
    objs: list[tuple[str, ...]] = [("person",), ("vehicle",), ("animal", "person"), ()]
    end = datetime.now(UTC)
    return [
        Event(
            camera_id=cameras[i % len(cameras)],
            camera_name="Camera",
            description=f"A person walks past the gate ({i})",
            objects_detected=objs[i % 4],
            confidence=i % 101,
            source_type="rtsp",
            timestamp=end - timedelta(seconds=60 / len(cameras) * (n - i) + rng.uniform(0, 3)),
            analysis_mode="multi_frame",
            frame_count=12,
        )
        for i in range(n)
    ]


def config_for(path: Path, api_port: int = 8000) -> Config:
    """Eight rtsp cameras (never started), MQTT off, storage at path with the read cache off
    (the list row times a query per request; repeated questions: bench_search)."""
    return Config.model_validate(
        {
            "cameras": [{"id": c, "source": "rtsp://x/y"} for c in CAMERAS],
            "ray": {"namespace": f"bench-store-{path.name}"},
            "mqtt": {"enabled": False},
            "storage": {"path": str(path), "read_cache_events": 0},
            "api": {"host": "127.0.0.1", "port": api_port},
        }
    )


def _thumbnail() -> bytes:
    from pipelines.imaging import encode_jpeg
    from pipelines.samples import render_sample_frame, sample_background

    frame = render_sample_frame(
        sample_background((1280, 720)), 1.5, objects=2, motion_windows=[(1.0, 3.0)]
    )
    return encode_jpeg(frame, quality=85)


def _timed_saves(
    path: Path,
    events: list[Event],
    drive: Any,
    already: int = 0,
    *,
    store_of: Any = None,
    **extra: Any,
) -> dict:
    """A fresh `event-store` actor (over `already` stored events), or `store_of(path)`'s
    actor; `drive(store)` saves every event and returns the seconds it took; then the
    writer's counters, after checking each event was stored once."""
    import ray

    from cluster.actors.store import get_store

    store = store_of(path) if store_of else get_store(config_for(path))
    try:
        ray.get(store.counts.remote())
        elapsed = drive(store)
        stats = ray.get(store.writer_stats.remote())
        stored = ray.get(store.counts.remote())["stored"]
        ray.get(store.close.remote(), timeout=120)
    finally:
        ray.kill(store, no_restart=True)
    if stored != already + len(events):
        raise RuntimeError(f"stored {stored - already} of {len(events)}")
    return {
        "events_per_s": len(events) / elapsed,
        "seconds": elapsed,
        "group_commits": stats["batches"],
        "largest_group": stats["max_batch"],
        "mean_group": len(events) / max(1, stats["batches"]),
        **extra,
    }


def actor_appends(path: Path, events: list[Event], concurrency: int, thumb: bytes | None) -> dict:
    """Concurrent saves through the `event-store` actor until the last one returned."""
    import ray

    def drive(store: Any) -> float:
        t0 = time.perf_counter()
        pending: list[Any] = []
        for event in events:
            pending.append(store.save.remote(event, thumb))
            if len(pending) >= concurrency:
                _done, pending = ray.wait(pending, num_returns=len(pending) // 2)
        ray.get(pending, timeout=600)
        return time.perf_counter() - t0

    return _timed_saves(path, events, drive)


def outbox_appends(path: Path, events: list[Event], thumb: bytes | None, already: int = 0) -> dict:
    """A backlog through one camera outbox per camera (`SaveBuffer` → `save_many.remote`, as
    the camera actor saves) until every outbox is empty (into a store of `already` events)."""
    cameras = len({event.camera_id for event in events})
    return _timed_saves(
        path, events, lambda store: drain_outboxes(store, events, thumb), already, outboxes=cameras
    )


def drain_outboxes(store: Any, events: list[Event], thumb: bytes | None) -> float:
    """Put every event in its camera's outbox (`SaveBuffer`, saving through `store`'s
    `save_many` as the camera actor does); the seconds until every outbox is empty."""
    import asyncio

    from pipelines.camera.outbox import SaveBuffer
    from pipelines.storage.writer import answers_of

    async def drain() -> float:
        async def save_many(items: list[tuple[Event, bytes | None]]) -> list:
            return answers_of(items, await store.save_many.remote(items))  # as the camera does

        cameras = dict.fromkeys(event.camera_id for event in events)
        boxes = {c: SaveBuffer(c, save_many, max_events=len(events)) for c in cameras}
        t0 = time.perf_counter()
        for event in events:
            boxes[event.camera_id].put(event, thumb)
        for box in boxes.values():
            if not await box.wait_empty(600):
                raise TimeoutError(f"outbox {box.camera_id} not empty: {box.status()}")
        return time.perf_counter() - t0

    return asyncio.run(drain())


def _insert_only_actor() -> Any:
    """A minimal store behind the outboxes' calls: a Ray actor taking `save_many` as the
    `event-store` actor does (async, one commit at a time in a thread, of every group waiting)
    that only makes the rows (`_arrow_rows`) and inserts them (`insert_rows`, as `raw_appends`
    does): no id lookup, correlation, bookkeeping or read cache. Defined in a function so that
    it travels to the worker by value (`benchmarks` is not installed)."""
    import asyncio

    import ray

    class InsertOnly:
        def __init__(self, path: str) -> None:
            self._store = EventStore(Path(path))  # the product's schema; its connection
            # bounded by its callers: an outbox waits on one call at a time (≤ 64 events each)
            self._waiting: list[tuple[int, asyncio.Future]] = []
            self._events: list[Event] = []
            self._wake: asyncio.Event | None = None
            self._task: asyncio.Future | None = None
            self.batches = self.largest = 0

        async def save_many(self, items: list[tuple[Event, bytes | None]]) -> list:
            if self._wake is None:
                self._wake = asyncio.Event()
                self._task = asyncio.ensure_future(self._commits())
            done = asyncio.get_running_loop().create_future()
            self._events += [event for event, _ in items]
            self._waiting.append((len(items), done))
            self._wake.set()
            return await done

        async def _commits(self) -> None:
            assert self._wake is not None
            while True:
                await self._wake.wait()
                self._wake.clear()
                events, waiting = self._events, self._waiting
                self._events, self._waiting = [], []
                try:
                    await asyncio.to_thread(self._insert, events)
                except Exception as exc:  # each caller's save fails; the outboxes retry
                    for _n, done in waiting:
                        done.set_exception(exc)
                    continue
                self.batches, self.largest = self.batches + 1, max(self.largest, len(events))
                for n, done in waiting:
                    done.set_result([(None, False)] * n)  # each as sent, new (`replies`)

        def _insert(self, events: list[Event]) -> None:
            insert_rows(self._store.con, self._store._arrow_rows(events))
            self._store._seq += len(events)

        def writer_stats(self) -> dict[str, int]:
            return {"batches": self.batches, "max_batch": self.largest}

        def counts(self) -> dict[str, int]:
            rows = self._store.con.execute("SELECT count(*) FROM events").fetchall()
            return {"stored": int(rows[0][0])}

        def close(self) -> None:
            self._store.close()

    return ray.remote(num_cpus=0.05)(InsertOnly)  # the event-store actor's reservation


def insert_only_appends(path: Path, events: list[Event]) -> dict:
    """`outbox_appends` into `_insert_only_actor` instead of the `event-store` actor."""
    return _timed_saves(
        path,
        events,
        lambda store: drain_outboxes(store, events, None),
        store_of=lambda at: _insert_only_actor().remote(str(at)),
    )


def insert_rows(con: Any, table: Any) -> None:
    """One group as raw DuckDB inserts it: the Arrow table inserted by name in a transaction."""
    con.register("_b", table)
    con.execute("BEGIN TRANSACTION")
    con.execute("INSERT INTO events BY NAME SELECT * FROM _b")
    con.execute("COMMIT")
    con.unregister("_b")


def raw_appends(
    path: Path,
    events: list[Event],
    group: int,
    filled: tuple[Path, int] | None = None,
    thumb: bytes | None = None,
) -> dict:
    """The same rows as Arrow tables (built untimed) inserted by raw DuckDB, `group` at a time
    (`filled`: into a copy of that store's database, which holds that many events; `thumb`:
    each group's files written first, each fsynced, then their folder, as durable as ours)."""
    import os

    import duckdb

    already = filled[1] if filled else 0
    builder = EventStore(path / "builder")
    tables = []
    for i in range(0, len(events), group):
        builder._seq = already + i  # the seqs the product would give them
        tables.append(builder._arrow_rows(events[i : i + group]))
    builder.close()
    EventStore(path / "raw").close()  # the product's schema, migrations applied
    if filled:
        shutil.copyfile(filled[0] / "events.duckdb", path / "raw" / "events.duckdb")
    con = duckdb.connect(str(path / "raw" / "events.duckdb"))
    con.execute("SET TimeZone='UTC'")
    files = path / "raw" / "files"
    files.mkdir()
    t0 = time.perf_counter()
    for table in tables:
        if thumb is not None:
            for event_id in table.column("event_id").to_pylist():
                with open(files / f"{event_id}.jpg", "wb") as fh:
                    fh.write(thumb)
                    os.fsync(fh.fileno())
            folder = os.open(files, os.O_RDONLY)
            os.fsync(folder)
            os.close(folder)
        insert_rows(con, table)
    elapsed = time.perf_counter() - t0
    stored = con.execute("SELECT count(*) FROM events").fetchone()
    con.close()
    assert stored is not None and stored[0] == already + len(events)
    return {"events_per_s": len(events) / elapsed, "seconds": elapsed, "group": group}


def _alternate(
    tmp: Path, name: str, rounds: int, measure: Any, events: list[Event]
) -> tuple[dict, dict, list, list]:
    """`measure` (the product) and raw DuckDB at its mean group size, alternating; the best
    of each and every run."""
    ours, raws = [], []
    for k in range(rounds):
        ours.append(measure(tmp / f"{name}{k}"))
        group = max(1, round(ours[-1]["mean_group"]))
        raws.append(raw_appends(tmp / f"raw-{name}{k}", events, group))
    best = max(ours, key=lambda r: r["events_per_s"])
    return best, max(raws, key=lambda r: r["events_per_s"]), ours, raws


def _append_row(
    what: str, best: dict, raw: dict, n: int, rounds: int, target: Any, more: str = ""
) -> Row:
    return Row(
        "Store/API",
        what,
        "events/s",
        round(best["events_per_s"]),
        round(raw["events_per_s"]),
        "raw DuckDB Arrow insert, same rows and group size",
        ratio(best["events_per_s"], raw["events_per_s"]),
        target,
        detail={"actor": best, "raw": raw, "events": n, "rounds": rounds},
        note=f"{n} events, best of {rounds} alternating rounds; {best['group_commits']} group "
        f"commits, mean {best['mean_group']:.0f} and largest {best['largest_group']} saves{more}",
    )


def append_rows(tmp: Path, n: int, rounds: int, concurrency: int, raw_out: dict) -> list[Row]:
    """The append rows: through the outboxes and one call per event, each vs raw DuckDB
    (alternating), then the outboxes with thumbnails."""
    events = make_events(n)
    boxed, boxed_raw, boxed_runs, boxed_raws = _alternate(
        tmp, "outbox", rounds, lambda path: outbox_appends(path, events, None), events
    )
    floor, floor_raw, floor_runs, floor_raws = _alternate(
        tmp, "insert-only", rounds, lambda path: insert_only_appends(path, events), events
    )
    single, single_raw, single_runs, single_raws = _alternate(
        tmp, "single", rounds, lambda path: actor_appends(path, events, concurrency, None), events
    )
    site_events = make_events(n, SITE)
    site, site_raw, site_runs, site_raws = _alternate(
        tmp, "site", rounds, lambda path: outbox_appends(path, site_events, None), site_events
    )
    thumb, some = _thumbnail(), events[: max(200, n // 10)]
    thumbs = outbox_appends(tmp / "thumbs", some, thumb)
    thumbs_raw = raw_appends(tmp / "raw-thumbs", some, round(thumbs["mean_group"]), thumb=thumb)
    floor_ratio = ratio(floor["events_per_s"], floor_raw["events_per_s"])
    raw_out |= {
        "appends_outbox": boxed_runs,
        "appends_outbox_raw": boxed_raws,
        "appends_insert_only": floor_runs,
        "appends_insert_only_raw": floor_raws,
        "appends_actor": single_runs,
        "appends_raw": single_raws,
        "appends_site": site_runs,
        "appends_site_raw": site_raws,
        "appends_with_thumbnails": thumbs,
        "appends_with_thumbnails_raw": thumbs_raw,
    }
    return [
        _append_row(
            f"events/s saved through the `event-store` actor's group commit from {len(CAMERAS)} "
            "camera outboxes (`save_many` of every event waiting, ≤ 64 a call)",
            boxed,
            boxed_raw,
            n,
            rounds,
            Target("ratio", ">=", 0.5),
            f"; the minimal store actor below: ratio {floor_ratio}",
        ),
        _append_row(
            f"events/s saved as above from the same {len(CAMERAS)} outboxes into a minimal "
            "store actor: the same calls, each commit of every group waiting, only the rows made "
            "and inserted (no id lookup, correlation or bookkeeping)",
            floor,
            floor_raw,
            n,
            rounds,
            None,
        ),
        _append_row(
            f"events/s saved as above from {len(SITE)} camera outboxes, each camera one event a "
            "minute (correlation among dozens of other cameras' starts in each event's window)",
            site,
            site_raw,
            n,
            rounds,
            None,
        ),
        _append_row(
            f"events/s saved through the actor, one `save` call per event ({concurrency} "
            "in flight)",
            single,
            single_raw,
            n,
            rounds,
            None,
        ),
        Row(
            "Store/API",
            "events/s saved through the actor from the outboxes with a 1280x720 JPEG thumbnail "
            "each",
            "events/s",
            round(thumbs["events_per_s"]),
            round(thumbs_raw["events_per_s"]),
            "raw DuckDB Arrow insert of the same rows and group size, each group's files "
            "written and fsynced first",
            ratio(thumbs["events_per_s"], thumbs_raw["events_per_s"]),
            detail={"actor": thumbs, "raw": thumbs_raw},
            note=f"{len(some)} events of {len(thumb):,} bytes; thumbnail files written and "
            f"fsynced before the rows commit; {thumbs['group_commits']} group commits, mean "
            f"{thumbs['mean_group']:.0f}",
        ),
    ]


def filled_rows(tmp: Path, big: Path, n: int, appends: int, raw_out: dict) -> Row:
    """The outbox row again, into the store holding n events from before them (what a busy
    site's store holds after some months), vs raw DuckDB into a copy of the same database;
    run last (it adds to the big store)."""
    events = make_events(appends)
    raw_copy = tmp / "filled-copy"
    raw_copy.mkdir()
    shutil.copyfile(big / "events.duckdb", raw_copy / "events.duckdb")
    ours = outbox_appends(big, events, None, already=n)
    group = max(1, round(ours["mean_group"]))
    raw = raw_appends(tmp / "raw-filled", events, group, filled=(raw_copy, n))
    raw_out |= {"appends_outbox_filled": ours, "appends_outbox_filled_raw": raw}
    return _append_row(
        f"events/s saved from {len(CAMERAS)} camera outboxes as above, into a store already "
        f"holding {n:,} events",
        ours,
        raw,
        appends,
        1,
        None,
    )


def fill(path: Path, n: int, before_s: float = 0.0) -> float:
    """n rows straight into the product's schema with one SQL statement (setup, not measured),
    4 a second, the newest before_s seconds ago."""
    import duckdb

    EventStore(path).close()
    t0 = time.perf_counter()
    con = duckdb.connect(str(path / "events.duckdb"))
    con.execute("SET TimeZone='UTC'")
    con.execute(
        f"""INSERT INTO events BY NAME
        SELECT i + 1 AS seq, uuid()::VARCHAR AS event_id, 'cam' || (i % 8) AS camera_id,
               'Camera' AS camera_name, 'A person walks past the gate (' || i || ')' AS description,
               CASE i % 4 WHEN 0 THEN ['person'] WHEN 1 THEN ['vehicle']
                          WHEN 2 THEN ['animal', 'person'] ELSE []::VARCHAR[] END
                 AS objects_detected,
               (i % 101)::SMALLINT AS confidence, 'rtsp' AS source_type,
               now() - to_milliseconds(250 * ({n} - i) + {round(before_s * 1000)})
                 AS "timestamp",
               'multi_frame' AS analysis_mode, 12 AS frame_count, 0 AS merged_motion,
               now() AS stored_at, now() AS published_at
        FROM range({n}) t(i)"""
    )
    con.close()
    return time.perf_counter() - t0


def export_rows(path: Path, raw_out: dict) -> Row:
    """EventStore.export_parquet over the filled store vs raw DuckDB COPY to Parquet."""
    import duckdb

    store = EventStore(path)
    t0 = time.perf_counter()
    rows = store.export_parquet()
    ours_s = time.perf_counter() - t0
    store.close()
    copy_dir = path.parent / "raw-parquet"
    con = duckdb.connect(str(path / "events.duckdb"), read_only=True)
    t0 = time.perf_counter()
    con.execute(
        f"""COPY (SELECT *, CAST("timestamp" AS DATE) AS day FROM events)
        TO '{copy_dir}' (FORMAT parquet, PARTITION_BY (day))"""
    )
    raw_s = time.perf_counter() - t0
    con.close()
    shutil.rmtree(copy_dir, ignore_errors=True)
    raw_out["export"] = {"rows": rows, "seconds": ours_s, "raw_copy_seconds": raw_s}
    return Row(
        "Store/API",
        "Parquet export rows/s (`EventStore.export_parquet`, as the store's maintenance runs it)",
        "rows/s",
        round(rows / ours_s),
        round(rows / raw_s),
        "raw DuckDB COPY TO Parquet by day",
        ratio(raw_s, ours_s),
        Target("ratio", ">=", 0.6),
        detail=raw_out["export"],
        note=f"{rows:,} rows in {ours_s:.1f} s (atomic files, watermark)",
    )


def api_rows(path: Path, n: int, requests: int, port: int, raw_out: dict) -> list[Row]:
    """The list route over HTTP through the Serve proxy, and the actor's query alone."""
    import httpx
    import ray
    from ray import serve

    from cluster.actors.store import get_store
    from pipelines.naming import API_APP
    from serve_apps.api import build_api_app

    config = config_for(path, port)
    store = get_store(config)
    assert ray.get(store.counts.remote(), timeout=120)["stored"] == n
    serve.run(build_api_app(config), name=API_APP, route_prefix="/")
    url = f"http://127.0.0.1:{port}/api/v1/events"
    http, via_actor = [], []
    with httpx.Client(timeout=30) as client:
        for k in range(20 + requests):  # 20 warm-up requests: first touches of the blocks
            params = {"camera_id": CAMERAS[k % 8], "limit": 50}
            t0 = time.perf_counter()
            resp = client.get(url, params=params)
            if k >= 20:
                http.append((time.perf_counter() - t0) * 1000)
            assert resp.status_code == 200 and len(resp.json()["events"]) == 50, resp.text
    for k in range(requests):
        t0 = time.perf_counter()
        ray.get(store.query.remote(camera_id=CAMERAS[k % 8], limit=50))
        via_actor.append((time.perf_counter() - t0) * 1000)
    serve.delete(API_APP)
    ray.get(store.close.remote(), timeout=120)
    ray.kill(store, no_restart=True)
    detail = {
        "events": n,
        "requests": requests,
        "http_p50_ms": round(pct(http, 50), 2),
        "http_p99_ms": round(pct(http, 99), 2),
        "actor_query_p50_ms": round(pct(via_actor, 50), 2),
        "actor_query_p99_ms": round(pct(via_actor, 99), 2),
    }
    raw_out["api"] = detail
    return [
        Row(
            "Store/API",
            f"`GET /api/v1/events?camera_id=…&limit=50` p99 over HTTP via the Serve proxy, "
            f"{n:,} events",
            "ms",
            detail["http_p99_ms"],
            target=Target("ours", "<=", 50),
            detail=detail,
            note=f"p50 {detail['http_p50_ms']} ms over {requests} requests after 20 warm-up, "
            "the store's read cache off (each request a query); "
            f"the same query through the actor alone (no HTTP): p50 "
            f"{detail['actor_query_p50_ms']} ms, p99 {detail['actor_query_p99_ms']} ms",
        )
    ]


def main() -> None:
    """Run the three parts, write results/store.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=1_000_000, help="stored for the API")
    parser.add_argument("--appends", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    exit_on_sigterm()
    quick = quick_requested(args.quick)
    n = 100_000 if quick else args.events
    appends = 3000 if quick else args.appends
    rounds = 1 if quick else args.rounds
    started = time.time()
    raw: dict[str, Any] = {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        start_ray(4, serve_port=port)
        try:
            rows += append_rows(tmp, appends, rounds, args.concurrency, raw)
            big = tmp / "big"
            # history before the events filled_rows saves (they span 7.5 s each)
            raw["fill_seconds"] = round(fill(big, n, before_s=7.5 * appends + 3600), 2)
            rows.append(export_rows(big, raw))
            rows += api_rows(big, n, 60 if quick else args.requests, port, raw)
            rows.append(filled_rows(tmp, big, n, appends, raw))
        finally:
            stop_ray()
    write_results("store", rows, quick=quick, started=started, raw=raw)


if __name__ == "__main__":
    main()
