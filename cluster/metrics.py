"""Ray metrics of the camera, store and publisher actors, and where an actor runs.

Every family is exported by Ray's metrics agent on each node's Prometheus endpoint with Ray's
`ray_` prefix (`liveobject_camera_fps` is scraped as `ray_liveobject_camera_fps`); the Grafana
dashboard in cluster/grafana charts them. The VLM's own instruments live next to its code
(serve_apps/vlm.py). Recording never raises: metrics must not stop the pipeline (no metrics
agent, say); the first failure is logged and metrics of that actor are off from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

LAG_BOUNDARIES_S: list[float] = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]
APPEND_BOUNDARIES_MS: list[float] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000]
# hand-over → broker ack; the top buckets catch a broker that is slow to come back
ACK_BOUNDARIES_MS: list[float] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 1e4, 3e4]
DROP_REASONS = ("merged_pending", "unsaved_buffer_full", "after_close")


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


METRIC_OBJECTS = frozenset(
    {"person", "vehicle", "package", "animal", "car", "truck", "bus", "bicycle", "motorcycle"}
    | {"dog", "cat", "bird", "horse"}
)


class CameraMetrics(_Instruments):
    """fps, decode lag, frames, events, drops, outbox and VLM outcomes, by camera_id.

    Implements `pipelines.camera.ports.CameraMetricsPort`.
    """

    def __init__(self, camera_id: str, objects: Sequence[str] = ()) -> None:
        self._camera = camera_id
        # object names come from the model (untrusted text): a label takes a known class, the
        # camera's own `objects`, `none` or `other`, so a sign cannot mint unbounded series
        self._objects = METRIC_OBJECTS | {str(name) for name in objects}
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
            "(merged_pending), dropped from a full unsaved buffer (unsaved_buffer_full), or cut "
            "by a removed camera's decode thread after it was closed (after_close).",
            tag_keys=("camera_id", "reason"),
        )
        self.dropped = metrics.Counter(
            "liveobject_camera_events_dropped_total",
            description="Events dropped because the unsaved buffer was full.",
            tag_keys=cam,
        )
        self.unsaved_events = metrics.Gauge(
            "liveobject_camera_unsaved_events",
            description="Events analysed but not yet saved (waiting or retrying).",
            tag_keys=cam,
        )
        self.vlm_outcomes = metrics.Counter(
            "liveobject_camera_vlm_total",
            description="Events by how they were described: called, reused, throttled.",
            tag_keys=("camera_id", "outcome"),
        )
        self.filtered_events = metrics.Counter(
            "liveobject_camera_events_filtered_total",
            description="Events stored but not published (object filter).",
            tag_keys=cam,
        )

    def frame(self, lag_s: float) -> None:
        """One frame analysed, `lag_s` after it was decoded."""
        self.record("frames", "inc", 1.0, camera_id=self._camera)
        self.record("lag", "observe", max(0.0, lag_s), camera_id=self._camera)

    def fps_now(self, fps: float) -> None:
        """The camera's current analysed frame rate."""
        self.record("fps", "set", fps, camera_id=self._camera)

    def event(self, objects: Sequence[str]) -> None:
        """One event stored, counted under each detected object (or `none`)."""
        for name in sorted({n if n in self._objects else "other" for n in objects}) or ["none"]:
            self.record("events", "inc", 1.0, camera_id=self._camera, object=name)

    def drop(self, reason: str, count: int = 1) -> None:
        """Motion that did not become its own event (reason: one of DROP_REASONS)."""
        if count > 0:
            self.record("drops", "inc", float(count), camera_id=self._camera, reason=reason)
            if reason == "unsaved_buffer_full":  # an analysed event lost: its own counter too
                self.record("dropped", "inc", float(count), camera_id=self._camera)

    def unsaved(self, depth: int) -> None:
        """Set the number of events not saved yet."""
        self.record("unsaved_events", "set", float(depth), camera_id=self._camera)

    def vlm(self, outcome: str) -> None:
        """One event described: called, reused or throttled."""
        self.record("vlm_outcomes", "inc", 1.0, camera_id=self._camera, outcome=outcome)

    def filtered(self) -> None:
        """One event stored but not published (object filter)."""
        self.record("filtered_events", "inc", 1.0, camera_id=self._camera)


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


class PublisherMetrics(_Instruments):
    """Events published, acked, failed and replayed, pending and ack latency of the publisher.

    Implements `pipelines.mqtt.ports.PublisherMetrics`.
    """

    def __init__(self, qos: str) -> None:
        self._qos = qos
        super().__init__("mqtt-publisher")

    def _create(self) -> None:
        from ray.util import metrics

        self.published_total = metrics.Counter(
            "liveobject_mqtt_published_total",
            description="Event messages handed to the MQTT client.",
            tag_keys=("qos",),
        )
        self.acked_total = metrics.Counter(
            "liveobject_mqtt_acked_total",
            description="Event messages acknowledged (QoS 0: written to the socket).",
            tag_keys=("qos",),
        )
        self.failures = metrics.Counter(
            "liveobject_mqtt_failures_total",
            description="Events not sent: disconnected, queue full or client error.",
            tag_keys=("reason",),
        )
        self.replayed_total = metrics.Counter(
            "liveobject_mqtt_replayed_total", description="Stored events republished."
        )
        self.queue_depth = metrics.Gauge(
            "liveobject_mqtt_pending", description="Event messages awaiting acknowledgement."
        )
        self.latency = metrics.Histogram(
            "liveobject_mqtt_ack_latency_ms",
            description="Milliseconds from hand-over to the publisher until the broker's ack.",
            boundaries=ACK_BOUNDARIES_MS,
        )

    def published(self, count: int) -> None:
        """Event messages handed to the MQTT client."""
        self.record("published_total", "inc", float(count), qos=self._qos)

    def acked(self, count: int) -> None:
        """Event messages acknowledged."""
        self.record("acked_total", "inc", float(count), qos=self._qos)

    def failed(self, reason: str) -> None:
        """One event not sent (unpublished, dropped or failed)."""
        self.record("failures", "inc", 1.0, reason=reason)

    def replayed(self, count: int) -> None:
        """Stored events republished."""
        self.record("replayed_total", "inc", float(count))

    def pending(self, count: int) -> None:
        """Event messages awaiting acknowledgement now."""
        self.record("queue_depth", "set", float(count))

    def ack_latency(self, ms: float) -> None:
        """One sampled hand-over → ack latency in milliseconds."""
        self.record("latency", "observe", ms)
