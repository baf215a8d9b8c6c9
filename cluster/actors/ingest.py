"""The `ingest:<key>` actor: Ray plumbing around `pipelines.camera.CameraGroup`.

One actor process hosts a group of cameras (`ray.cameras_per_actor` of them; cluster.fleet
forms the groups), each on its own decode thread, so that Ray's per-process cost (its gRPC and
event-loop threads, ~300 MB of imports) is paid once per group. The actor builds each camera
with Ray ports (the store, publisher and VLM handles it was given, the `vlm-budget` actor, Ray
metrics) and exposes start/stop/remove/drain/hurry/ring/status, each per camera id.

A group's members are fixed when it is created (a camera added by `apply` gets a group of its
own; a removed one leaves its group, and an empty group is killed), so its `num_cpus`, the sum
of its cameras', stays what Ray placed. A crashed actor restarted by Ray resumes its cameras on
the run's next `status(ids, resume=True)` call (the runtime polls it every second).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import RayActorError

from cluster.actors.budget import Spec, budget_spec, get_budget
from cluster.metrics import CameraMetrics, node_of_this_process
from cluster.peers import CameraPeers, NamedActor, vlm_handle
from cluster.placement import group_resources
from pipelines.camera import CameraGroup, CameraPorts
from pipelines.config import Config
from pipelines.events import Event
from pipelines.imaging import one_thread
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR, ingest_actor_name
from pipelines.storage.writer import Reply, answers_of
from pipelines.vlm.types import VLMRequest, VLMResult

logger = logging.getLogger(__name__)


class _RayStore:
    """StorePort over the `event-store` actor."""

    def __init__(self, store: NamedActor) -> None:
        self._store = store

    async def save_many(
        self, items: list[tuple[Event, bytes | None]]
    ) -> list[tuple[Event, bool] | None]:
        handle = await self._store.get()
        if handle is None:
            raise ConnectionError("event-store not found")
        try:
            got: list[Reply | None] = await handle.save_many.remote(items)
        except RayActorError:
            self._store.forget()  # replaced under its name? the retry finds the new one
            raise
        return answers_of(items, got)


class _RayPublisher:
    """StatusSink over the `mqtt-publisher` actor (fire and forget)."""

    def __init__(self, publisher: NamedActor) -> None:
        self._publisher = publisher

    def camera_status(self, camera_id: str, status: str, source_type: str) -> None:
        handle = self._publisher.get_nowait()
        if handle is not None:
            handle.set_camera_status.remote(camera_id, status, source_type)

    def activity(self, camera_id: str, active: bool) -> None:
        handle = self._publisher.get_nowait()
        if handle is not None:
            handle.set_activity.remote(camera_id, active)


class _ServeVLM:
    """DescribeFn over the `vlm` deployment; cancelling the call cancels the request."""

    def __init__(self, handle: Any | None) -> None:
        self._handle = handle

    async def __call__(self, request: VLMRequest) -> VLMResult:
        if self._handle is None:
            self._handle = await asyncio.to_thread(vlm_handle)
            if self._handle is None:
                raise ConnectionError("the vlm deployment is not up")
        response = self._handle.remote(request.sending())  # the deadline left, as a duration
        try:
            result: VLMResult = await response
            return result
        except asyncio.CancelledError:
            response.cancel()
            raise


class _RayBudget:
    """BudgetPort over the `vlm-budget` actor (given, or created on first use)."""

    def __init__(self, config: Config, spec: Spec, actor: Any) -> None:
        self._config = config
        self._spec = spec
        self._actor = actor

    async def take(self, camera_id: str) -> str | None:
        try:
            if self._actor is None:
                self._actor = await asyncio.to_thread(get_budget, self._config, self._spec)
            refused: str | None = await self._actor.take.remote(camera_id, self._spec)
            return refused
        except (Exception, asyncio.CancelledError):  # cancelled: the caller's timeout
            self._actor = None  # look it up (or create it) again next time
            raise


def _reconstructed() -> bool:
    """Whether Ray restarted this actor (after a crash) rather than creating it."""
    try:
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:
        return False


@ray.remote(num_cpus=0.25, max_restarts=3)
class IngestActor:
    """Ingests a group of cameras until their files end (or forever for live streams)."""

    def __init__(self, config: Config, camera_ids: Sequence[str], peers: CameraPeers) -> None:
        one_thread()  # the cameras are this process's parallelism, not OpenCV's helper threads
        namespace = config.ray.namespace
        self._config = config
        self._camera_ids = list(camera_ids)
        self._restarted = _reconstructed()
        spec = budget_spec(config)
        # one port per peer, shared by the group's cameras
        self._store = _RayStore(NamedActor(STORE_ACTOR, namespace, peers.store))
        self._describe = _ServeVLM(peers.vlm)
        publisher = NamedActor(PUBLISHER_ACTOR, namespace, peers.publisher)
        self._status_sink = _RayPublisher(publisher) if config.mqtt.enabled else None
        self._budget = _RayBudget(config, spec, peers.budget) if spec is not None else None
        self._budgeted = {cid for _name, _per_hour, ids in spec or () for cid in ids}
        self._group = CameraGroup(config, self._ports_for, node=node_of_this_process())
        # An async actor runs its calls in no fixed order: every call waits until `start` has
        # added the cameras (a process Ray restarted is not started again: status resumes it).
        self._started = asyncio.Event()
        if self._restarted:
            self._started.set()

    def _ports_for(self, camera_id: str) -> CameraPorts:
        return CameraPorts(
            store=self._store,
            describe=self._describe,
            status_sink=self._status_sink,
            # no budget applies to this camera: no call per event to ask
            budget=self._budget if camera_id in self._budgeted else None,
            metrics=CameraMetrics(camera_id, self._config.camera(camera_id).objects or ()),
        )

    async def start(self) -> None:
        """Start the group's cameras in the background; returns at once."""
        try:
            self._group.start(self._camera_ids)
        finally:
            self._started.set()

    async def ids(self) -> list[str]:
        """The cameras this process runs now."""
        await self._started.wait()
        return self._group.ids()

    async def stop(self) -> None:
        """Stop decoding on every camera (an open motion event is closed and queued)."""
        await self._started.wait()
        await self._group.stop()

    async def remove(self, camera_id: str, timeout_s: float) -> dict[str, Any]:
        """Stop, drain and close one camera, its neighbours untouched; its drain report."""
        await self._started.wait()
        return await self._group.remove(camera_id, timeout_s)

    async def drain(
        self, camera_ids: list[str] | None = None, timeout_s: float = 30.0
    ) -> dict[str, dict[str, Any]]:
        """Stop decoding, then analyse and save everything pending; each camera's counts."""
        await self._started.wait()
        return await self._group.drain(camera_ids, timeout_s)

    async def hurry(self, camera_ids: list[str] | None = None) -> None:
        """Stop waiting for the VLM (second Ctrl-C): pending events get the fallback text."""
        await self._started.wait()
        self._group.hurry(camera_ids)

    async def ring(self, camera_id: str) -> dict[str, Any]:
        """Doorbell ring: analyse the camera's newest frame now and flag the event as a ring."""
        await self._started.wait()
        return self._group.ring(camera_id)

    async def status(
        self, camera_ids: list[str] | None = None, resume: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Each camera's live state (all by default), for `liveobject status`, the API and
        --until-done. `resume`: the caller runs these cameras (the run's fleet, or whoever
        started the actor: None means the cameras it was made with), and a process Ray
        restarted after a crash starts again those it does not run yet."""
        await self._started.wait()
        if resume and self._restarted:
            self._group.resume(self._camera_ids if camera_ids is None else camera_ids)
        return self._group.status(camera_ids)


def launch_group(
    config: Config, key: str, camera_ids: Sequence[str], peers: CameraPeers | None = None
) -> tuple[Any, Any]:
    """Create (or find) the ingest actor `ingest:<key>` for these cameras and start them:
    (actor, ref of `start`). The ref resolves once Ray has placed the actor and it runs (see
    cluster.placement). Without `peers` they are looked up by name here (the caller's process,
    not the actor)."""
    actor = IngestActor.options(  # type: ignore[attr-defined]
        name=ingest_actor_name(key),
        namespace=config.ray.namespace,
        get_if_exists=True,
        scheduling_strategy="SPREAD",
        num_cpus=group_resources(config, list(camera_ids))["CPU"],
    ).remote(config, list(camera_ids), peers or CameraPeers.find(config))
    return actor, actor.start.remote()


def start_camera(config: Config, camera_id: str, peers: CameraPeers | None = None) -> Any:
    """Create (or find) an ingest actor of one camera, `ingest:<camera id>`, and start it
    (tests and benchmarks; a run's fleet forms its own groups)."""
    return launch_group(config, camera_id, [camera_id], peers)[0]
