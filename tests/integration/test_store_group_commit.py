"""The `event-store` actor's group commit: many concurrent saves, each stored exactly once."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cluster.actors.store import get_store
from pipelines.config import Config
from pipelines.events import Event, utcnow
from pipelines.storage import StorageError

pytestmark = pytest.mark.integration

CAMERAS = ("cam_a", "cam_b", "cam_c")
MOMENTS = 100  # x 3 cameras = 300 concurrent saves
JPEG = b"\xff\xd8\xff\xe0" + b"thumbnail" * 30 + b"\xff\xd9"


def make_event(camera_id: str, ts_offset_s: float, text: str) -> Event:
    return Event(
        camera_id=camera_id,
        camera_name=camera_id.upper(),
        description=text,
        objects_detected=("person",),
        confidence=70,
        source_type="file",
        timestamp=utcnow() - timedelta(hours=1) + timedelta(seconds=ts_offset_s),
    )


@pytest.fixture
def store_config(tmp_path: Path) -> Config:
    return Config.model_validate(
        {
            "ray": {"namespace": f"group-commit-{uuid.uuid4().hex[:8]}"},
            "cameras": [{"id": c, "source": "rtsp://cam.lan/s"} for c in CAMERAS],
            "storage": {"path": str(tmp_path / "store")},
            "mqtt": {"enabled": False},
            "correlation": {"window_s": 2},
        }
    )


def test_concurrent_saves_are_batched_and_each_stored_once(
    ray_session: Any, store_config: Config
) -> None:
    import ray

    # Moments 60 s apart; in each, the three cameras start within 1 s: one group per moment.
    events = [
        make_event(cam, 60 * m + 0.5 * k, f"moment {m} on {cam}")
        for m in range(MOMENTS)
        for k, cam in enumerate(CAMERAS)
    ]
    store = get_store(store_config)
    try:
        ray.get(store.counts.remote(), timeout=60)  # the actor is up
        refs = [store.save.remote(ev, JPEG) for ev in events]  # all in flight at once
        saved: list[Event] = ray.get(refs, timeout=120)

        for sent, got in zip(events, saved, strict=True):  # each caller got its own event
            assert got.event_id == sent.event_id
            assert got.model_copy(update={"correlation_group_id": None}) == sent
        stats = ray.get(store.writer_stats.remote(), timeout=30)
        assert 1 < stats["max_batch"] and stats["batches"] < len(events), stats
        assert ray.get(store.counts.remote(), timeout=30)["stored"] == len(events)
        rows, cursor = ray.get(store.query.remote(limit=500), timeout=30)
        assert cursor is None
        stored = {e.event_id: e for e in rows}
        assert sorted(stored) == sorted(e.event_id for e in events)  # each exactly once

        # In the table every moment is one group of three, the moments' groups all differ.
        groups = [stored[e.event_id].correlation_group_id for e in events]
        for m in range(MOMENTS):
            moment = groups[3 * m : 3 * m + 3]
            assert moment[0] is not None and moment.count(moment[0]) == 3, (m, moment)
        assert len(set(groups)) == MOMENTS
        # What callers got back: the stored event. Only the first event of a moment cut by a
        # batch boundary can have been answered before its partner arrived, i.e. without the
        # group (as with one save at a time); inside a batch the whole moment gets it.
        answered_alone = 0
        for got in saved:
            row = stored[got.event_id]
            if got.correlation_group_id is None:
                answered_alone += 1
                row = row.model_copy(update={"correlation_group_id": None})
            assert got == row
        assert answered_alone < stats["batches"], (answered_alone, stats)
        print(f"group commit: {stats}; {answered_alone} answered before their partner")  # -s
        for ev in saved[::37]:
            assert ray.get(store.thumbnail_bytes.remote(ev.event_id), timeout=30) == JPEG

        # Saved again (a caller's retry): nothing is stored twice.
        ray.get([store.save.remote(ev, JPEG) for ev in events[:50]], timeout=60)
        assert ray.get(store.counts.remote(), timeout=30)["stored"] == len(events)
    finally:
        ray.kill(store, no_restart=True)


def test_a_failed_batch_fails_every_caller_and_the_writer_goes_on(
    ray_session: Any, store_config: Config
) -> None:
    import ray

    store = get_store(store_config)
    thumbs = store_config.storage.path / "thumbnails"
    try:
        ray.get(store.counts.remote(), timeout=60)
        # Thumbnails cannot be written (the folder is a file now, whoever runs the test).
        thumbs.rename(thumbs.with_name("thumbnails.away"))
        thumbs.write_bytes(b"")
        doomed = [make_event(CAMERAS[i % 3], 10 * i, f"doomed {i}") for i in range(20)]
        refs = [store.save.remote(ev, JPEG) for ev in doomed]
        for ref in refs:  # every caller hears of it: none is silently lost
            with pytest.raises(StorageError):
                ray.get(ref, timeout=60)
        thumbs.unlink()
        thumbs.with_name("thumbnails.away").rename(thumbs)

        ok = make_event("cam_a", 5000, "after the failure")
        assert ray.get(store.save.remote(ok, JPEG), timeout=60).event_id == ok.event_id
        assert ray.get(store.counts.remote(), timeout=30)["stored"] == 1
        retried = ray.get([store.save.remote(ev, JPEG) for ev in doomed], timeout=60)
        assert [e.event_id for e in retried] == [e.event_id for e in doomed]
        assert ray.get(store.counts.remote(), timeout=30)["stored"] == 21
    finally:
        ray.kill(store, no_restart=True)
