"""The `event-store` actor: the single DuckDB writer, Parquet exporter and thumbnail keeper.

Write queue: saves wait in a queue of at most `storage.max_queued_saves` for the group-commit
writer (plus the one batch being committed). At the bound a save is refused at once with
`StoreBusyError` (nothing stored, retryable): the camera keeps the event in its own bounded
buffer and retries with backoff, so thumbnails pile up nowhere. Saves that arrive while the
store is closing get the same error.

Maintenance runs in a thread started with the actor (also after a restart), not on the first
save: retention and compaction of closed days at once and after each midnight UTC, Parquet
export every `storage.parquet_flush_interval_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ray

from cluster.metrics import StoreMetrics
from cluster.placement import STORE_NODE_SHARE
from pipelines.config import Config
from pipelines.events import Event, utcnow
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR
from pipelines.storage import EventStore, StoreBusyError, feed
from pipelines.storage.summary import Summary, summarize

logger = logging.getLogger(__name__)

MAX_BATCH = 512  # saves committed in one transaction at most
GATHER_S = 0.002  # after a lone save, how long the writer waits for others to join it
CLOSE_WAIT_S = 20.0  # close(): how long queued saves may take before they are refused
CLOSE_STEP_S = 10.0  # close(): the most each later step (export, checkpoint) may take


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
        self._queue: asyncio.Queue[_Pending] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._batches = 0
        self._max_batch = 0
        self._max_queued = 0
        self._refused = 0
        self._metrics = StoreMetrics()
        self._maintenance_runs = {"retention": 0, "compaction": 0, "export": 0}
        self._maintenance_stop = threading.Event()
        self._maintenance = threading.Thread(
            target=self._maintain, name="store-maintenance", daemon=True
        )
        self._maintenance.start()
        logger.info("event-store opened %s", storage.path)

    def _maintain(self) -> None:
        """Expire and compact closed days now and after each midnight UTC; export every
        flush interval. Runs in its own thread from actor start (store calls take its lock).

        Compaction and retention remove Parquet files, the one thing a reader mid-query can
        trip over (see pipelines.storage): they run at startup and at the first pass after
        midnight UTC only, never against today's partition.
        """
        interval = self._config.storage.parquet_flush_interval_s
        last_day = None
        while not self._maintenance_stop.is_set():
            today = utcnow().date()
            steps = [("export", self._store.export_parquet)]
            if today != last_day:
                steps[:0] = [
                    ("retention", self._store.apply_retention),
                    ("compaction", self._store.compact_parquet),
                ]
                last_day = today
            for name, step in steps:
                try:
                    step()
                    self._maintenance_runs[name] += 1
                except Exception as exc:  # keep the loop alive; the error is in the log
                    logger.error("store maintenance (%s) failed: %s", name, exc)
            self._maintenance_stop.wait(interval)

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
        if self._closing:
            raise StoreBusyError("the event store is closing; retry with the next store")
        queue = self._ensure_writer()
        done: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        try:
            queue.put_nowait(_Pending(event, thumbnail, done))
        except asyncio.QueueFull:
            self._refused += 1
            if self._refused == 1 or self._refused % 1000 == 0:
                logger.warning(
                    "event-store write queue full (%d); %d saves refused so far (retryable)",
                    queue.maxsize,
                    self._refused,
                )
            raise StoreBusyError(
                f"the event store's write queue is full ({queue.maxsize}); retry later"
            ) from None
        self._max_queued = max(self._max_queued, queue.qsize())
        return await done

    def _ensure_writer(self) -> asyncio.Queue[_Pending]:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self._config.storage.max_queued_saves)
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
            started = time.monotonic()
            try:
                saved, already_published = await self._commit(batch)
                elapsed_ms = (time.monotonic() - started) * 1000.0
                self._metrics.committed(len(saved), elapsed_ms, queue.qsize())
            except Exception as exc:  # every caller of the batch gets the error: none is lost
                logger.error("saving a batch of %d events failed: %s", len(batch), exc)
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
            else:
                for item, event in zip(batch, saved, strict=True):
                    if not item.done.done():  # a cancelled caller's event is stored all the same
                        item.done.set_result(event)
                # A save re-sent after its first try committed (a timeout, a restart) must not
                # publish the same event again once it was delivered.
                self._publish([e for e in saved if e.event_id not in already_published])
            finally:
                for _ in batch:
                    queue.task_done()

    async def _commit(self, batch: list[_Pending]) -> tuple[list[Event], set[str]]:
        """Correlate and append a batch in a thread; the stored events and which of them were
        already published before this batch."""
        events = [item.event for item in batch]
        thumbs = {item.event.event_id: item.thumbnail for item in batch if item.thumbnail}
        window = self._config.correlation.window_s

        def write() -> tuple[list[Event], set[str]]:
            published = self._store.published_among([e.event_id for e in events])
            return self._store.save_batch(events, thumbs, window), published

        return await asyncio.to_thread(write)

    def _publish(self, saved: list[Event]) -> None:
        try:
            publisher = self._publisher_handle()
            if publisher is not None:  # fire and forget, one call a batch: never waits on MQTT
                unique = list({event.event_id: event for event in saved}.values())
                publisher.publish_events.remote(unique)
        except Exception as exc:  # stored as unpublished: the publisher's replay catches up
            logger.warning("handing %d events to the publisher failed: %s", len(saved), exc)

    def writer_stats(self) -> dict[str, Any]:
        """Counters of this process: batches committed, largest, saves queued now, most ever
        queued, the bound, saves refused at the bound; maintenance passes by step."""
        queued = 0 if self._queue is None else self._queue.qsize()
        return {
            "batches": self._batches,
            "max_batch": self._max_batch,
            "queued": queued,
            "max_queued": self._max_queued,
            "max_queued_saves": self._config.storage.max_queued_saves,
            "refused": self._refused,
            "maintenance": dict(self._maintenance_runs),
        }

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

    def request_stop(self) -> None:
        """Ask the process running the cluster (`liveobject run`) to shut down gracefully."""
        self._stop_requested = True

    def stop_requested(self) -> bool:
        return self._stop_requested

    async def close(self, timeout_s: float = CLOSE_WAIT_S) -> dict[str, Any]:
        """Commit queued saves (up to timeout_s), then always export Parquet and checkpoint.

        New saves are refused from the start. Saves still queued at timeout_s get
        `StoreBusyError` (nothing stored: their callers still hold them); a batch already
        being committed is finished. Every step runs even when one before it failed.
        """
        self._closing = True
        report: dict[str, Any] = {"refused": 0, "exported": None, "closed": False}
        if self._queue is not None:
            report["refused"] = await self._drain_queue(self._queue, timeout_s)
        if self._writer is not None:
            self._writer.cancel()
        self._maintenance_stop.set()
        await asyncio.to_thread(self._maintenance.join, CLOSE_STEP_S)
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

    async def _drain_queue(self, queue: asyncio.Queue[_Pending], timeout_s: float) -> int:
        """Wait for queued saves; refuse those left at timeout_s. The number refused."""
        try:
            await asyncio.wait_for(queue.join(), max(0.0, timeout_s))
            return 0
        except TimeoutError:
            pass
        refused = 0
        while not queue.empty():
            item = queue.get_nowait()
            if not item.done.done():
                item.done.set_exception(StoreBusyError("the event store closed before this save"))
            queue.task_done()
            refused += 1
        logger.error("store closing: %d queued saves refused after %.1f s", refused, timeout_s)
        try:  # the batch in the writer's hands is committed and answered
            await asyncio.wait_for(queue.join(), CLOSE_STEP_S)
        except TimeoutError:
            logger.error("store closing: the batch being committed did not finish")
        return refused


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
