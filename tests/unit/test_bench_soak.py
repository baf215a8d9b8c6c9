"""The soak benchmark's verdict: what counts as lost or repeated, and the RSS slope."""

from __future__ import annotations

from typing import Any

from benchmarks.bench_soak import RssLog, check


def _result(**overrides: Any) -> dict[str, Any]:
    rows = [(f"e{i}", "cam0", True, 100.0 + i, i) for i in range(5)]  # saving order
    base = {
        "rows": rows,
        "received": {f"e{i}": "cam0" for i in range(5)},
        "messages": 5,
        "parquet_ids": [f"e{i}" for i in range(5)],
        "sse": [{"ids": [f"e{i}" for i in range(5)]}, {"ids": ["e2", "e3", "e4"]}],
        "exit_code": 0,
        "stop_at": 200.0,
    }
    return base | overrides


def test_everything_once_is_no_problem() -> None:
    verdict = check(_result())
    assert verdict["problems"] == []
    assert verdict["streamed"] == [
        {"streamed": 5, "from_event": 0},
        {"streamed": 3, "from_event": 2},  # a client counts from the first event it got
    ]


def test_each_loss_or_repeat_is_named() -> None:
    cases = {
        "repeated MQTT": {"messages": 6},
        "published not received": {"received": {f"e{i}": "cam0" for i in range(4)}},
        "not marked published": {"rows": [*_result()["rows"][:4], ("e4", "cam0", False, 104.0, 4)]},
        "Parquet holds 4 rows": {"parquet_ids": ["e0", "e1", "e2", "e3"]},
        "SSE client 1: 6 streamed": {"sse": [{"ids": ["e0", "e1", "e1", "e2", "e3", "e4"]}]},
        "SSE client 1: 4 streamed, 5 expected": {"sse": [{"ids": ["e0", "e1", "e3", "e4"]}]},
        "stored twice (same start)": {"rows": [*_result()["rows"], ("e5", "cam0", True, 105.0, 4)]},
        "cameras with fewer than 1 events: cam1": {"cameras": ["cam0", "cam1"]},
        "fewer than 9 events: cam0": {"least_per_camera": 9},
        "exited 1": {"exit_code": 1},
    }
    for expected, change in cases.items():
        problems = check(_result(**change))["problems"]
        assert any(expected in p for p in problems), (expected, problems)


def test_events_saved_during_the_stop_may_miss_the_stream() -> None:
    late = _result(stop_at=103.5)  # e4 was saved after SIGINT, while the API went away
    assert check(late | {"sse": [{"ids": ["e0", "e1", "e2", "e3"]}]})["problems"] == []
    early = check(_result(stop_at=104.5) | {"sse": [{"ids": ["e0", "e1", "e2", "e3"]}]})
    assert early["problems"] and "1 missing" in early["problems"][0]


def test_titles_hold_no_paths() -> None:
    from benchmarks.bench_soak import _title

    assert _title(["ray::IngestActor", ""]) == "ray::IngestActor"
    assert _title(["/x/ray/core/src/ray/gcs/gcs_server", "--a=1"]) == "gcs_server"
    assert _title(["/x/.venv/bin/python", "-u", "/x/ray/dashboard/agent.py"]) == "python agent.py"


def test_rss_slope_is_per_hour_and_skips_processes_of_part_of_the_run() -> None:
    log = RssLog.__new__(RssLog)  # no sampling thread: samples given
    log.titles = {1: "ray::EventStoreActor", 2: "ray::IDLE", 3: "liveobject run"}
    log.samples = {
        1: [(t, 100.0 + t / 360) for t in range(0, 3601, 10)],  # +10 MB over the hour
        2: [(t, 50.0) for t in range(0, 600, 10)],  # a worker of the first ten minutes
        3: [(t, 80.0) for t in range(0, 3601, 10)],
    }
    slopes = log.slopes(0.0, 3600.0)
    assert [(p["pid"], p["stage"], p["slope_mb_per_h"]) for p in slopes] == [
        (1, "store", 10.0),
        (3, "driver", 0.0),
    ]
