"""Ring commands from MQTT: checked against the config, fired one at a time off paho's thread.

At most MAX_PENDING_RINGS wait for the worker; more are rejected and counted (a flood guard
behind the per-camera rate limit of `pipelines.mqtt.inbound`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pipelines.mqtt.ports import CameraRinger

logger = logging.getLogger(__name__)

MAX_PENDING_RINGS = 32  # ring commands waiting for dispatch; more are dropped (flood guard)


class RingDispatcher:
    """Fires `ring` on a doorbell camera for each ring command, on one worker thread."""

    def __init__(
        self,
        cameras: CameraRinger,
        is_doorbell: Callable[[str], bool],
        *,
        max_pending: int = MAX_PENDING_RINGS,
    ) -> None:
        self._cameras = cameras
        self._is_doorbell = is_doorbell
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._pending = 0
        self._counts = {"rings_dispatched": 0, "rings_rejected": 0}
        # Never paho's thread, never behind a long replay: the camera lookup may block.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-ring")

    def counts(self) -> dict[str, int]:
        """Rings dispatched and rejected so far."""
        with self._lock:
            return dict(self._counts)

    def on_ring(self, camera_id: str) -> None:
        """Queue a ring command (paho's thread: never waits)."""
        with self._lock:
            if self._pending >= self._max_pending:
                self._counts["rings_rejected"] += 1
                logger.warning("too many ring commands pending; ignoring one for %s", camera_id)
                return
            self._pending += 1
        self._worker.submit(self._dispatch, camera_id)

    def shutdown(self) -> None:
        """Drop rings not yet dispatched and stop the worker."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _dispatch(self, camera_id: str) -> None:
        try:
            if not self._is_doorbell(camera_id):
                self._count("rings_rejected")
                logger.warning("ring command for %s ignored: not a configured doorbell", camera_id)
                return
            if not self._cameras.ring(camera_id):
                self._count("rings_rejected")
                logger.warning("ring command for %s ignored: no ingest actor runs it", camera_id)
                return
            self._count("rings_dispatched")
            logger.info("doorbell ring for %s sent to its ingest actor", camera_id)
        except Exception:
            logger.exception("dispatching a ring command for %s failed", camera_id)
        finally:
            with self._lock:
                self._pending -= 1

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1
