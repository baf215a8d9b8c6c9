"""Text search (`GET /api/v1/events?q=…`) at 1,000,000 stored events, through the product.

The events are seeded through the real store (`EventStore.append`, batches of 20,000 from a
fixed vocabulary of descriptions and objects, 8 cameras over 20 days). Then a mix of searches
(common and rare words, two words, an object name that descriptions rarely use, no match at all,
combined with a camera or a date filter, a second page by cursor), each `limit=50`, is timed:

- through the FastAPI app under uvicorn over HTTP (the same app Serve ingresses), in this
  process over the store (`LocalStoreClient`): p50/p99 — the row with the target p99 ≤ 100 ms;
- through Ray Serve's HTTP proxy, the `api` app over the `event-store` actor (as deployed),
  unless `--no-serve`: one client in sequence, then 16 concurrent clients (a thread each, its
  own connection) for the searches and for plain lists (a camera, an object, everything), each
  client running the mix `rounds` times after a shared warm-up round; all of that with the
  store's read cache off (each request a DuckDB query), then the concurrent clients again with
  it on, as deployed (no save meanwhile: a question asked before is answered from the cache),
  and the lists once more while events are saved through the store (each save a new answer);
- Serve's own floor, in the same cluster: a FastAPI ingress that answers every list with the
  bytes of one real 50-event answer from memory (no store, no query, no JSON encoding), behind
  the same proxy, with the same 16 clients and the API deployment's options: the least a
  request through Serve's proxy costs here, the baseline of the concurrent list row; and the
  same ingress asking an actor for those bytes once a request (the one Ray call the `api`
  makes of the `event-store` actor), its own row;
- baseline: the same filter as one raw DuckDB query on the same database (`contains(lower(
  description), ?) OR list_contains(objects_detected, ?)` per term, newest first, LIMIT 51),
  without HTTP or JSON. Ratio = baseline p99 / ours p99 (higher is better).

    .venv/bin/python benchmarks/bench_search.py [--quick] [--events 1000000] [--rounds 25]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    wait_port,
    write_results,
)
from pipelines.config import Config
from pipelines.events import Event
from pipelines.storage import EventStore
from pipelines.storage.schema import _SELECT_EVENT

CAMERAS = [f"cam{i}" for i in range(8)]
WHO = [
    ("A person", ("person",)),
    ("A woman in a red coat", ("person",)),
    ("A man with a dog", ("person", "animal")),
    ("A delivery driver with a package", ("person", "package")),
    ("A cat", ("animal",)),
    ("A red car", ("vehicle",)),
    ("A white van", ("vehicle",)),
    ("Two children on bikes", ("person",)),
    ("A courier in a yellow jacket", ("person", "package")),
    ("A fox", ("animal",)),
]
DOES = ["walks up to", "stands at", "leaves a box at", "runs past", "parks near", "looks at",
        "rings the bell at", "waits by", "turns around at", "stops at"]  # fmt: skip
WHERE = ["the front door", "the driveway", "the garage", "the garden gate", "the porch",
         "the mailbox", "the side path", "the fence", "the street", "the shed"]  # fmt: skip
END = datetime.now(UTC).replace(microsecond=0)  # within the store's retention


def searches(now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """(name, query parameters) of the mix, each limit=50."""
    return [
        ("common word", {"q": "person"}),
        ("two words", {"q": "red car"}),
        ("object name", {"q": "vehicle"}),  # descriptions say car/van: matched via objects
        ("rare words", {"q": "yellow fence"}),
        ("no match", {"q": "zebra"}),
        ("word + camera", {"q": "door", "camera_id": "cam3"}),
        ("word + since 7 days", {"q": "dog", "since": (now - timedelta(days=7)).isoformat()}),
        ("word + object", {"q": "porch", "object": "package"}),
    ]


def seed(path: Path, n: int, batch: int = 20_000) -> float:
    """n events through EventStore.append in batches; seconds taken."""
    rng = random.Random(14)
    step = timedelta(days=20) / n  # inside the store's 30-day retention
    store = EventStore(path)
    t0 = time.perf_counter()
    try:
        for start in range(0, n, batch):
            events = []
            for i in range(start, min(n, start + batch)):
                who, objects = WHO[rng.randrange(len(WHO))]
                text = f"{who} {rng.choice(DOES)} {rng.choice(WHERE)}"
                if i % 4 == 0:
                    text += f", seen {i % 89} times today"
                camera = CAMERAS[i % len(CAMERAS)]
                events.append(
                    Event(
                        camera_id=camera,
                        camera_name=camera.upper(),
                        description=text,
                        objects_detected=objects,
                        confidence=70,
                        source_type="rtsp",
                        timestamp=END - step * (n - i),
                    )
                )
            store.append(events)
    finally:
        store.close()
    return time.perf_counter() - t0


def config_for(path: Path, port: int, read_cache: bool = True) -> Config:
    """Eight cameras (never started), MQTT off, storage at path (the store's read cache at its
    default, or off), the API on port."""
    storage: dict[str, Any] = {"path": str(path)}
    if not read_cache:
        storage["read_cache_events"] = 0
    return Config.model_validate(
        {
            "cameras": [{"id": c, "source": "rtsp://x/y"} for c in CAMERAS],
            "ray": {"namespace": f"bench-search-{path.name}"},
            "mqtt": {"enabled": False},
            "storage": storage,
            # latency, not the limiter: 16 clients searching would meet the default 60 heavy
            # reads a minute (a site with many readers raises it the same way)
            "api": {"host": "127.0.0.1", "port": port, "heavy_reads_per_min": 60_000},
        }
    )


def lists() -> list[tuple[str, dict[str, Any]]]:
    """(name, query parameters) of plain list requests (no `q`), each limit=50."""
    return [
        ("a camera", {"camera_id": "cam3"}),
        ("an object", {"object": "vehicle"}),
        ("everything", {}),
    ]


def _cpu_by_stage() -> dict[str, float]:
    """CPU seconds used so far by each stage's processes (benchmarks.procs' stages; this
    process, the clients, as "clients")."""
    import os

    import psutil

    from benchmarks.procs import stage_of

    out: dict[str, float] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or [])
            times = proc.cpu_times()
        except psutil.Error:
            continue
        stage = "clients" if proc.pid == os.getpid() else stage_of(title)
        out[stage] = out.get(stage, 0.0) + times.user + times.system
    return out


def time_concurrent(
    url: str, mix: list[tuple[str, dict[str, Any]]], rounds: int, clients: int = 16
) -> dict[str, Any]:
    """Latencies (ms) of `clients` threads, each with its own connection, each running the
    mix `rounds` times at once, after one warm-up round; requests per second overall, and the
    CPU each stage's processes spent per request (ms) meanwhile."""
    import httpx

    with httpx.Client(timeout=60) as warm:
        for _name, params in mix:
            assert warm.get(url, params={**params, "limit": 50}).status_code == 200
    times: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)
    failures: list[str] = []

    def client_run() -> None:
        mine: list[float] = []
        with httpx.Client(timeout=60) as client:
            start.wait()
            for _ in range(rounds):
                for _name, params in mix:
                    t0 = time.perf_counter()
                    resp = client.get(url, params={**params, "limit": 50})
                    mine.append((time.perf_counter() - t0) * 1000)
                    if resp.status_code != 200:
                        failures.append(f"{resp.status_code}: {resp.text[:200]}")
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client_run) for _ in range(clients)]
    cpu_before = _cpu_by_stage()
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    cpu_after = _cpu_by_stage()
    assert not failures, failures[:3]
    cpu_ms = {
        stage: round((spent - cpu_before.get(stage, 0.0)) * 1000 / len(times), 2)
        for stage, spent in sorted(cpu_after.items(), key=lambda kv: -kv[1])
        if spent - cpu_before.get(stage, 0.0) > 0.01
    }
    return {
        "cpu_ms_per_request": cpu_ms,
        "clients": clients,
        "requests": len(times),
        "requests_per_s": round(len(times) / elapsed, 1),
        "p50_ms": round(pct(times, 50), 2),
        "p99_ms": round(pct(times, 99), 2),
        "max_ms": round(max(times), 2),
    }


def time_http(url: str, mix: list[tuple[str, dict[str, Any]]], rounds: int) -> dict[str, Any]:
    """Latencies (ms) of GET url?params for each search, `rounds` times after one warm-up
    round; a second page by cursor is timed too when the first has one."""
    import httpx

    times: list[float] = []
    per_search: dict[str, list[float]] = {}
    with httpx.Client(timeout=60) as client:
        for k in range(rounds + 1):
            for name, params in mix:
                t0 = time.perf_counter()
                resp = client.get(url, params={**params, "limit": 50})
                took = (time.perf_counter() - t0) * 1000
                assert resp.status_code == 200, resp.text
                cursor = resp.json()["next_cursor"]
                if cursor is not None and name in ("common word", "two words"):
                    t1 = time.perf_counter()
                    page = client.get(url, params={**params, "limit": 50, "cursor": cursor})
                    assert page.status_code == 200, page.text
                    if k:
                        times.append((time.perf_counter() - t1) * 1000)
                        per_search.setdefault(f"{name}, page 2", []).append(times[-1])
                if k:  # round 0 warms the caches
                    times.append(took)
                    per_search.setdefault(name, []).append(took)
    return {
        "requests": len(times),
        "p50_ms": round(pct(times, 50), 2),
        "p99_ms": round(pct(times, 99), 2),
        "max_ms": round(max(times), 2),
        "p99_by_search_ms": {name: round(pct(v, 99), 2) for name, v in per_search.items()},
    }


def time_raw(path: Path, mix: list[tuple[str, dict[str, Any]]], rounds: int) -> dict[str, Any]:
    """The same filters as single raw DuckDB queries (no HTTP, no JSON, no Event objects)."""
    import duckdb

    con = duckdb.connect(str(path / "events.duckdb"), read_only=True)
    con.execute("SET TimeZone='UTC'")
    times: list[float] = []
    try:
        for k in range(rounds + 1):
            for _name, params in mix:
                where, values = [], []
                for term in params["q"].lower().split():
                    where.append(
                        "(contains(lower(description), ?) OR list_contains(objects_detected, ?))"
                    )
                    values += [term, term]
                if "camera_id" in params:
                    where.append("camera_id = ?")
                    values.append(params["camera_id"])
                if "object" in params:
                    where.append("list_contains(objects_detected, ?)")
                    values.append(params["object"])
                if "since" in params:
                    where.append('"timestamp" >= ?')
                    values.append(datetime.fromisoformat(params["since"]))
                sql = (
                    f"SELECT {_SELECT_EVENT} FROM events WHERE {' AND '.join(where)} "
                    'ORDER BY "timestamp" DESC, event_id DESC LIMIT 51'
                )
                t0 = time.perf_counter()
                con.execute(sql, values).fetchall()
                if k:
                    times.append((time.perf_counter() - t0) * 1000)
    finally:
        con.close()
    return {
        "queries": len(times),
        "p50_ms": round(pct(times, 50), 2),
        "p99_ms": round(pct(times, 99), 2),
    }


def via_app(path: Path, mix: list[tuple[str, dict[str, Any]]], rounds: int) -> dict[str, Any]:
    """The FastAPI app under uvicorn (a thread here) over the store in this process."""
    import uvicorn

    from serve_apps.api import build_api
    from serve_apps.api.local import LocalStoreClient

    port = free_port()
    config = config_for(path, port, read_cache=False)
    store = EventStore(path, read_cache_events=0)  # every request a query
    server = uvicorn.Server(
        uvicorn.Config(
            build_api(LocalStoreClient(store, config), config),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_port(port)
        return time_http(f"http://127.0.0.1:{port}/api/v1/events", mix, rounds)
    finally:
        server.should_exit = True
        thread.join(30)
        store.close()


SAVES_PER_S = 5  # a busy site: a few dozen cameras' events; every save is a new list answer


@contextmanager
def saving(store: Any, per_s: float) -> Iterator[list[int]]:
    """Save an event through the `event-store` actor per_s times a second until the block
    ends; yields [how many were saved] (filled in at the end)."""
    import ray

    stop, saved = threading.Event(), [0]

    def loop() -> None:
        while not stop.wait(1 / per_s):
            event = Event(
                camera_id=CAMERAS[saved[0] % len(CAMERAS)],
                camera_name="CAM",
                description="A person walks up to the front door",
                objects_detected=("person",),
                confidence=70,
                source_type="rtsp",
                timestamp=datetime.now(UTC),
            )
            ray.get(store.save.remote(event, None), timeout=60)
            saved[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield saved
    finally:
        stop.set()
        thread.join(60)


def _wait_ok(url: str, timeout_s: float = 120) -> None:
    """Until the list answers 200 (a restarted store actor is found again)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while httpx.get(url, params={"limit": 1}, timeout=30).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200")
        time.sleep(0.5)


def cpu_text(run: dict[str, Any]) -> str:
    """A run's CPU per request by stage, as the notes print it."""
    return ", ".join(f"{k} {v}" for k, v in run["cpu_ms_per_request"].items())


def serve_floor(
    port: int, body: bytes, options: dict[str, Any], rounds: int, hop: bool = False
) -> dict[str, Any]:
    """16 clients (`time_concurrent`, the list mix) against a FastAPI Serve ingress that
    answers every request with `body`, deployed with the `api` deployment's `options`, behind
    the same proxy: from memory, or (`hop`) from an actor with the `event-store` actor's
    reservation, asked once a request (the one Ray call the api makes of the store)."""
    import ray
    from fastapi import FastAPI, Response
    from ray import serve

    app = FastAPI()

    class Answers:
        async def get(self) -> bytes:
            return body

    @serve.deployment(name="floor", **options)
    @serve.ingress(app)
    class Floor:
        def __init__(self, answers: Any) -> None:
            self._answers = answers

        @app.get("/api/v1/events")
        async def events(self) -> Response:
            got = body if self._answers is None else await self._answers.get.remote()
            return Response(got, media_type="application/json")

    answers = ray.remote(num_cpus=0.05)(Answers).remote() if hop else None
    serve.run(Floor.bind(answers), name="floor", route_prefix="/floor")
    try:
        return time_concurrent(
            f"http://127.0.0.1:{port}/floor/api/v1/events", lists(), max(2, rounds // 2)
        )
    finally:
        serve.delete("floor")
        if answers is not None:
            ray.kill(answers)


def via_serve(
    path: Path, n: int, mix: list[tuple[str, dict[str, Any]]], rounds: int
) -> dict[str, Any]:
    """The `api` app behind Serve's HTTP proxy over the `event-store` actor (as deployed):
    first with the store's read cache off (every request a DuckDB query), then the concurrent
    clients again with it on (the default: a question asked again before the next save is
    answered from the cache)."""
    import httpx
    import ray
    from ray import serve

    from cluster.actors.store import get_store
    from pipelines.naming import API_APP, STORE_ACTOR
    from serve_apps.api import build_api_app
    from serve_apps.api.app import deployment_options

    def list_named(namespace: str) -> list[dict[str, Any]]:
        return [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == namespace
        ]

    port = free_port()
    start_ray(4, serve_port=port)
    try:
        config = config_for(path, port, read_cache=False)
        store = get_store(config)
        assert ray.get(store.counts.remote(), timeout=120)["stored"] == n
        ray.get(store.flush.remote(), timeout=300)  # its first Parquet export: not timed
        serve.run(build_api_app(config), name=API_APP, route_prefix="/")
        url = f"http://127.0.0.1:{port}/api/v1/events"
        result = time_http(url, mix, rounds)
        result["concurrent_search_uncached"] = time_concurrent(url, mix, max(2, rounds // 5))
        result["concurrent_list_uncached"] = time_concurrent(url, lists(), max(2, rounds // 2))
        ray.get(store.close.remote(), timeout=120)
        ray.kill(store, no_restart=True)
        while STORE_ACTOR in {a["name"] for a in list_named(config.ray.namespace)}:
            time.sleep(0.2)
        store = get_store(config_for(path, port))  # the default: read cache on
        _wait_ok(url)
        result["concurrent_search"] = time_concurrent(url, mix, max(2, rounds // 5))
        result["concurrent_list"] = time_concurrent(url, lists(), max(2, rounds // 2))
        result["read_cache"] = ray.get(store.writer_stats.remote(), timeout=60)["read_cache"]
        with saving(store, SAVES_PER_S) as saved:
            busy = time_concurrent(url, lists(), max(2, rounds // 2))
        busy["saved"] = saved[0]
        busy["read_cache"] = ray.get(store.writer_stats.remote(), timeout=60)["read_cache"]
        result["concurrent_list_saving"] = busy
        answer = httpx.get(url, params={**lists()[0][1], "limit": 50}, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["events"]) == 50
        options = deployment_options(config_for(path, port))
        result["serve_floor"] = serve_floor(port, answer.content, options, rounds)
        result["serve_floor"]["body_bytes"] = len(answer.content)
        result["serve_floor_hop"] = serve_floor(port, answer.content, options, rounds, hop=True)
        ray.get(store.close.remote(), timeout=120)
        return result
    finally:
        stop_ray()


def rows_for(
    n: int, app: dict[str, Any], raw: dict[str, Any], serve: dict[str, Any] | None
) -> list[Row]:
    base = raw["p99_ms"]
    what = "one raw DuckDB query, same filter (no HTTP/JSON)"
    out = [
        Row(
            "Search",
            f"`GET /api/v1/events?q=…&limit=50` p99, FastAPI app over HTTP, {n:,} events",
            "ms",
            app["p99_ms"],
            baseline=base,
            baseline_what=what,
            ratio=ratio(base, app["p99_ms"]),
            target=Target("ours", "<=", 100),
            detail={"app": app, "raw": raw},
            note=f"p50 {app['p50_ms']} ms over {app['requests']} requests (8 searches + 2 "
            f"second pages, after a warm-up round; the store's read cache off, so each is a "
            f"query); raw DuckDB p50 {raw['p50_ms']} ms",
        )
    ]
    if serve is not None:
        out.append(
            Row(
                "Search",
                f"`GET /api/v1/events?q=…&limit=50` p99 via Serve's proxy and the "
                f"`event-store` actor, {n:,} events",
                "ms",
                serve["p99_ms"],
                baseline=base,
                baseline_what=what,
                ratio=ratio(base, serve["p99_ms"]),
                target=Target("ours", "<=", 100),
                detail={"serve": serve},
                note=f"p50 {serve['p50_ms']} ms over {serve['requests']} requests, the read "
                "cache off (each a query)",
            )
        )
        cache = serve["read_cache"]
        least = serve["serve_floor"]
        floor: dict[str, Any] = {
            "baseline": least["p99_ms"],
            "baseline_what": "Serve's floor: a FastAPI ingress answering the same 16 clients "
            f"with one real 50-event answer ({least['body_bytes']:,} bytes) from memory, same "
            "proxy and deployment options",
            "ratio": ratio(least["p99_ms"], serve["concurrent_list"]["p99_ms"]),
        }
        floor_note = (
            f"; Serve's floor: p50 {least['p50_ms']} ms, {least['requests_per_s']} requests/s, "
            f"CPU ms per request: {cpu_text(least)}"
        )
        for key, what in (
            ("concurrent_list", "`GET /api/v1/events?camera_id=…|object=…&limit=50` (lists)"),
            ("concurrent_search", "`GET /api/v1/events?q=…&limit=50` (searches)"),
        ):
            for cached in (True, False):
                run = serve[key if cached else f"{key}_uncached"]
                with_floor = cached and key == "concurrent_list"
                how = (
                    "the store's read cache on (the default; no save during the run, so "
                    "every question after its first ask is a hit)"
                    if cached
                    else "the read cache off (`storage.read_cache_events` 0: each a query)"
                )
                out.append(
                    Row(
                        "Search",
                        f"{what} p99 with {run['clients']} concurrent clients via Serve's proxy, "
                        f"{n:,} events, {how}",
                        "ms",
                        run["p99_ms"],
                        **(floor if with_floor else {}),
                        target=Target("ours", "<=", 100) if cached else None,
                        detail=({key: run, "read_cache": cache} if cached else {key: run})
                        | ({"serve_floor": least} if with_floor else {}),
                        note=f"p50 {run['p50_ms']} ms, max {run['max_ms']} ms over "
                        f"{run['requests']} requests, {run['requests_per_s']} requests/s in all"
                        + (
                            f"; read cache after both runs: {cache['hits']} hits, "
                            f"{cache['misses']} misses"
                            if cached
                            else ""
                        )
                        + f"; CPU ms per request: {cpu_text(run)}"
                        + (floor_note if with_floor else ""),
                    )
                )
        busy = serve["concurrent_list_saving"]
        busy_cache = busy["read_cache"]
        out.append(
            Row(
                "Search",
                f"`GET /api/v1/events?camera_id=…|object=…&limit=50` (lists) p99 with "
                f"{busy['clients']} concurrent clients via Serve's proxy, {n:,} events, the read "
                f"cache on, while {SAVES_PER_S} events a second are saved through the store",
                "ms",
                busy["p99_ms"],
                detail={"concurrent_list_saving": busy},
                note=f"p50 {busy['p50_ms']} ms, max {busy['max_ms']} ms over {busy['requests']} "
                f"requests, {busy['requests_per_s']} requests/s; {busy['saved']} saves; read "
                f"cache since the store started: {busy_cache['hits']} hits, "
                f"{busy_cache['misses']} misses, {busy_cache['joined']} shared another's read",
            )
        )
        hop = serve["serve_floor_hop"]
        out.append(
            Row(
                "Search",
                f"Serve's floor with the store's hop: p99 of the lists' {hop['clients']} "
                "concurrent clients against a FastAPI ingress that asks an actor for the same "
                "answer's bytes (one Ray call a request, as the `api` asks the `event-store` "
                "actor; nothing else), same proxy and deployment options",
                "ms",
                hop["p99_ms"],
                detail={"serve_floor_hop": hop},
                note=f"p50 {hop['p50_ms']} ms, max {hop['max_ms']} ms over {hop['requests']} "
                f"requests, {hop['requests_per_s']} requests/s in all; CPU ms per request: "
                f"{cpu_text(hop)} (the floor's ingress and answering actor count as ray)",
            )
        )
    return out


def main() -> None:
    """Seed, time the searches, write results/search.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--no-serve", action="store_true", help="skip the Ray Serve path")
    args = parser.parse_args()
    exit_on_sigterm()
    quick = quick_requested(args.quick)
    n = 100_000 if quick else args.events
    rounds = 5 if quick else args.rounds
    started = time.time()
    mix = searches(END)
    raw_out: dict[str, Any] = {"events": n, "rounds": rounds, "searches": dict(mix)}
    with tempfile.TemporaryDirectory() as tmp_name:
        path = Path(tmp_name) / "store"
        raw_out["seed_seconds"] = round(seed(path, n), 1)
        app = via_app(path, mix, rounds)
        raw = time_raw(path, mix, rounds)
        serve = None if args.no_serve else via_serve(path, n, mix, rounds)
        raw_out.update({"app": app, "raw_duckdb": raw, "serve": serve})
        rows = rows_for(n, app, raw, serve)
    write_results("search", rows, quick=quick, started=started, raw=raw_out)


if __name__ == "__main__":
    main()
