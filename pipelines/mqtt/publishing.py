"""The event publisher: stored events to MQTT, acks back to the store, replay, discovery.

Plain Python over `MqttPublisherCore` and the ports of `pipelines.mqtt.ports` (the store, the
cameras, metrics); the `mqtt-publisher` actor only builds it with Ray adapters. paho's callbacks
run on paho's thread, so they only record (acks, rejections, rings). A feed thread reads the
store's delivery feed (`pipelines.mqtt.follow`): live events as they are saved and, after every
(re)connect or when the retry timer is due, the unacknowledged ones again from the store's
cursor; a background thread sends acked ids to the store in batches (the acknowledgement).

The retained `last_event` carries the camera route's thumbnail URL (`camera_thumbnail_url`):
with an API key its token does not expire, so Home Assistant's image never breaks.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.config import Config
from pipelines.events import Event, camera_thumbnail_url, event_json
from pipelines.mqtt.acks import AckBook
from pipelines.mqtt.client import MqttPublisherCore, Outcome
from pipelines.mqtt.follow import FeedFollower
from pipelines.mqtt.ports import CameraRinger, PublishedStore, PublisherMetrics
from pipelines.mqtt.replay import RecentIds, RetryTimer, republish, retry_interval
from pipelines.mqtt.rings import RingDispatcher
from pipelines.mqtt.topics import (
    CameraInfo,
    Topics,
    discovery_messages,
    last_event_from_event_payload,
    to_json,
)

logger = logging.getLogger(__name__)

# The background thread waits this long after a wake so that one `mark_published` call (and
# one metrics update) covers many acks.
ACK_GATHER_S = 0.02
IDLE_WAKE_S = 0.2  # without a wake, how often the background thread looks at the retry timer
FEED_RETRY_S = 0.5  # the feed thread's pause after a failed read, times the failures in a row
FEED_RETRY_MAX_S = 5.0


@dataclass(frozen=True)
class _Links:
    """What an event payload's URLs are built from (replaced by reconfigure)."""

    base_url: str
    api_key: str | None
    ttl_s: int

    @classmethod
    def of(cls, config: Config) -> _Links:
        return cls(
            config.api.effective_base_url(),
            config.api.link_key(),
            config.api.thumbnail_url_ttl_s,
        )


class EventPublisher:
    """Publishes stored events to MQTT, keeps HA discovery and retained states current."""

    def __init__(
        self,
        config: Config,
        *,
        store: PublishedStore | None,
        cameras: CameraRinger,
        metrics: PublisherMetrics,
        sw_version: str,
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._sw_version = sw_version
        self._links = _Links.of(config)
        self._topics = Topics(config.mqtt.topic_prefix, config.mqtt.discovery.prefix)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._acks = AckBook()
        self._recent = RecentIds()
        self._retry = RetryTimer(retry_interval(config.mqtt))
        self._stopping = False
        self._counts = {"replayed": 0, "filtered": 0}
        self._feed = (
            None
            if store is None
            else FeedFollower(
                store,
                window_s=config.mqtt.replay_window_s,
                page=max(1, config.mqtt.queue_size // 2),
                live=self.publish_events,
                replay=lambda events: self._republish(events, skip_recent=True),
            )
        )
        self._rings = RingDispatcher(cameras, self._is_doorbell)
        self.core = MqttPublisherCore(
            config.mqtt,
            self._topics,
            self._on_acked,
            on_connected=self._on_connected,
            on_ring=self._rings.on_ring,
            is_doorbell=self._is_doorbell,
            on_rejected=self._on_rejected,
        )
        for camera in config.cameras:
            if camera.enabled:
                self._set_discovery(camera.id, CameraInfo.from_config(camera))
        self._thread = threading.Thread(target=self._background, name="mqtt-publisher-bg")
        self._thread.daemon = True
        self._feed_thread = threading.Thread(target=self._follow, name="mqtt-publisher-feed")
        self._feed_thread.daemon = True

    def start(self) -> None:
        """Start the background and feed threads and connecting to the broker."""
        self._thread.start()
        if self._feed is not None:
            self._feed_thread.start()
        self.core.start()

    def publish_events(self, events: list[Event]) -> int:
        """Hand stored events to MQTT in order without waiting for the broker; how many sent.
        The feed thread calls it with what it reads live (tests and benchmarks directly)."""
        newest: dict[str, tuple[Event, str]] = {}  # per camera: last_event once per batch
        sent = sum(self._publish(event, replay=False, newest=newest) == "sent" for event in events)
        for event, payload in newest.values():
            self.core.update_last_event(event, payload, self._last_event_json(event, payload))
        if sent:
            self._metrics.published(sent)
        return sent

    def reconfigure(self, config: Config) -> dict[str, list[str]]:
        """Take a new config's cameras and link settings: discovery of removed cameras is
        cleared, that of new or changed ones (re)sent."""
        old = {c.id: c for c in self._config.cameras if c.enabled}
        self._config = config
        self._links = _Links.of(config)
        if self._feed is not None:
            self._feed.set_window(config.mqtt.replay_window_s)
        new = {c.id: c for c in config.cameras if c.enabled}
        for camera_id in sorted(set(old) - set(new)):
            self.core.remove_discovery(camera_id)
        for camera_id, camera in new.items():
            self._set_discovery(camera_id, CameraInfo.from_config(camera))
        return {"removed": sorted(set(old) - set(new)), "added": sorted(set(new) - set(old))}

    def set_camera_status(
        self, camera_id: str, status: str, source_type: str, reason: str | None = None
    ) -> None:
        """Publish a camera's retained status (online/offline/unavailable/unplaceable)."""
        try:
            name = self._config.camera(camera_id).name or camera_id
        except KeyError:
            name = camera_id
        self.core.set_camera_status(camera_id, name, status, source_type, reason)

    def set_activity(self, camera_id: str, on: bool) -> None:
        """Publish a camera's retained activity `ON`/`OFF`."""
        self.core.set_activity(camera_id, on)

    def status(self) -> dict[str, Any]:
        """The core's connection state and counters plus the publisher's own bookkeeping."""
        out = self.core.status()
        with self._lock:
            counts = dict(self._counts)
        out["acks_to_store"] = self._acks.waiting
        out["replayed"] = max(out["replayed"], counts["replayed"])
        out["filtered"] = counts["filtered"]
        out.update(self._rings.counts())
        out["replay_passes"] = 0 if self._feed is None else self._feed.rewinds
        out["feed_cursor"] = None if self._feed is None else self._feed.cursor
        out["retry_passes"] = self._retry.passes
        out["acks_let_go"] = self._acks.let_go
        out["replay_window_s"] = self._config.mqtt.replay_window_s
        left = self._retry.left_s()
        out["retry_in_s"] = None if left is None else round(left, 1)
        return out

    def flush(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until the feed is read up to where it ended at the call, nothing is pending and
        every ack reached the store, or timeout_s; blocks."""
        deadline = time.monotonic() + timeout_s
        end = self._feed_end()
        while time.monotonic() < deadline:
            read = self._feed is None or end is None or self._feed.reached(end)
            # without a store, acks have nowhere to go: they are kept, never waited for
            acks_done = self._store is None or not self._acks.waiting
            if read and self.core.pending == 0 and acks_done:
                break
            self._wake.set()
            time.sleep(ACK_GATHER_S)
        if self._store is not None:
            try:
                self._store.settle(max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                logger.warning("marking events published did not finish: %s", type(exc).__name__)
        return self.status()

    def replay(self, since_s: float) -> int:
        """Republish every stored event younger than since_s (published or not); blocks."""
        if self._store is None:
            return 0
        return self._republish(self._store.events_since(float(since_s)), skip_recent=False)

    def shutdown(self) -> dict[str, Any]:
        """Publish `offline`, disconnect and stop background work; blocks briefly."""
        status = self.flush(2.0)
        self._stopping = True
        self._wake.set()
        self.core.stop()
        self._rings.shutdown()
        status["connected"] = False
        return status

    # ---------------------------------------------------------------- internals
    def _set_discovery(self, camera_id: str, info: CameraInfo) -> None:
        messages = discovery_messages(info, self._topics, self._links.base_url, self._sw_version)
        self.core.set_discovery(camera_id, messages)

    def _is_doorbell(self, camera_id: str) -> bool:
        try:
            camera = self._config.camera(camera_id)
        except KeyError:
            return False
        return bool(camera.doorbell and camera.enabled)

    def _skip_filtered(self, event: Event) -> bool:
        """The object filter: an event the camera marked `filtered` (none of the objects its
        camera or zone asks for; never a ring) is stored only. Counted, never sent."""
        if not event.filtered or event.is_doorbell_ring:
            return False
        with self._lock:
            self._counts["filtered"] += 1
        logger.debug("event %s filtered: stored, not published", event.event_id)
        return True

    def _publish(
        self,
        event: Event,
        *,
        replay: bool,
        newest: dict[str, tuple[Event, str]] | None = None,
    ) -> Outcome | Literal["filtered"]:
        """Hand one event to MQTT; with `newest` (a batch), its camera's `last_event` is left
        to the caller: the batch's newest sent event per camera is kept there."""
        if self._skip_filtered(event):
            return "filtered"
        links = self._links
        payload = event_json(event, links.base_url, links.api_key, links.ttl_s, resolved=True)
        self._acks.sent(event.event_id)
        if newest is None:  # last_event is built only when it is sent (updates coalesce)
            last = self._last_event_json(event, payload)
            outcome = self.core.publish_event(event, payload, last_event_json=last, replay=replay)
        else:
            outcome = self.core.publish_event(event, payload, replay=replay, newest=newest)
        if outcome == "sent":
            self._recent.add(event.event_id)
            return outcome
        self._acks.unsent(event.event_id)
        if outcome != "disabled":
            self._metrics.failed(outcome)
        if outcome in ("dropped", "failed"):
            self._retry.arm()
        return outcome

    def _last_event_json(self, event: Event, payload: str) -> Callable[[], str]:
        """The retained last_event JSON, built on demand; its thumbnail_url goes through the
        camera route, whose token (with an API key) never expires."""
        links = self._links

        def build() -> str:
            last = last_event_from_event_payload(json.loads(payload))
            last["thumbnail_url"] = camera_thumbnail_url(
                event.camera_id, event.event_id, links.base_url, links.api_key
            )
            return to_json(last)

        return build

    def _on_rejected(self, event_ids: list[str]) -> None:
        # paho's thread: the broker refused these after they were sent; replay them later
        self._recent.discard(event_ids)
        self._retry.arm()

    def _on_acked(self, event_ids: list[str]) -> None:
        # paho's thread: record and wake the background thread, nothing slow
        self._acks.acked(event_ids)
        if not self._wake.is_set():  # one set per batch, not a notify per ack
            self._wake.set()

    def _on_connected(self) -> None:
        if self._feed is not None:
            self._feed.rewind()

    def _feed_end(self) -> int | None:
        """The feed's last seq now (None without a store, or when it does not answer)."""
        if self._store is None:
            return None
        try:
            return self._store.delivery_cursor(0.0)[1]
        except Exception as exc:
            logger.warning("flush: the store's feed did not answer: %s", type(exc).__name__)
            return None

    def _background(self) -> None:
        while not self._stopping:
            if self._wake.wait(IDLE_WAKE_S):
                time.sleep(ACK_GATHER_S)  # let more acks join this batch
            self._wake.clear()
            try:
                self._acks.forward(self._store, self._metrics)
                self._metrics.pending(self.core.pending)
            except Exception:
                logger.exception("mqtt-publisher background step failed")

    def _follow(self) -> None:
        """The feed thread: read the store's feed until shutdown; a failed read is retried."""
        assert self._feed is not None
        failures = 0
        while not self._stopping:
            if self._retry.due(self.core.connected):
                self._feed.rewind()
            try:
                self._feed.step()
                failures = 0
            except Exception as exc:  # the store away or restarting: keep the position
                failures += 1
                if failures == 1:
                    logger.warning("mqtt-publisher cannot read the store: %s", type(exc).__name__)
                time.sleep(min(FEED_RETRY_MAX_S, FEED_RETRY_S * failures))

    def _republish(self, events: list[Event], *, skip_recent: bool) -> int:
        """Publish events in order, pacing on the pending queue; the number sent."""
        sent = republish(
            events,
            lambda event: self._publish(event, replay=True) == "sent",
            self.core,
            limit=max(1, self._config.mqtt.queue_size // 2),
            skip=(lambda event_id: event_id in self._recent) if skip_recent else lambda _: False,
            stopped=lambda: self._stopping,
        )
        with self._lock:
            self._counts["replayed"] += sent
        if sent:
            self._metrics.published(sent)
            self._metrics.replayed(sent)
            if skip_recent:
                logger.info("replayed %d of %d unacknowledged events", sent, len(events))
        return sent
