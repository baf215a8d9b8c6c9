"""Messages the MQTT publisher receives: Home Assistant's birth message, the retained camera
registry (to clear discovery of removed cameras) and doorbell ring commands.

Handlers run on paho's network thread: they are quick, call only non-blocking hooks, and
report problems by logging and counting (the core catches anything that still escapes). What a
message can make the publisher send is bounded:
- a ring for a camera that is not a configured doorbell is ignored before the rate limiter (so
  made-up ids cannot evict the doorbell's bucket); rings are rate-limited per camera
  (`mqtt.ring_rate_per_min`, a token bucket): a flood costs a counter increment each;
- the camera registry is honoured only when retained, under this instance's discovery prefix
  and at most MAX_REGISTRY_IDS ids (MAX_REGISTRY_BYTES), and its clears are sent by a worker
  thread with a queue of one (a newer registry replaces one not yet handled), not by paho's;
- Home Assistant's birth re-sends discovery and states at most once per BIRTH_DEBOUNCE_S: a
  birth inside that time is coalesced into one re-send when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from pipelines.mqtt.topics import Topics, clear_discovery_messages, parse_camera_registry
from pipelines.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

RingCallback = Callable[[str], None]
MAX_REGISTRY_BYTES = 64 * 1024
MAX_REGISTRY_IDS = 1024
BIRTH_DEBOUNCE_S = 10.0


@dataclass(frozen=True)
class InboundHooks:
    """What the handler may do to the core; every hook returns at once."""

    publish_retained: Callable[[str, str], object]  # (topic, payload), QoS 1, retained
    current_cameras: Callable[[], set[str]]  # cameras whose discovery we publish now
    republish_state: Callable[[], None]  # discovery + retained states
    count: Callable[[str, int], None]  # add to a status counter
    on_ring: RingCallback | None = None  # None: no ring subscription
    is_doorbell: Callable[[str], bool] = lambda _camera_id: True  # ring targets


class InboundHandler:
    """Subscriptions of the publisher and what each received message makes it do."""

    def __init__(
        self,
        topics: Topics,
        hooks: InboundHooks,
        *,
        discovery: bool,
        ring_rate_per_min: float | None = None,
    ) -> None:
        self._topics = topics
        self._hooks = hooks
        self._discovery = discovery
        self._ring_limit = RateLimiter(ring_rate_per_min) if ring_rate_per_min else None
        self._lock = threading.Lock()
        self._registry: bytes | None = None  # the newest registry not handled yet
        self._registry_wake = threading.Event()
        self._births_at: float | None = None  # when discovery was last re-sent for a birth
        self._birth_timer: threading.Timer | None = None
        self.birth_debounce_s = BIRTH_DEBOUNCE_S
        self._worker: threading.Thread | None = None
        self._stopped = False

    def subscriptions(self) -> list[tuple[str, int]]:
        """(filter, QoS) to subscribe to on every connect, before any retained state is sent.

        The broker handles one connection's packets in order, so the previous retained camera
        registry reaches us before the new one we publish right after subscribing.
        """
        subs: list[tuple[str, int]] = []
        if self._discovery:
            subs += [(self._topics.ha_status, 1), (self._topics.cameras, 1)]
        if self._hooks.on_ring is not None:
            subs.append((self._topics.ring_filter, 1))
        return subs

    def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """Act on one received message."""
        if topic == self._topics.ha_status:
            if payload == b"online" and self._discovery:
                self._ha_born()
        elif topic == self._topics.cameras:
            if self._discovery:
                self._registry_received(payload, retained)
        elif self._hooks.on_ring is not None and mqtt.topic_matches_sub(
            self._topics.ring_filter, topic
        ):
            self._ring(topic, retained, bool(payload))

    def stop(self) -> None:
        """End the registry worker and a pending birth re-send."""
        with self._lock:
            timer, self._birth_timer = self._birth_timer, None
            self._registry = None
            self._stopped = True
        if timer is not None:
            timer.cancel()
        self._registry_wake.set()

    # ---------------------------------------------------------------- Home Assistant's birth
    def _ha_born(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._birth_timer is not None:
                self._hooks.count("births_coalesced", 1)
                return  # a re-send is due already
            last = self._births_at
            if last is None or now - last >= self.birth_debounce_s:
                self._births_at = now
                send_now = True
            else:
                timer = threading.Timer(last + self.birth_debounce_s - now, self._birth_due)
                timer.daemon = True
                self._birth_timer = timer
                send_now = False
        if send_now:
            logger.info("Home Assistant is online: re-sending discovery and states")
            self._hooks.republish_state()
        else:
            self._hooks.count("births_coalesced", 1)
            timer.start()

    def _birth_due(self) -> None:
        with self._lock:
            if self._birth_timer is None:
                return  # stopped
            self._birth_timer = None
            self._births_at = time.monotonic()
        logger.info("Home Assistant came online again: re-sending discovery and states")
        self._hooks.republish_state()

    # ---------------------------------------------------------------- the camera registry
    def _registry_received(self, payload: bytes, retained: bool) -> None:
        if not retained:
            # the previous run's comes retained (the broker hands it over on subscribe); a live
            # one is the echo of the registry we publish ourselves, or somebody else's
            logger.debug("ignoring a live camera registry on %s", self._topics.cameras)
            return
        if len(payload) > MAX_REGISTRY_BYTES:
            self._hooks.count("registry_ignored", 1)
            logger.warning("ignoring a too large camera registry on %s", self._topics.cameras)
            return
        with self._lock:
            self._registry = payload  # a newer one replaces one not handled yet
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._registry_loop, name="mqtt-registry", daemon=True
                )
                self._worker.start()
        self._registry_wake.set()

    def _registry_loop(self) -> None:
        while not self._stopped:
            self._registry_wake.wait()
            self._registry_wake.clear()
            with self._lock:
                payload, self._registry = self._registry, None
            if payload is None:
                continue
            try:
                self._clear_removed_cameras(payload)
            except Exception:
                logger.exception("handling the camera registry failed")

    def _clear_removed_cameras(self, payload: bytes) -> None:
        """Clear discovery configs of cameras in a (previous) registry that are gone now."""
        try:
            old_prefix, old_ids = parse_camera_registry(payload, MAX_REGISTRY_BYTES)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
            logger.warning(
                "ignoring malformed camera registry on %s: %s", self._topics.cameras, exc
            )
            return
        if old_prefix != self._topics.discovery_prefix or len(old_ids) > MAX_REGISTRY_IDS:
            self._hooks.count("registry_ignored", 1)
            logger.warning(
                "ignoring a camera registry of %d ids under %r: ours is at most %d ids under %r",
                len(old_ids),
                old_prefix[:64],
                MAX_REGISTRY_IDS,
                self._topics.discovery_prefix,
            )
            return
        current = self._hooks.current_cameras()
        stale = [cid for cid in dict.fromkeys(old_ids) if cid not in current]
        if not stale:
            return
        messages = [m for cid in stale for m in clear_discovery_messages(cid, self._topics)]
        logger.info(
            "clearing Home Assistant discovery of %d removed camera(s): %s",
            len(stale),
            ", ".join(stale),
        )
        self._hooks.count("discovery_cleared", len(messages))
        for topic, empty in messages:
            self._hooks.publish_retained(topic, empty)

    def _ring(self, topic: str, retained: bool, has_payload: bool) -> None:
        camera_id = self._topics.ring_camera(topic)
        # A retained ring would ring again on every reconnect, an empty payload is somebody
        # clearing a retained one, and a level that is not a camera id is hostile.
        why = "invalid" if camera_id is None else "retained" if retained else None
        if why is None and not has_payload:
            why = "empty"
        on_ring = self._hooks.on_ring
        if why is not None or camera_id is None or on_ring is None:
            self._hooks.count("rings_ignored", 1)
            logger.warning("ignoring %s ring command on %r", why, topic[:200])
            return
        self._hooks.count("rings_received", 1)
        if not self._hooks.is_doorbell(camera_id):  # before the limiter: made-up ids cost
            self._hooks.count("rings_ignored", 1)  # nothing and evict no real bucket
            logger.debug("ignoring a ring for %r: not a configured doorbell", camera_id[:64])
            return
        if self._ring_limit is not None and not self._ring_limit.allow(camera_id):
            self._rate_limited(camera_id)
            return
        try:
            on_ring(camera_id)
        except Exception:
            logger.exception("MQTT on_ring callback raised; continuing")

    def _rate_limited(self, camera_id: str) -> None:
        """Count a ring over the rate; log the first and then every 100th (a flood logs little)."""
        self._hooks.count("rings_rate_limited", 1)
        assert self._ring_limit is not None
        limited = self._ring_limit.limited
        if limited == 1 or limited % 100 == 0:
            logger.warning(
                "ring command for %s dropped: over mqtt.ring_rate_per_min (%d dropped so far)",
                camera_id,
                limited,
            )
