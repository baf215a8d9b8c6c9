"""The `event-store` actor: the single DuckDB writer, Parquet exporter and thumbnail keeper."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime
from typing import Any

import ray

from pipelines.config import Config
from pipelines.events import Event, utcnow
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR
from pipelines.storage import EventStore

logger = logging.getLogger(__name__)


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
        """Store one event (with its correlation group) and hand it to the publisher."""
        await self._ensure_maintenance()
        window = self._config.correlation.window_s
        if window > 0 and event.correlation_group_id is None:
            group = await asyncio.to_thread(
                self._store.correlation_group, event.camera_id, event.timestamp, window
            )
            if group is not None:
                event = event.model_copy(update={"correlation_group_id": group})
        thumbs = {event.event_id: thumbnail} if thumbnail else {}
        await asyncio.to_thread(self._store.append, [event], thumbs)
        publisher = self._publisher_handle()
        if publisher is not None:
            publisher.publish_event.remote(event)  # fire and forget: never waits on MQTT
        return event

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
