"""The `event-store` actor: the single DuckDB writer, Parquet exporter and thumbnail keeper."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ray

from pipelines.config import Config
from pipelines.events import Event, utcnow
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR
from pipelines.storage import EventStore

logger = logging.getLogger(__name__)

MAX_BATCH = 512  # saves committed in one transaction at most
GATHER_S = 0.002  # after a lone save, how long the writer waits for others to join it


@dataclass(frozen=True)
class _Pending:
    """One queued save: what to store and the future its caller awaits."""

    event: Event
    thumbnail: bytes | None
    done: asyncio.Future[Event]


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
        self._publisher: Any = None
        self._stop_requested = False
        self._started = time.time()
        self._maintenance: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._batches = 0
        self._max_batch = 0
        logger.info("event-store opened %s", storage.path)

    async def _ensure_maintenance(self) -> None:
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    async def _maintain(self) -> None:
        """Export every flush interval; expire and compact closed days once a day (and now).

        Compaction and retention remove Parquet files, the one thing a reader mid-query can
        trip over (see pipelines.storage): they run at startup and at the first pass after
        midnight UTC only, never against today's partition.
        """
        interval = self._config.storage.parquet_flush_interval_s
        last_day = None
        while True:
            try:
                await asyncio.to_thread(self._store.export_parquet)
                today = utcnow().date()
                if today != last_day:
                    await asyncio.to_thread(self._store.apply_retention)
                    await asyncio.to_thread(self._store.compact_parquet)
                    last_day = today
            except Exception as exc:  # keep the loop alive; the error is in the log
                logger.error("store maintenance failed: %s", exc)
            await asyncio.sleep(interval)

    def _publisher_handle(self) -> Any:
        if not self._config.mqtt.enabled:
            return None
        if self._publisher is None:
            try:
                self._publisher = ray.get_actor(
                    PUBLISHER_ACTOR, namespace=self._config.ray.namespace
                )
            except ValueError:
                return None
        return self._publisher

    async def save(self, event: Event, thumbnail: bytes | None) -> Event:
        """Store one event (with its correlation group) and hand it to the publisher.

        Group commit: the call waits in a queue and the writer stores everything queued in
        one transaction; the result (or the batch's storage error) is this event's own.
        """
        await self._ensure_maintenance()
        queue = self._ensure_writer()
        done: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Pending(event, thumbnail, done))
        return await done

    def _ensure_writer(self) -> asyncio.Queue[_Pending]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(self._queue))
        return self._queue

    async def _write_loop(self, queue: asyncio.Queue[_Pending]) -> None:
        """The single writer: take what is queued (a batch), commit it, answer every caller."""
        while True:
            batch = [await queue.get()]
            if queue.empty():  # let a burst of concurrent saves land in the same batch
                await asyncio.sleep(GATHER_S)
            while len(batch) < MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            self._batches += 1
            self._max_batch = max(self._max_batch, len(batch))
            try:
                saved = await self._commit(batch)
            except Exception as exc:  # every caller of the batch gets the error: none is lost
                logger.error("saving a batch of %d events failed: %s", len(batch), exc)
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
            else:
                for item, event in zip(batch, saved, strict=True):
                    if not item.done.done():  # a cancelled caller's event is stored all the same
                        item.done.set_result(event)
                self._publish(saved)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _commit(self, batch: list[_Pending]) -> list[Event]:
        """Correlate and append a batch with one storage call (in a thread); the stored events."""
        events = [item.event for item in batch]
        thumbs = {item.event.event_id: item.thumbnail for item in batch if item.thumbnail}
        window = self._config.correlation.window_s
        return await asyncio.to_thread(self._store.save_batch, events, thumbs, window)

    def _publish(self, saved: list[Event]) -> None:
        try:
            publisher = self._publisher_handle()
            if publisher is not None:  # fire and forget, one call a batch: never waits on MQTT
                unique = list({event.event_id: event for event in saved}.values())
                publisher.publish_events.remote(unique)
        except Exception as exc:  # stored as unpublished: the publisher's replay catches up
            logger.warning("handing %d events to the publisher failed: %s", len(saved), exc)

    def writer_stats(self) -> dict[str, int]:
        """Group-commit counters of this process: batches committed, largest, still queued."""
        queued = 0 if self._queue is None else self._queue.qsize()
        return {"batches": self._batches, "max_batch": self._max_batch, "queued": queued}

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
        return await asyncio.to_thread(self._store.counts)

    async def flush(self) -> int:
        """Export pending rows to Parquet now (used at shutdown and by --until-done)."""
        return await asyncio.to_thread(self._store.export_parquet)

    async def health(self) -> dict[str, Any]:
        counts = await self.counts()
        return {"ok": True, "path": str(self._config.storage.path), **counts}

    def pid(self) -> int:
        """The actor's process id (operators and crash tests)."""
        return os.getpid()

    def request_stop(self) -> None:
        """Ask the process running the cluster (`liveobject run`) to shut down gracefully."""
        self._stop_requested = True

    def stop_requested(self) -> bool:
        return self._stop_requested

    async def close(self) -> None:
        if self._queue is not None:  # saves already queued are committed first
            await asyncio.wait_for(self._queue.join(), 60)
        if self._writer is not None:
            self._writer.cancel()
        if self._maintenance is not None:
            self._maintenance.cancel()
        await asyncio.to_thread(self._store.export_parquet)
        await asyncio.to_thread(self._store.close)


def get_store(config: Config) -> Any:
    """Get or create the one `event-store` actor (safe when several callers race)."""
    return EventStoreActor.options(  # type: ignore[attr-defined]
        name=STORE_ACTOR,
        namespace=config.ray.namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(config)
