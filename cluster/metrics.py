"""Ray metrics of the camera and store actors, and where an actor runs.

Every family is exported by Ray's metrics agent on each node's Prometheus endpoint with Ray's
`ray_` prefix (`liveobject_camera_fps` is scraped as `ray_liveobject_camera_fps`); the Grafana
dashboard in cluster/grafana charts them. The publisher's and the VLM's own instruments live
next to their code (cluster/actors/publisher.py, serve_apps/vlm.py). Recording never raises:
metrics must not stop the pipeline (no metrics agent, say); the first failure is logged and
metrics of that actor are off from then on.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

LAG_BOUNDARIES_S: list[float] = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]
APPEND_BOUNDARIES_MS: list[float] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000]
DROP_REASONS = ("merged_pending", "unsaved_buffer_full")


def node_of_this_process() -> dict[str, str]:
    """{"id", "ip"} of the Ray node this process runs on (empty strings outside Ray)."""
    try:
        import ray

        return {
            "id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
        }
    except Exception:
        return {"id": "", "ip": ""}


def node_label(node: Any) -> str:
    """`ip (node id prefix)` for tables; "" when unknown."""
    if not isinstance(node, dict) or not node.get("id"):
        return ""
    return f"{node.get('ip', '')} ({str(node['id'])[:8]})".strip()


class _Instruments:
    """Creates instruments lazily through `_create`; `record` applies one op, never raising."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._off = False
        try:
            self._create()
        except Exception as exc:
            self._disable(exc)

    def _create(self) -> None:
        raise NotImplementedError

    def _disable(self, exc: Exception) -> None:
        if not self._off:
            logger.warning("%s metrics disabled: %s", self._what, exc)
        self._off = True

    def record(self, name: str, op: str, value: float, **tags: str) -> None:
        """Apply `op` (inc/set/observe) with `value` to instrument `name`."""
        if self._off:
            return
        try:
            getattr(getattr(self, name), op)(value, tags=tags or None)
        except Exception as exc:
            self._disable(exc)


class CameraMetrics(_Instruments):
    """fps, decode lag, frames, events by object, drops — all labelled with camera_id."""

    def __init__(self, camera_id: str) -> None:
        self._camera = camera_id
        super().__init__(f"camera {camera_id}")

    def _create(self) -> None:
        from ray.util import metrics

        cam = ("camera_id",)
        self.fps = metrics.Gauge(
            "liveobject_camera_fps", description="Frames analysed per second.", tag_keys=cam
        )
        self.lag = metrics.Histogram(
            "liveobject_camera_decode_lag_s",
            description="Seconds from decoding a frame to the end of its motion check.",
            boundaries=LAG_BOUNDARIES_S,
            tag_keys=cam,
        )
        self.frames = metrics.Counter(
            "liveobject_camera_frames_total", description="Frames analysed.", tag_keys=cam
        )
        self.events = metrics.Counter(
            "liveobject_camera_events_total",
            description="Events stored, by detected object (`none` when nothing was named).",
            tag_keys=("camera_id", "object"),
        )
        self.drops = metrics.Counter(
            "liveobject_camera_drops_total",
            description="Motion not made into its own event: merged into a queued one "
            "(merged_pending) or dropped from a full unsaved buffer (unsaved_buffer_full).",
            tag_keys=("camera_id", "reason"),
        )

    def frame(self, lag_s: float) -> None:
        """One frame analysed, `lag_s` after it was decoded."""
        self.record("frames", "inc", 1.0, camera_id=self._camera)
        self.record("lag", "observe", max(0.0, lag_s), camera_id=self._camera)

    def fps_now(self, fps: float) -> None:
        """The camera's current analysed frame rate."""
        self.record("fps", "set", fps, camera_id=self._camera)

    def event(self, objects: tuple[str, ...] | list[str]) -> None:
        """One event stored, counted under each detected object (or `none`)."""
        for name in objects or ("none",):
            self.record("events", "inc", 1.0, camera_id=self._camera, object=str(name))

    def drop(self, reason: str, count: int = 1) -> None:
        """Motion that did not become its own event (reason: one of DROP_REASONS)."""
        if count > 0:
            self.record("drops", "inc", float(count), camera_id=self._camera, reason=reason)


class StoreMetrics(_Instruments):
    """Append latency, write-queue depth and rows of the event-store."""

    def __init__(self) -> None:
        super().__init__("event-store")

    def _create(self) -> None:
        from ray.util import metrics

        self.append = metrics.Histogram(
            "liveobject_store_append_ms",
            description="Milliseconds to commit one group of saves (one transaction).",
            boundaries=APPEND_BOUNDARIES_MS,
        )
        self.queue = metrics.Gauge(
            "liveobject_store_queue_depth", description="Saves waiting for the writer."
        )
        self.appended = metrics.Counter(
            "liveobject_store_rows_appended_total", description="Events appended (rows)."
        )
        self.rows = metrics.Gauge("liveobject_store_rows", description="Events stored in DuckDB.")

    def committed(self, rows: int, elapsed_ms: float, queued: int) -> None:
        """A batch of `rows` committed in `elapsed_ms`; `queued` saves wait behind it."""
        self.record("append", "observe", elapsed_ms)
        self.record("appended", "inc", float(rows))
        self.record("queue", "set", float(queued))

    def stored(self, rows: int) -> None:
        """The number of events in the database."""
        self.record("rows", "set", float(rows))
