"""Messages the MQTT publisher receives: Home Assistant's birth message, the retained camera
registry (to clear discovery of removed cameras) and doorbell ring commands.

Handlers run on paho's network thread: they are quick, call only non-blocking hooks, and
report problems by logging and counting (the core catches anything that still escapes). Ring
commands are rate-limited per camera (`mqtt.ring_rate_per_min`, a token bucket): a flood of
presses costs a counter increment each, not a Ray call each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from pipelines.mqtt.topics import Topics, clear_discovery_messages, parse_camera_registry
from pipelines.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

RingCallback = Callable[[str], None]


@dataclass(frozen=True)
class InboundHooks:
    """What the handler may do to the core; every hook returns at once."""

    publish_retained: Callable[[str, str], object]  # (topic, payload), QoS 1, retained
    current_cameras: Callable[[], set[str]]  # cameras whose discovery we publish now
    republish_state: Callable[[], None]  # discovery + retained states
    count: Callable[[str, int], None]  # add to a status counter
    on_ring: RingCallback | None = None  # None: no ring subscription


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
                logger.info("Home Assistant is online: re-sending discovery and states")
                self._hooks.republish_state()
        elif topic == self._topics.cameras:
            if self._discovery:
                self._clear_removed_cameras(payload)
        elif self._hooks.on_ring is not None and mqtt.topic_matches_sub(
            self._topics.ring_filter, topic
        ):
            self._ring(topic, retained, bool(payload))

    def _clear_removed_cameras(self, payload: bytes) -> None:
        """Clear discovery configs of cameras in a (previous) registry that are gone now."""
        try:
            old_prefix, old_ids = parse_camera_registry(payload)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
            logger.warning(
                "ignoring malformed camera registry on %s: %s", self._topics.cameras, exc
            )
            return
        same_prefix = old_prefix == self._topics.discovery_prefix
        current = self._hooks.current_cameras()
        stale = [cid for cid in old_ids if not (same_prefix and cid in current)]
        if not stale:
            return
        old_topics = Topics(self._topics.prefix, old_prefix)
        messages = [m for cid in stale for m in clear_discovery_messages(cid, old_topics)]
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
