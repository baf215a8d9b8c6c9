"""The `event-store` actor: the single DuckDB writer, Parquet exporter and thumbnail keeper.

A Ray shell over plain parts of `pipelines.storage`: the group-commit writer (`writer`: a
bounded write queue; at the bound a save is refused with `StoreBusyError`, the camera keeps the
event and retries) and the maintenance thread (`maintenance`, started with the actor, also after
a restart). Reads run on their own threads and DuckDB cursors and never hold the writer's lock
(`EventStore.reading`: a snapshot, interrupted past its deadline). The store hands nothing on:
the MQTT publisher and the live stream read its one delivery feed (`events_after`, a long-poll
woken by each commit; see pipelines.storage.feed).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any

import ray

from cluster.metrics import StoreMetrics
from cluster.placement import STORE_NODE_SHARE
from pipelines.config import Config
from pipelines.events import Event
from pipelines.naming import STORE_ACTOR
from pipelines.storage import EventStore, ReadTimeoutError, feed
from pipelines.storage.maintenance import Maintenance
from pipelines.storage.queries import SHARED_READ_WAIT_S
from pipelines.storage.readcache import wait_pending
from pipelines.storage.summary import Summary, summarize
from pipelines.storage.writer import CLOSE_STEP_S, GroupCommitWriter, Reply, replies

logger = logging.getLogger(__name__)

CLOSE_WAIT_S = 20.0  # close(): how long queued saves may take before they are refused
DISK_FULL = "disk full: saves fail, cameras keep their events until space returns"
MAX_WAITING_READS = 64  # API reads queued for the read threads; more are refused at once
READ_THREADS = 2  # concurrent reads of each kind (API; delivery); more wait their turn


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
            read_cache_events=storage.read_cache_events,
        )
        self._metrics = StoreMetrics()
        self._commits = feed.CommitSignal()
        self._writer = GroupCommitWriter(
            self._store,
            max_queued=storage.max_queued_saves,
            window_s=config.correlation.window_s,
            on_saved=self._commits.committed,
            on_committed=self._metrics.committed,
        )
        # reads (API, live stream, publisher's feed) on their own threads and DuckDB cursors,
        # outside the writer's lock: a storm of summaries waits here, saves go on
        self._reads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="store-read")
        self._waiting_reads = 0  # API reads queued or running (bounded by MAX_WAITING_READS)
        self._feed_reads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="store-feed")
        self._maintenance = Maintenance(self._store, storage.parquet_flush_interval_s)
        self._maintenance.start()
        logger.info("event-store opened %s", storage.path)

    async def save(self, event: Event, thumbnail: bytes | None) -> Event:
        """Store one event (with its correlation group); feed readers are woken.

        Group commit: the call waits in a queue and the writer stores everything queued in
        one transaction; the result (or the batch's storage error) is this event's own.
        """
        return await self._writer.save(event, thumbnail)

    async def save_new(self, event: Event, thumbnail: bytes | None) -> tuple[Event, bool]:
        """Like save, unless the event_id is stored: then nothing is written.

        The stored (or just saved) event, and whether it was stored already.
        """
        return await self._writer.save_new(event, thumbnail)

    async def save_many(self, items: list[tuple[Event, bytes | None]]) -> list[Reply | None]:
        """A camera outbox's group: `save_new` of each (event, thumbnail), in one commit, all
        or nothing; None for the suffix the write queue had no room for (retry those); the
        answers compact (`writer.replies`: the event only where it was stored already)."""
        return replies(await self._writer.save_many(items))

    def writer_stats(self) -> dict[str, Any]:
        """Counters of this process: batches committed, largest, saves queued now, most ever
        queued, the bound, saves refused at the bound; maintenance passes by step; the read
        cache's entries, events held, hits, misses and askers who shared another's read."""
        reads = {"read_cache": self._store.read_cache.stats()}
        return {**self._writer.stats(), "maintenance": dict(self._maintenance.runs), **reads}

    async def _read(self, read: Callable[[], Any]) -> Any:
        """Run an API read on the read threads (never the writer's), on its own cursor; at
        most MAX_WAITING_READS wait for a thread, beyond that the read is refused (503)."""
        if self._waiting_reads >= MAX_WAITING_READS:
            raise ReadTimeoutError(f"store busy: {self._waiting_reads} reads waiting")
        self._waiting_reads += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reads, read)
        finally:
            self._waiting_reads -= 1

    async def _feed(self, read: Callable[[], Any]) -> Any:
        """Run a delivery read (publisher, live stream, replay) on threads of its own, so no
        queue of API summaries can hold MQTT delivery back. Its callers are bounded: the one
        publisher, `liveobject replay`, and at most `api.stream.max_clients` live streams."""
        return await asyncio.get_running_loop().run_in_executor(self._feed_reads, read)

    async def get(self, event_id: str) -> Event | None:
        return await self._read(partial(self._store.get, event_id))

    async def query(self, **filters: Any) -> tuple[list[Event], str | None]:
        kept = self._store.pending_query(**filters)  # kept, or being read for another caller
        if kept is None:
            return await self._read(partial(self._store.query, **filters))
        events, cursor = await wait_pending(kept, SHARED_READ_WAIT_S)
        return list(events), cursor

    async def thumbnail_path(self, event_id: str) -> str | None:
        path = await asyncio.to_thread(self._store.thumbnail_path, event_id)
        return None if path is None else str(path)

    async def thumbnail_bytes(self, event_id: str) -> bytes | None:
        path = await asyncio.to_thread(self._store.thumbnail_path, event_id)
        return None if path is None else await asyncio.to_thread(path.read_bytes)

    async def mark_published(self, event_ids: list[str], at: datetime | None = None) -> int:
        return await asyncio.to_thread(self._store.mark_published, event_ids, at)

    async def unpublished_events(self, max_age_s: float | None) -> list[Event]:
        return await self._feed(partial(self._store.unpublished_events, max_age_s))

    async def delivery_cursor(self, max_age_s: float) -> tuple[int, int]:
        """(the publisher's acknowledged cursor within max_age_s, the last seq); see feed."""
        return await self._feed(partial(feed.delivery_cursor, self._store, max_age_s))

    async def events_since(self, max_age_s: float) -> list[Event]:
        return await self._feed(partial(self._store.events_since, max_age_s))

    async def counts(self) -> dict[str, int]:
        counts: dict[str, int] = await asyncio.to_thread(self._store.counts)
        self._metrics.stored(int(counts.get("stored", 0)))
        return counts

    # The delivery feed (publisher, live stream) and summaries: reads only, each in a thread.

    async def last_seq(self) -> int:
        """The largest stored seq (where a new live stream starts)."""
        return await self._feed(partial(feed.last_seq, self._store))

    async def seq_of(self, event_id: str) -> int | None:
        """The seq of a stored event (a stream's Last-Event-ID), or None."""
        return await self._feed(partial(feed.seq_of, self._store, event_id))

    async def events_after(
        self,
        after: int,
        upto: int | None = None,
        limit: int = 500,
        wait_s: float = 0.0,
        **filters: Any,
    ) -> list[tuple[int, Event]]:
        """(seq, event) stored after seq `after`, in saving order (see storage.feed); with
        none yet, waits up to wait_s (≤ feed.MAX_WAIT_S) for the next commit."""
        return await self._commits.long_poll(
            partial(feed.events_after, self._store, after, upto, limit, **filters),
            wait_s,
            self._feed,
        )

    async def summary(self, **params: Any) -> Summary:
        """Counts, busiest hour and representative events of a period (see storage.summary)."""
        return await self._read(partial(summarize, self._store, **params))

    async def flush(self) -> int:
        """Export pending rows to Parquet now (used at shutdown and by --until-done)."""
        return await asyncio.to_thread(self._store.export_parquet)

    async def health(self) -> dict[str, Any]:
        """ok, why not (`detail`), the path and the counts; a full disk is `degraded`."""
        counts = await self.counts()
        full = self._writer.disk_full
        detail = DISK_FULL if full else ""
        return {"ok": not full, "detail": detail, "path": str(self._config.storage.path), **counts}

    def pid(self) -> int:
        """The actor's process id (operators and crash tests)."""
        return os.getpid()

    async def close(self, timeout_s: float = CLOSE_WAIT_S) -> dict[str, Any]:
        """Commit queued saves (up to timeout_s), then always export Parquet and checkpoint.

        New saves are refused at once, maintenance stops meanwhile. Saves queued at timeout_s
        get `StoreBusyError` (nothing stored: their callers hold them); the batch in commit is
        waited for (GroupCommitWriter.close). Each step runs even when one before it failed.
        """
        self._commits.closed = True
        self._commits.committed()  # long-polls answer now
        report: dict[str, Any] = {"refused": 0, "exported": None, "closed": False}
        stopping = asyncio.ensure_future(asyncio.to_thread(self._maintenance.stop, CLOSE_STEP_S))
        report["refused"] = await self._writer.close(timeout_s)
        await stopping
        for pool in (self._reads, self._feed_reads):  # running reads end (a read deadline at
            try:  # most) before the store closes their cursors; queued ones are cancelled
                await asyncio.wait_for(
                    asyncio.to_thread(partial(pool.shutdown, wait=True, cancel_futures=True)),
                    CLOSE_STEP_S,
                )
            except TimeoutError:
                logger.warning("reads still running at close")
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
