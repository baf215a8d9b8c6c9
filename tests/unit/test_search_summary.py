"""Text search (`q=`), the saving-order feed and period summaries over a real seeded EventStore.

Every expectation is computed here from the events as inserted (a brute-force filter and sort
in plain Python), or with plain SQL on the store's own connection, never by the code under test.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipelines.config import Config
from pipelines.events import Event, format_timestamp
from pipelines.storage import EventStore, feed
from pipelines.storage.search import parse_terms
from pipelines.storage.summary import pick_diverse, plain_text, summarize
from serve_apps.api import build_api
from serve_apps.api.local import LocalStoreClient
from serve_apps.api.summary import parse_since

BASE = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
CAMERAS = {"front": "Front Door", "drive": "Driveway", "garden": "Garden"}
DESCRIPTIONS = [
    ("A Red car parks in the DRIVEWAY", ("vehicle",)),
    ("a red van stops by the gate", ("vehicle",)),
    ("A person walks to the front door", ("person",)),
    ("Courier leaves a Package at the door", ("person", "package")),
    ("A cat crosses the lawn", ("animal",)),
    ("Someone rings the bell", ("person",)),
    ("Nothing but leaves moving", ()),
    ("A person with a dog next to a car and a box", ("person", "vehicle", "package", "animal")),
]


def seed_events() -> list[Event]:
    rng = random.Random(14)
    events = []
    for i in range(260):
        camera = rng.choice(sorted(CAMERAS))
        text, objects = rng.choice(DESCRIPTIONS)
        # i // 2: pairs share a timestamp, so pages must break ties by event id
        events.append(
            Event(
                camera_id=camera,
                camera_name=CAMERAS[camera],
                description=text if i % 5 else text.upper(),
                objects_detected=objects,
                confidence=60,
                source_type="rtsp",
                timestamp=BASE - timedelta(minutes=9 * (i // 2)),
                is_doorbell_ring=True if text.startswith("Someone") else None,
                zones=("porch",) if i % 3 == 0 else None,
                provider_used="reused" if i % 7 == 0 else ("openai:gpt" if i % 5 else None),
            )
        )
    return events


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    store = EventStore(tmp_path_factory.mktemp("search") / "data")
    events = seed_events()
    for start in range(0, len(events), 50):  # several batches: seq follows the list order
        store.append(events[start : start + 50])
    config = Config.model_validate(
        {
            "cameras": [{"id": c, "name": n, "source": f"{c}.mp4"} for c, n in CAMERAS.items()],
            # hundreds of searches and summaries compared with the truth: not a rate-limit test
            "api": {"heavy_reads_per_min": 60_000},
        }
    )
    client = TestClient(
        build_api(LocalStoreClient(store, config), config), base_url="http://localhost"
    )
    yield {"store": store, "events": events, "client": client}
    store.close()


def truth(events: list[Event], q: str = "", **filters: Any) -> list[Event]:
    """The matching events newest first: the contract, written out independently."""
    terms = q.lower().split()
    out = []
    for ev in events:
        if filters.get("camera_id") and ev.camera_id != filters["camera_id"]:
            continue
        if filters.get("object") and filters["object"] not in ev.objects_detected:
            continue
        if filters.get("since") and ev.timestamp < filters["since"]:
            continue
        if filters.get("until") and ev.timestamp > filters["until"]:
            continue
        if filters.get("zone") and filters["zone"] not in (ev.zones or ()):
            continue
        if all(t in ev.description.lower() or t in ev.objects_detected for t in terms):
            out.append(ev)
    return sorted(out, key=lambda e: (e.timestamp, e.event_id), reverse=True)


SEARCHES: list[tuple[str, dict[str, Any]]] = [
    ("red", {}),
    ("RED car", {}),
    ("vehicle", {}),  # an object that no description names: matched through objects only
    ("person door", {}),
    ("package PERSON", {"camera_id": "front"}),
    ("person vehicle package animal", {}),  # four object terms: the single-filter form
    ("car", {"camera_id": "drive", "object": "vehicle"}),
    ("door", {"since": BASE - timedelta(hours=6), "until": BASE - timedelta(hours=2)}),
    ("zebra", {}),
    ("person", {"zone": "porch", "object": "package"}),
    ("  the   THE ", {}),
]


def page_through(client: TestClient, q: str, filters: dict[str, Any]) -> list[str]:
    params = {k: format_timestamp(v) if isinstance(v, datetime) else v for k, v in filters.items()}
    ids: list[str] = []
    cursor = None
    for _ in range(100):
        query = {**params, "q": q, "limit": 7, **({"cursor": cursor} if cursor else {})}
        r = client.get("/api/v1/events", params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [e["event_id"] for e in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize(("q", "filters"), SEARCHES)
def test_search_pages_match_truth_exactly_once(
    world: dict[str, Any], q: str, filters: dict[str, Any]
) -> None:
    expected = [e.event_id for e in truth(world["events"], q, **filters)]
    got = page_through(world["client"], q, filters)
    assert got == expected
    assert len(set(got)) == len(got)


def test_search_cases_are_not_trivial(world: dict[str, Any]) -> None:
    """The seeded data exercises what the searches claim to (so the tests above can fail)."""
    events = world["events"]
    assert len(truth(events, "red")) > 14  # several pages of 7
    only_objects = [e for e in truth(events, "vehicle") if "vehicle" not in e.description.lower()]
    assert only_objects
    assert truth(events, "person vehicle package animal")
    assert not truth(events, "zebra")
    upper = [e for e in truth(events, "red car") if e.description.isupper()]
    assert upper  # case-insensitive


def test_feed_with_filters_matches_python_filter(world: dict[str, Any]) -> None:
    store, events = world["store"], world["events"]
    for q, filters in SEARCHES:
        rows = feed.events_after(store, 0, None, 1000, q=q, **filters)
        wanted = {e.event_id for e in truth(events, q, **filters)}  # plain Python, not ours
        in_saving_order = [e.event_id for e in events if e.event_id in wanted]
        assert [e.event_id for _seq, e in rows] == in_saving_order, (q, filters)
        seqs = [seq for seq, _e in rows]
        assert seqs == sorted(seqs)
    middle = feed.seq_of(store, events[100].event_id)
    assert middle is not None
    after = feed.events_after(store, middle, middle + 5, 1000)
    assert [e.event_id for _s, e in after] == [e.event_id for e in events[101:106]]
    assert feed.last_seq(store) == feed.seq_of(store, events[-1].event_id)
    assert feed.seq_of(store, "not-a-uuid") is None


def test_bad_searches_are_clear_400s(world: dict[str, Any]) -> None:
    client = world["client"]
    r = client.get("/api/v1/events", params={"q": " ".join(f"w{i}" for i in range(9))})
    assert r.status_code == 400 and "at most 8 terms" in r.json()["detail"]
    r = client.get("/api/v1/events", params={"q": "x" * 65})
    assert r.status_code == 400
    assert client.get("/api/v1/events", params={"q": "x" * 201}).status_code == 422
    assert parse_terms("A a  B") == ("a", "b")


def summary_truth(events: list[Event], since: datetime, until: datetime, camera: str | None):
    chosen = [
        e
        for e in events
        if since <= e.timestamp <= until and (camera is None or e.camera_id == camera)
    ]
    hours = Counter(e.timestamp.replace(minute=0, second=0, microsecond=0) for e in chosen)
    return chosen, hours


@pytest.mark.parametrize("camera", [None, "front"])
def test_summary_counts_equal_the_truth(world: dict[str, Any], camera: str | None) -> None:
    events, client = world["events"], world["client"]
    until = BASE - timedelta(hours=1)
    since = until - timedelta(hours=24)
    chosen, hours = summary_truth(events, since, until, camera)
    params = {"since": "24h", "until": format_timestamp(until), "examples": 4}
    r = client.get(
        "/api/v1/summary", params={**params, **({"camera_id": camera} if camera else {})}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(chosen) > 50
    per_camera = Counter(e.camera_id for e in chosen)
    assert {c["camera_id"]: c["count"] for c in body["cameras"]} == dict(per_camera)
    per_object = Counter(o for e in chosen for o in e.objects_detected)
    assert {o["object"]: o["count"] for o in body["objects"]} == dict(per_object)
    assert {h["hour"]: h["count"] for h in body["hours"]} == {
        format_timestamp(h): n for h, n in hours.items()
    }
    top = max(hours.values())
    busiest = min(h for h, n in hours.items() if n == top)
    assert body["busiest_hour"] == {"hour": format_timestamp(busiest), "count": top}
    assert body["rings"] == sum(bool(e.is_doorbell_ring) for e in chosen) > 0
    assert body["reused"] == sum(e.provider_used == "reused" for e in chosen) > 0
    assert body["fallback"] == sum(e.provider_used is None for e in chosen) > 0
    ordered = sorted(chosen, key=lambda e: (e.timestamp, e.event_id))
    assert body["first_event"]["event_id"] == ordered[0].event_id
    assert body["last_event"]["event_id"] == ordered[-1].event_id
    assert body["filtered"] >= 0 and body["throttled"] >= 0
    # the same total with plain SQL on the store's connection
    sql = 'SELECT count(*) FROM events WHERE "timestamp" BETWEEN ? AND ?'
    values: list[Any] = [since, until]
    if camera:
        sql, values = sql + " AND camera_id = ?", [*values, camera]
    assert world["store"].con.execute(sql, values).fetchall()[0][0] == body["total"]
    # examples: distinct descriptions, each with the number of events that share it
    shared = Counter(e.description.strip().lower() for e in chosen)
    texts = [x["description"].strip().lower() for x in body["examples"]]
    assert len(texts) == len(set(texts)) == 4
    assert texts[0] == max(shared, key=lambda d: (shared[d], [-ord(c) for c in d]))
    for example in body["examples"]:
        assert example["similar_events"] == shared[example["description"].strip().lower()]
    assert body["text"].startswith(f"{len(chosen)} events from")
    assert "narrative" not in body


def test_summary_counts_flag_columns_when_present(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = EventStore(tmp_path / "data")
    try:
        events = seed_events()[:40]
        store.append(events)
        store.con.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS filtered BOOLEAN")
        store.con.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS throttled BOOLEAN")
        store.con.execute("UPDATE events SET filtered = true WHERE camera_id = 'front'")
        store.con.execute("UPDATE events SET throttled = (seq % 3 = 0)")
        result = summarize(store, BASE - timedelta(days=2), BASE)
        assert result.filtered == sum(e.camera_id == "front" for e in events)
        (throttled,) = store.con.execute("SELECT count(*) FROM events WHERE seq % 3 = 0").fetchone()
        assert result.throttled == throttled > 0
    finally:
        store.close()


def test_empty_period_and_bad_since(world: dict[str, Any]) -> None:
    client = world["client"]
    r = client.get("/api/v1/summary", params={"since": "2h", "until": "2020-01-01T00:00:00Z"})
    body = r.json()
    assert r.status_code == 200 and body["total"] == 0 and body["busiest_hour"] is None
    assert body["first_event"] is None and body["examples"] == [] and body["cameras"] == []
    assert body["text"].startswith("No events")
    for bad in ("yesterday", "-5h", "400d"):
        r = client.get("/api/v1/summary", params={"since": bad})
        assert r.status_code == 400 and "since" in r.json()["detail"]
    until = datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_since("90m", until) == until - timedelta(minutes=90)
    assert parse_since("2026-02-28T10:00:00Z", until) == datetime(2026, 2, 28, 10, tzinfo=UTC)


def test_pick_diverse_prefers_different_descriptions() -> None:
    texts = [
        "a person at the front door",
        "a person at the front door again",
        "a red car in the driveway",
        "a person at the door",
        "a cat on the garden wall",
    ]
    picked = pick_diverse(texts, 3)
    assert picked[0] == 0
    assert set(picked[1:]) == {2, 4}  # the near-duplicates of the first wait
    assert sorted(pick_diverse(texts, 10)) == [0, 1, 2, 3, 4]
    assert pick_diverse([], 3) == []


def test_plain_text_names_the_facts(world: dict[str, Any]) -> None:
    result = summarize(world["store"], BASE - timedelta(hours=30), BASE, None, 2)
    text = plain_text(result)
    assert text.startswith(f"{result.total} events")
    assert result.cameras[0][1] in text and f"Doorbell rings: {result.rings}." in text


def test_review_page_shell_is_static_and_says_whether_a_key_is_needed(
    world: dict[str, Any],
) -> None:
    client = world["client"]
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-auth="none"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/ui/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/ui/app.css").headers["content-type"].startswith("text/css")
    for bad in ("/ui/index.html", "/ui/..%2fpage.py", "/ui/nothing.js"):
        assert client.get(bad).status_code == 404
    keyed = Config.model_validate(
        {"cameras": [{"id": "a", "source": "a.mp4"}], "api": {"api_key": "k" * 20}}
    )
    with_key = TestClient(
        build_api(LocalStoreClient(world["store"], keyed), keyed), base_url="http://localhost"
    )
    assert 'data-auth="key"' in with_key.get("/").text  # the shell loads without the key
    assert with_key.get("/api/v1/summary").status_code == 401
    assert with_key.get("/api/v1/events/stream").status_code == 401
    assert with_key.get("/api/v1/events", params={"q": "red"}).status_code == 401
