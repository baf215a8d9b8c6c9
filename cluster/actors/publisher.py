"""The `mqtt-publisher` actor: one per cluster, a Ray shell around `EventPublisher`.

What is published, ack batching, replay and retry, ring dispatch: plain Python in
`pipelines.mqtt.publishing` and the modules it uses. Here: the Ray ports it is built with (the
`event-store` handle given at construction, the ingest actors for rings; Ray metrics from
`cluster.metrics`) and the remote methods; blocking work runs in a thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import ray

from cluster.directory import IngestDirectory
from cluster.metrics import PublisherMetrics
from pipelines.config import Config
from pipelines.events import Event
from pipelines.mqtt.publishing import EventPublisher
from pipelines.naming import PUBLISHER_ACTOR

logger = logging.getLogger(__name__)

MARK_REFS_KEPT = 256  # mark_published calls tracked for flush; past this the finished are pruned
REPLAY_FETCH_S = 120.0  # the longest a replay waits for the store's list of events
FEED_CALL_S = 30.0  # a feed read's answer, beyond its own long-poll
RING_CALL_S = 5.0  # finding a camera's ingest actor, then its answer to a ring


def _sw_version() -> str:
    try:
        return version("liveobject")
    except PackageNotFoundError:
        return "0.1.0"


class _RayStore:
    """The `event-store` handle as a `PublishedStore` port (called from threads only)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._lock = threading.Lock()
        self._refs: list[Any] = []

    def mark_published(self, event_ids: list[str]) -> None:
        ref = self._handle.mark_published.remote(event_ids)
        with self._lock:
            self._refs.append(ref)
            if len(self._refs) > MARK_REFS_KEPT:
                _done, self._refs = ray.wait(self._refs, num_returns=len(self._refs), timeout=0)
            if len(self._refs) > MARK_REFS_KEPT:  # the store does not answer: stop tracking
                # the oldest (flush no longer waits for them; an unmarked event stays
                # unpublished in the store, and a replay may send it again)
                logger.warning("event-store slow: the oldest mark_published call is not tracked")
                del self._refs[0]

    def settle(self, timeout_s: float) -> None:
        with self._lock:
            refs, self._refs = self._refs, []
        if refs:
            ray.get(refs, timeout=timeout_s)

    def delivery_cursor(self, max_age_s: float) -> tuple[int, int]:
        ref = self._handle.delivery_cursor.remote(max_age_s)
        start, last = ray.get(ref, timeout=FEED_CALL_S)
        return int(start), int(last)

    def events_after(
        self,
        after: int,
        *,
        upto: int | None = None,
        limit: int,
        wait_s: float = 0.0,
        unacknowledged: bool = False,
    ) -> list[tuple[int, Event]]:
        ref = self._handle.events_after.remote(
            after, upto, limit, wait_s, unacknowledged=unacknowledged
        )
        rows: list[tuple[int, Event]] = ray.get(ref, timeout=wait_s + FEED_CALL_S)
        return rows

    def events_since(self, max_age_s: float) -> list[Event]:
        events: list[Event] = ray.get(
            self._handle.events_since.remote(max_age_s), timeout=REPLAY_FETCH_S
        )
        return events


class _RayCameras:
    """The running ingest actors as a `CameraRinger` port (the ring worker thread only)."""

    def __init__(self, namespace: str) -> None:
        # cameras come and go with `apply`: the ingest actors are asked where each one runs
        self._directory = IngestDirectory(namespace)

    def ring(self, camera_id: str) -> bool:
        try:
            answer = self._directory.ring(camera_id, RING_CALL_S)
        except Exception as exc:  # the camera's actor died or did not answer in time
            logger.warning("ring for %s not delivered: %s", camera_id, type(exc).__name__)
            return False
        return answer is not None


@ray.remote
class MqttPublisher:
    """Publishes stored events to MQTT, keeps HA discovery and retained states current."""

    def __init__(self, config: Config, store: Any = None) -> None:
        self._publisher = EventPublisher(
            config,
            store=None if store is None else _RayStore(store),
            cameras=_RayCameras(config.ray.namespace),
            metrics=PublisherMetrics(str(config.mqtt.qos)),
            sw_version=_sw_version(),
        )
        self._publisher.start()
        logger.info("mqtt-publisher started (broker %s)", self._publisher.core.broker)

    async def publish_events(self, events: list[Event]) -> None:
        """Hand events to MQTT in order; returns at once (never waits for the broker).

        Not the product's path (the publisher reads the store's feed): for a publisher without
        a store, as tests and the MQTT benchmark use it.
        """
        self._publisher.publish_events(events)

    async def reconfigure(self, config: Config) -> dict[str, list[str]]:
        """Take a new config's cameras and link settings in place (cluster.reconfigure)."""
        return self._publisher.reconfigure(config)

    async def set_camera_status(
        self, camera_id: str, status: str, source_type: str, reason: str | None = None
    ) -> None:
        """Publish a camera's retained status (online/offline/unavailable/unplaceable)."""
        self._publisher.set_camera_status(camera_id, status, source_type, reason)

    async def set_activity(self, camera_id: str, on: bool) -> None:
        """Publish a camera's retained activity `ON`/`OFF`."""
        self._publisher.set_activity(camera_id, on)

    async def status(self) -> dict[str, Any]:
        """The connection state and counters (no credentials)."""
        return self._publisher.status()

    async def flush(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until nothing is pending and every ack reached the store, or timeout_s."""
        return await asyncio.to_thread(self._publisher.flush, timeout_s)

    async def replay(self, since_s: float) -> int:
        """Republish every stored event younger than since_s (published or not); the count sent."""
        return await asyncio.to_thread(self._publisher.replay, since_s)

    async def shutdown(self) -> dict[str, Any]:
        """Publish `offline`, disconnect and stop background work."""
        return await asyncio.to_thread(self._publisher.shutdown)


def get_publisher(config: Config, store: Any = None) -> Any:
    """The `mqtt-publisher` actor handle, created if it does not exist (safe under races).

    `store` (the `event-store` handle) is given to a new publisher, which reads the store's
    delivery feed through it (the store knows nothing of the publisher). Call from the driver,
    not an event loop.
    """
    options: dict[str, Any] = {
        "name": PUBLISHER_ACTOR,
        "namespace": config.ray.namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": -1,
        "num_cpus": 0.05,
    }
    try:
        handle = MqttPublisher.options(**options).remote(config, store)  # type: ignore[attr-defined]
    except ValueError:  # lost a creation race on a Ray without atomic get_if_exists
        handle = ray.get_actor(PUBLISHER_ACTOR, namespace=config.ray.namespace)
    return handle
