"""The `vlm` Serve application: a batching deployment over `pipelines.vlm.router.VLMRouter`
(one `VLMEngine` per backend chain, and one batch queue per chain, so a slow backend holds up
only the cameras that use it).

Requests from camera actors are grouped by ``@serve.batch``; a batch is bounded by an image
budget (``vlm.max_batch_images``, default 3 times ``max_batch_size``), since generate cost grows
with images, not events: a request counts its frames, and at least budget / ``max_batch_size``,
so a batch holds at most ``max_batch_size`` requests and 8 requests of 1-3 frames fill one
generate. One request alone always fits, however many frames it has.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray import serve

from pipelines.naming import VLM_DEPLOYMENT as DEPLOYMENT_NAME
from pipelines.naming import VLM_REPLICA_KEY
from pipelines.vlm.router import VLMRouter
from pipelines.vlm.types import VLMRequest, VLMResult
from serve_apps import SHUTDOWN_LOOK_S

if TYPE_CHECKING:
    from pipelines.config import VLMConfig

logger = logging.getLogger(__name__)


_BATCH_BOUNDARIES: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256]
REPORT_S = 2.0  # how often a replica reports its node and queue (see replica_reports)
REPORT_STALE_S = 10.0  # older reports are of replicas that are gone
_TIME_BOUNDARIES_MS: list[float] = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]


def images_in_batch(requests: list[VLMRequest], floor: int = 1) -> int:
    """@serve.batch size function: total frames, each request at least `floor`; a lone request
    counts 1 so it always fits."""
    if len(requests) <= 1:
        return len(requests)
    return sum(max(floor, len(r.frames)) for r in requests)


def _warmup_request() -> VLMRequest:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buf, "JPEG")
    return VLMRequest("warmup", "Warm-up", (buf.getvalue(),), request_id="warmup")


@dataclass(frozen=True, slots=True)
class _Queued:
    """A request and when it reached this replica (for the queue-wait metric)."""

    request: VLMRequest
    arrived: float


def batch_size_fn(vlm_config: VLMConfig) -> Any:
    """The size function of a chain's batch queue: images, each request at least the budget's
    share of one request; more than max_batch_size requests never fit, whatever the budget."""
    budget, most = vlm_config.batch_images(), vlm_config.max_batch_size
    floor = max(1, budget // most)

    def size(items: list[_Queued]) -> int:
        if len(items) > most:
            return budget + 1
        return images_in_batch([item.request for item in items], floor)

    return size


def _histogram(name: str, description: str, boundaries: list[float]) -> Any:
    from ray.serve import metrics

    return metrics.Histogram(name, description=description, boundaries=boundaries)


class _Metrics:
    """Serve metrics (labelled with application, deployment and replica); a no-op when they
    cannot be created (no exporter/agent)."""

    def __init__(self) -> None:
        self.enabled = False
        try:
            from ray.serve import metrics

            self.batch_size: Any = _histogram(
                "liveobject_vlm_batch_size", "Requests per VLM batch.", _BATCH_BOUNDARIES
            )
            self.batch_images: Any = _histogram(
                "liveobject_vlm_batch_images", "Images per VLM batch.", _BATCH_BOUNDARIES
            )
            self.queue_wait_ms: Any = _histogram(
                "liveobject_vlm_queue_wait_ms",
                "Time a request waited in the replica before its batch ran (ms).",
                _TIME_BOUNDARIES_MS,
            )
            self.generate_ms: Any = _histogram(
                "liveobject_vlm_generate_ms",
                "Wall time of one VLM batch (ms).",
                _TIME_BOUNDARIES_MS,
            )
            self.tokens_per_s: Any = metrics.Gauge(
                "liveobject_vlm_tokens_per_s",
                description="Generated tokens per second of the last VLM batch.",
            )
            self.fallbacks: Any = metrics.Counter(
                "liveobject_vlm_fallbacks", description="Results answered by the fallback text."
            )
            self.requests: Any = metrics.Counter(
                "liveobject_vlm_requests_total", description="Events described by this replica."
            )
            self.queued: Any = metrics.Gauge(
                "liveobject_vlm_queue_depth",
                description="Requests waiting in this replica for their batch to start.",
            )
            self.enabled = True
        except Exception as exc:  # metrics are best effort
            logger.info("VLM metrics disabled: %s", exc)

    def record(
        self,
        requests: int,
        images: int,
        waits_ms: list[float],
        elapsed_ms: float,
        tokens_per_s: float | None,
        fallbacks: int,
    ) -> None:
        if not self.enabled:
            return
        try:
            self.requests.inc(requests)
            self.batch_size.observe(requests)
            self.batch_images.observe(images)
            for wait in waits_ms:
                self.queue_wait_ms.observe(wait)
            self.generate_ms.observe(elapsed_ms)
            if tokens_per_s is not None:
                self.tokens_per_s.set(tokens_per_s)
            if fallbacks:
                self.fallbacks.inc(fallbacks)
        except Exception:  # never fail a batch over metrics
            logger.debug("recording VLM metrics failed", exc_info=True)


@serve.deployment(name=DEPLOYMENT_NAME)
class VLMDeployment:
    """Batches VLMRequests across callers and answers each with a VLMResult."""

    async def __init__(self, vlm_config: VLMConfig) -> None:  # type: ignore[misc]
        self.config = vlm_config
        self.engine = VLMRouter.from_config(vlm_config)
        # one batch queue per chain: a slow backend holds up only the cameras that use it
        self._queues = {name: self._chain_queue() for name in self.engine.engines}
        self.counters = {"requests": 0, "batches": 0, "max_batch_seen": 0, "images": 0}
        self.counters |= {"fallbacks": 0, "generated_tokens": 0}
        self.totals = {"queue_wait_ms": 0.0, "queue_wait_ms_max": 0.0, "generate_ms": 0.0}
        self.metrics = _Metrics()
        self.load = {"queued": 0, "running": 0}  # requests waiting for / inside a batch
        await self.engine.start()
        started = time.monotonic()
        warm = await self.engine.describe(_warmup_request())
        logger.info(
            "VLM replica ready: backends %s, warm-up by %s in %.0f ms",
            [b.name for b in self.engine.backends],
            warm.provider_used or "fallback",
            (time.monotonic() - started) * 1000.0,
        )
        self._reporter = asyncio.get_running_loop().create_task(self._report_forever())

    async def __call__(self, request: VLMRequest) -> VLMResult:
        """Describe one motion event; concurrent calls are batched together."""
        arrived = time.monotonic()
        self.load["queued"] += 1
        # the caller's deadline, on this node's monotonic clock (its wall clock may be skewed)
        queued = _Queued(request.arrived(arrived), arrived)
        queue = self._queues.get(request.chain) or self._queues[None]  # unknown: the default
        result: VLMResult = await queue(queued)
        return result

    def _chain_queue(self) -> Any:
        """A `@serve.batch` queue of its own (a chain's), bounded by its image budget."""

        async def describe(items: list[_Queued]) -> list[VLMResult]:
            return await self._describe(items)

        return serve.batch(
            max_batch_size=self.config.batch_images(),
            batch_wait_timeout_s=self.config.batch_wait_timeout_s,
            batch_size_fn=batch_size_fn(self.config),
        )(describe)

    async def _report_forever(self) -> None:
        """Every REPORT_S: this replica's node and queue, for `liveobject status` and the table."""
        while True:
            try:
                await asyncio.to_thread(_report_replica, self.load, self.counters["requests"])
                if self.metrics.enabled:
                    self.metrics.queued.set(self.load["queued"])
            except Exception:  # status is best effort; describing events is not
                logger.debug("VLM replica report failed", exc_info=True)
            await asyncio.sleep(REPORT_S)

    async def _describe(self, items: list[_Queued]) -> list[VLMResult]:
        self.load["queued"] = max(0, self.load["queued"] - len(items))
        self.load["running"] += len(items)
        try:
            return await self._describe_batch(items)
        finally:
            self.load["running"] -= len(items)

    async def _describe_batch(self, items: list[_Queued]) -> list[VLMResult]:
        started = time.monotonic()
        requests = [item.request for item in items]
        waits_ms = [(started - item.arrived) * 1000.0 for item in items]
        tokens_before = self.engine.generated_tokens()
        results = await self.engine.describe_batch(requests)
        elapsed_ms = (time.monotonic() - started) * 1000.0
        tokens = self.engine.generated_tokens() - tokens_before
        tokens_per_s = tokens / (elapsed_ms / 1000.0) if tokens and elapsed_ms > 0 else None
        images = sum(len(r.frames) for r in requests)
        fallbacks = sum(r.provider_used is None for r in results)
        self.counters["requests"] += len(requests)
        self.counters["batches"] += 1
        self.counters["images"] += images
        self.counters["fallbacks"] += fallbacks
        self.counters["generated_tokens"] += tokens
        self.counters["max_batch_seen"] = max(self.counters["max_batch_seen"], len(requests))
        self.totals["queue_wait_ms"] += sum(waits_ms)
        self.totals["queue_wait_ms_max"] = max(self.totals["queue_wait_ms_max"], *waits_ms)
        self.totals["generate_ms"] += elapsed_ms
        self.metrics.record(len(requests), images, waits_ms, elapsed_ms, tokens_per_s, fallbacks)
        logger.debug(
            "VLM batch: %d requests, %d images, %d tokens, %.0f ms",
            len(requests),
            images,
            tokens,
            elapsed_ms,
        )
        return results

    async def stats(self) -> dict[str, Any]:
        """Counters of this replica (requests, batches, images, tokens, waits) and its backends."""
        requests, generate_s = self.counters["requests"], self.totals["generate_ms"] / 1000.0
        return dict(self.counters) | {
            "queue_wait_ms_avg": round(self.totals["queue_wait_ms"] / requests, 2)
            if requests
            else 0.0,
            "queue_wait_ms_max": round(self.totals["queue_wait_ms_max"], 2),
            "generate_ms_total": round(self.totals["generate_ms"], 1),
            "tokens_per_s": (
                round(self.counters["generated_tokens"] / generate_s, 1) if generate_s else 0.0
            ),
            "metrics_enabled": self.metrics.enabled,
            "engine": self.engine.stats(),
        }

    async def check_health(self) -> None:
        """Unhealthy when a local model failed to load (Serve then replaces this replica).

        Remote backends that are down do not make the replica unhealthy: a new replica would
        not bring them back, and meanwhile every event still gets the fallback description.
        """
        broken = self.engine.load_errors()
        if broken:
            raise RuntimeError(f"VLM model failed to load: {broken}")


def _report_replica(load: dict[str, int], requests: int) -> None:
    """Put this replica's node and queue into Ray's internal KV (key by replica id)."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_put

    replica = serve.get_replica_context().replica_id.unique_id
    report = {
        "replica": replica,
        "node": {
            "id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
        },
        "queued": load["queued"],
        "running": load["running"],
        "requests": requests,
        "at": time.time(),
    }
    _internal_kv_put(f"{VLM_REPLICA_KEY}{replica}", json.dumps(report), overwrite=True)


def replica_reports() -> list[dict[str, Any]]:
    """The latest report of every live VLM replica: node, queued, running, requests."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get, _internal_kv_list

    alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    reports = []
    for key in _internal_kv_list(VLM_REPLICA_KEY):
        raw = _internal_kv_get(key)
        try:
            report = json.loads(raw) if raw else None
        except ValueError:
            report = None
        if (
            report is None
            or time.time() - float(report.get("at", 0)) > REPORT_STALE_S
            or report.get("node", {}).get("id") not in alive
        ):
            _internal_kv_del(key)  # a replica that is gone (stopped, or its node lost)
            continue
        reports.append(report)
    return sorted(reports, key=lambda r: str(r["replica"]))


def deployment_options(vlm_config: VLMConfig) -> dict[str, Any]:
    """Serve options for the VLM deployment derived from the `vlm:` config."""
    actor_options: dict[str, Any] = {"num_cpus": vlm_config.num_cpus}
    if vlm_config.num_gpus:
        actor_options["num_gpus"] = vlm_config.num_gpus
    options: dict[str, Any] = {
        "ray_actor_options": actor_options,
        # room for a full batch waiting while another one runs
        "max_ongoing_requests": max(vlm_config.max_ongoing_requests, vlm_config.max_batch_size * 2),
        "graceful_shutdown_wait_loop_s": SHUTDOWN_LOOK_S,
    }
    if vlm_config.num_replicas == "auto":
        auto = vlm_config.autoscaling
        options["autoscaling_config"] = {
            "min_replicas": auto.min_replicas if auto else 1,
            "max_replicas": auto.max_replicas if auto else 4,
            "target_ongoing_requests": auto.target_ongoing_requests if auto else 8,
        }
    else:
        options["num_replicas"] = vlm_config.num_replicas
    return options


def build_vlm_app(vlm_config: VLMConfig) -> serve.Application:
    """The `vlm` application (deployment "VLM") for `serve.run(..., name="vlm")`."""
    deployment: Any = VLMDeployment  # a serve.Deployment once decorated
    return deployment.options(**deployment_options(vlm_config)).bind(vlm_config)


def app_builder(args: dict[str, str]) -> serve.Application:
    """Builder for a Serve config file (`import_path: serve_apps.vlm:app_builder`)."""
    from pipelines.config import load_config

    return build_vlm_app(load_config(args["config"]).vlm)
