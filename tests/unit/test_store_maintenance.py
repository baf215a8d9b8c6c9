"""Store maintenance (pipelines.storage.maintenance) over a real DuckDB store in a temp dir."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from pipelines.storage import EventStore
from pipelines.storage.maintenance import Maintenance
from tests.support.mqtt import make_event
from tests.support.waiting import wait_for


class Days:
    def __init__(self) -> None:
        self.today = date(2024, 5, 1)

    def __call__(self) -> date:
        return self.today


def test_retention_and_compaction_run_once_a_day_export_every_pass(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "data")
    days = Days()
    maintenance = Maintenance(store, 3600, today=days)
    try:
        store.save_batch([make_event()], None, 5.0)
        maintenance.run_once()
        assert list((tmp_path / "data" / "parquet").glob("date=*/*.parquet"))  # exported
        maintenance.run_once()
        assert maintenance.runs == {"retention": 1, "compaction": 1, "export": 2}
        days.today = date(2024, 5, 2)  # after midnight UTC
        maintenance.run_once()
        assert maintenance.runs == {"retention": 2, "compaction": 2, "export": 3}
    finally:
        store.close()


class BrokenCompaction:
    """A store whose compaction fails (a full disk, say)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def export_parquet(self) -> int:
        return self.store.export_parquet()

    def apply_retention(self) -> int:
        return self.store.apply_retention()

    def compact_parquet(self, *, stop: Callable[[], bool] | None = None) -> int:
        raise OSError("no space left on device")


def test_a_failed_step_does_not_stop_the_others_or_the_thread(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "data")
    maintenance = Maintenance(BrokenCompaction(store), 0.01)
    try:
        maintenance.start()
        wait_for(lambda: maintenance.runs["export"] >= 3, 10, "three passes")
        maintenance.stop(timeout_s=5)
        assert maintenance.runs["compaction"] == 0 and maintenance.runs["retention"] == 1
    finally:
        store.close()
