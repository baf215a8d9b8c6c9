"""The `event-store` actor: the single DuckDB writer, Parquet exporter and thumbnail keeper.

A Ray shell over plain parts of `pipelines.storage`: the group-commit writer (`writer`: a
bounded write queue; at the bound a save is refused with `StoreBusyError`, the camera keeps the
event and retries) and the maintenance thread (`maintenance`, started with the actor, also after
a restart). The `mqtt-publisher` handle comes in through `attach_publisher`, called by
`cluster.actors.publisher.get_publisher` when the publisher is created.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

import ray

from cluster.metrics import StoreMetrics
from cluster.placement import STORE_NODE_SHARE
from pipelines.config import Config
from pipelines.events import Event
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR
from pipelines.storage import EventStore, feed
from pipelines.storage.maintenance import Maintenance
from pipelines.storage.summary import Summary, summarize
from pipelines.storage.writer import CLOSE_STEP_S, GroupCommitWriter

logger = logging.getLogger(__name__)

CLOSE_WAIT_S = 20.0  # close(): how long queued saves may take before they are refused
FIND_PUBLISHER_S = 60.0  # after a restart: how long to look for the publisher by name
FIND_PUBLISHER_EVERY_S = 1.0
HELD_BATCHES = 64  # committed batches held for a publisher not known yet (a second or two)


class _Publisher:
    """The `mqtt-publisher` handle as the writer's hand-on hook: one call a batch, never waits.
    Until the handle is known, batches are held (at most HELD_BATCHES; older ones are left to
    the publisher's replay) and handed on in order once it is."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._lock = threading.Lock()
        self._handle: Any = None
        self._held: deque[list[Event]] = deque(maxlen=HELD_BATCHES)
        self.overflowed = 0  # batches left to the replay

    def __call__(self, events: list[Event]) -> None:
        with self._lock:
            if self._handle is None:
                if self._enabled:
                    if len(self._held) == HELD_BATCHES:  # the oldest stays unpublished
                        self.overflowed += 1
                        logger.warning("no mqtt-publisher yet: a batch is left to its replay")
                    self._held.append(events)
                return
            self._handle.publish_events.remote(events)

    def attach(self, handle: Any, *, unless_known: bool = False) -> None:
        """Hand batches to `handle` from now on, the held ones first (in order)."""
        with self._lock:
            if unless_known and self._handle is not None:
                return  # an attach_publisher meanwhile wins
            self._handle = handle
            held, self._held = list(self._held), deque(maxlen=HELD_BATCHES)
            if handle is not None:
                for events in held:
                    handle.publish_events.remote(events)

    def find(self, namespace: str, stop: threading.Event) -> None:
        """Look the publisher up by name until known (a store created or restarted while it
        runs is not attached by anyone). Runs in a thread: the lookups block."""
        deadline = time.monotonic() + FIND_PUBLISHER_S
        while time.monotonic() < deadline and not stop.is_set():
            with self._lock:
                if self._handle is not None:
                    return
            try:
                found = ray.get_actor(PUBLISHER_ACTOR, namespace=namespace)
            except ValueError:
                stop.wait(FIND_PUBLISHER_EVERY_S)
                continue
            self.attach(found, unless_known=True)
            logger.info("event-store: found the mqtt-publisher by name")
            return


@ray.remote(num_cpus=0.05, max_restarts=-1, max_task_retries=-1)
class EventStoreActor:
    """Owns `{storage.path}/events.duckdb`; everything else asks it (DuckDB has one writer)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        storage = config.storage
        self._store = EventStore(
            storage.path,
            retention_days=storage.retention_days,
            thumbnail_quality=storage.thumbnail_quality,
        )
        self._metrics = StoreMetrics()
        self._publisher = _Publisher(config.mqtt.enabled)
        self._writer = GroupCommitWriter(
            self._store,
            max_queued=storage.max_queued_saves,
            window_s=config.correlation.window_s,
            on_saved=self._publisher,
            on_committed=self._metrics.committed,
        )
        self._maintenance = Maintenance(self._store, storage.parquet_flush_interval_s)
        self._maintenance.start()
        self._closed = threading.Event()
        if config.mqtt.enabled:
            threading.Thread(
                target=self._publisher.find,
                args=(config.ray.namespace, self._closed),
                name="store-find-publisher",
                daemon=True,
            ).start()
        logger.info("event-store opened %s", storage.path)

    def attach_publisher(self, publisher: Any) -> None:
        """Hand each committed batch to this `mqtt-publisher` from now on (None: to nobody)."""
        self._publisher.attach(publisher)

    async def save(self, event: Event, thumbnail: bytes | None) -> Event:
        """Store one event (with its correlation group) and hand it to the publisher.

        Group commit: the call waits in a queue and the writer stores everything queued in
        one transaction; the result (or the batch's storage error) is this event's own.
        """
        return await self._writer.save(event, thumbnail)

    async def save_new(self, event: Event, thumbnail: bytes | None) -> tuple[Event, bool]:
        """Like save, unless the event_id is stored: then nothing is written or published.

        The stored (or just saved) event, and whether it was stored already.
        """
        return await self._writer.save_new(event, thumbnail)

    def writer_stats(self) -> dict[str, Any]:
        """Counters of this process: batches committed, largest, saves queued now, most ever
        queued, the bound, saves refused at the bound; maintenance passes by step."""
        return {**self._writer.stats(), "maintenance": dict(self._maintenance.runs)}

    async def get(self, event_id: str) -> Event | None:
        return await asyncio.to_thread(self._store.get, event_id)

    async def query(self, **filters: Any) -> tuple[list[Event], str | None]:
        return await asyncio.to_thread(lambda: self._store.query(**filters))

    async def thumbnail_path(self, event_id: str) -> str | None:
        path = await asyncio.to_thread(self._store.thumbnail_path, event_id)
        return None if path is None else str(path)

    async def thumbnail_bytes(self, event_id: str) -> bytes | None:
        path = await asyncio.to_thread(self._store.thumbnail_path, event_id)
        return None if path is None else await asyncio.to_thread(path.read_bytes)

    async def mark_published(self, event_ids: list[str], at: datetime | None = None) -> int:
        return await asyncio.to_thread(self._store.mark_published, event_ids, at)

    async def unpublished_events(self, max_age_s: float | None) -> list[Event]:
        return await asyncio.to_thread(self._store.unpublished_events, max_age_s)

    async def events_since(self, max_age_s: float) -> list[Event]:
        return await asyncio.to_thread(self._store.events_since, max_age_s)

    async def counts(self) -> dict[str, int]:
        counts: dict[str, int] = await asyncio.to_thread(self._store.counts)
        self._metrics.stored(int(counts.get("stored", 0)))
        return counts

    # The live stream and summaries (issue 14): reads only, each in a thread.

    async def last_seq(self) -> int:
        """The largest stored seq (where a new live stream starts)."""
        return await asyncio.to_thread(feed.last_seq, self._store)

    async def seq_of(self, event_id: str) -> int | None:
        """The seq of a stored event (a stream's Last-Event-ID), or None."""
        return await asyncio.to_thread(feed.seq_of, self._store, event_id)

    async def events_after(
        self, after: int, upto: int | None = None, limit: int = 500, **filters: Any
    ) -> list[tuple[int, Event]]:
        """(seq, event) stored after seq `after`, in saving order (see storage.feed)."""
        return await asyncio.to_thread(
            lambda: feed.events_after(self._store, after, upto, limit, **filters)
        )

    async def summary(self, **params: Any) -> Summary:
        """Counts, busiest hour and representative events of a period (see storage.summary)."""
        return await asyncio.to_thread(lambda: summarize(self._store, **params))

    async def flush(self) -> int:
        """Export pending rows to Parquet now (used at shutdown and by --until-done)."""
        return await asyncio.to_thread(self._store.export_parquet)

    async def health(self) -> dict[str, Any]:
        counts = await self.counts()
        return {"ok": True, "path": str(self._config.storage.path), **counts}

    def pid(self) -> int:
        """The actor's process id (operators and crash tests)."""
        return os.getpid()

    async def close(self, timeout_s: float = CLOSE_WAIT_S) -> dict[str, Any]:
        """Commit queued saves (up to timeout_s), then always export Parquet and checkpoint.

        New saves are refused from the start. Saves still queued at timeout_s get
        `StoreBusyError` (nothing stored: their callers still hold them); a batch already
        being committed is finished. Every step runs even when one before it failed.
        """
        self._closed.set()
        report: dict[str, Any] = {"refused": 0, "exported": None, "closed": False}
        report["refused"] = await self._writer.close(timeout_s)
        await asyncio.to_thread(self._maintenance.stop, CLOSE_STEP_S)
        try:
            report["exported"] = await asyncio.wait_for(
                asyncio.to_thread(self._store.export_parquet), CLOSE_STEP_S
            )
        except Exception as exc:
            logger.error("final Parquet export failed: %s", exc)
        try:
            await asyncio.wait_for(asyncio.to_thread(self._store.close), CLOSE_STEP_S)
            report["closed"] = True
        except Exception as exc:
            logger.error("checkpoint and close of the store failed: %s", exc)
        return report


def get_store(config: Config) -> Any:
    """Get or create the one `event-store` actor (safe when several callers race).

    With `storage.node_resource` set it is pinned to the node declaring that resource (the
    one holding storage.path), so a restart after a crash opens the same files.
    """
    node = config.storage.node_resource
    return EventStoreActor.options(  # type: ignore[attr-defined]
        name=STORE_ACTOR,
        namespace=config.ray.namespace,
        lifetime="detached",
        get_if_exists=True,
        resources={node: STORE_NODE_SHARE} if node else None,
    ).remote(config)
