"""Store maintenance on its own thread: retention and compaction daily, Parquet export often.

Compaction and retention remove Parquet files, the one thing a reader mid-query can trip over
(see pipelines.storage): they run at start and at the first pass after midnight UTC only, never
against today's partition. Export runs every pass (each `interval_s`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import date
from functools import partial
from typing import Any, Protocol

from pipelines.events import utcnow

logger = logging.getLogger(__name__)


class MaintainedStore(Protocol):
    """What maintenance needs of the store (`EventStore` has it)."""

    def export_parquet(self) -> int:
        """Export pending rows to Parquet."""
        ...

    def apply_retention(self) -> int:
        """Delete expired events and partitions."""
        ...

    def compact_parquet(self, *, stop: Callable[[], bool] | None = None) -> int:
        """Merge the small files of closed days; `stop` (asked between days) ends it early."""
        ...


class Maintenance:
    """Runs the store's maintenance steps on a daemon thread until stopped."""

    def __init__(
        self,
        store: MaintainedStore,
        interval_s: float,
        *,
        today: Callable[[], date] = lambda: utcnow().date(),
    ) -> None:
        self._store = store
        self._interval_s = interval_s
        self._today = today
        self._last_day: date | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="store-maintenance", daemon=True)
        self.runs = {"retention": 0, "compaction": 0, "export": 0}

    def start(self) -> None:
        """Start the thread (its first pass runs at once)."""
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop the thread; wait up to timeout_s for a pass in progress (a compaction ends
        after the day it is merging)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def run_once(self) -> None:
        """One pass: retention and compaction on a new UTC day, then export; errors are logged."""
        today = self._today()
        steps: list[tuple[str, Callable[[], Any]]] = [("export", self._store.export_parquet)]
        if today != self._last_day:
            steps[:0] = [
                ("retention", self._store.apply_retention),
                ("compaction", partial(self._store.compact_parquet, stop=self._stop.is_set)),
            ]
            self._last_day = today
        for name, step in steps:
            if self._stop.is_set():  # stopping: the store's close exports once more itself
                break
            try:
                step()
                self.runs[name] += 1
            except Exception as exc:  # keep the loop alive; the error is in the log
                logger.error("store maintenance (%s) failed: %s", name, exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self._interval_s)
