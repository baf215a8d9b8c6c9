"""`LocalStoreClient`: the StoreClient over an EventStore in this process (no Ray).

For running the API app without a cluster: benchmarks of the routes, browser tests of the review
page, looking at a copy of a store. Cameras are the configured ones without live status (there
are no ingest actors here), and a ring is refused.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pipelines.config import Config
from pipelines.events import Event
from pipelines.storage import EventStore, feed
from pipelines.storage.summary import Summary, summarize

LOCAL_POLL_S = 0.1  # events_after with wait_s: how often it looks for new rows


class LocalStoreClient:
    """StoreClient over an in-process EventStore; every store call runs in a thread."""

    def __init__(self, store: EventStore, config: Config) -> None:
        self.store = store
        self.config = config

    async def get(self, event_id: str) -> Event | None:
        """One event."""
        return await asyncio.to_thread(self.store.get, event_id)

    async def query(self, **filters: Any) -> tuple[list[Event], str | None]:
        """A page of events."""
        return await asyncio.to_thread(lambda: self.store.query(**filters))

    async def thumbnail_path(self, event_id: str) -> Path | None:
        """The thumbnail file, or None."""
        return await asyncio.to_thread(self.store.thumbnail_path, event_id)

    async def thumbnail_bytes(self, event_id: str) -> bytes | None:
        """The thumbnail's bytes, or None."""
        path = await self.thumbnail_path(event_id)
        return None if path is None else await asyncio.to_thread(path.read_bytes)

    async def health(self) -> dict[str, dict[str, Any]]:
        """The store's counts; no Ray, VLM or MQTT in this process."""
        counts = await asyncio.to_thread(self.store.counts)
        return {"store": {"ok": True, "detail": "", **counts}}

    async def cameras(self) -> list[dict[str, Any]]:
        """The configured cameras, status unknown (no ingest actors in this process)."""
        return [
            {
                "camera_id": cam.id,
                "camera_name": cam.name,
                "source_type": cam.source_type,
                "doorbell": cam.doorbell,
                "enabled": cam.enabled,
                "status": "unknown",
                "fps": 0.0,
                "last_event": None,
            }
            for cam in self.config.cameras
        ]

    async def ring(self, camera_id: str) -> dict[str, Any]:
        """Refused: nothing here can analyse a frame."""
        return {"accepted": False, "reason": "no camera actors in this process"}

    async def last_seq(self) -> int:
        """The largest stored seq."""
        return await asyncio.to_thread(feed.last_seq, self.store)

    async def seq_of(self, event_id: str) -> int | None:
        """The seq of a stored event, or None."""
        return await asyncio.to_thread(feed.seq_of, self.store, event_id)

    async def events_after(
        self,
        after: int,
        upto: int | None = None,
        limit: int = 500,
        wait_s: float = 0.0,
        **filters: Any,
    ) -> list[tuple[int, Event]]:
        """(seq, event) saved after seq `after`, in saving order; with none yet, looks again
        every LOCAL_POLL_S up to wait_s (no commit signal reaches this process)."""
        deadline = time.monotonic() + wait_s
        while True:
            rows = await asyncio.to_thread(
                lambda: feed.events_after(self.store, after, upto, limit, **filters)
            )
            left = deadline - time.monotonic()
            if rows or left <= 0:
                return rows
            await asyncio.sleep(min(LOCAL_POLL_S, left))

    async def summary(self, **params: Any) -> Summary:
        """A period's Summary."""
        return await asyncio.to_thread(lambda: summarize(self.store, **params))
