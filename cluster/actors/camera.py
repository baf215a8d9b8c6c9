"""The `camera:<id>` actor: Ray plumbing around `pipelines.camera.Camera`.

It builds the camera with Ray ports (the store, publisher and VLM handles it was given, the
`vlm-budget` actor, Ray metrics) and exposes start/stop/drain/hurry/ring/status. A crashed actor
restarted by Ray resumes on its first call (the runtime polls `status`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray.exceptions import RayActorError

from cluster.actors.budget import Spec, budget_spec, get_budget
from cluster.metrics import CameraMetrics, node_of_this_process
from cluster.peers import CameraPeers, NamedActor, vlm_handle
from pipelines.camera import Camera, CameraPorts
from pipelines.config import Config
from pipelines.events import Event
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR, camera_actor_name
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
            answers: list[tuple[Event, bool] | None] = await handle.save_many.remote(items)
        except RayActorError:
            self._store.forget()  # replaced under its name? the retry finds the new one
            raise
        return answers


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
class CameraActor:
    """Ingests one camera until its file ends (or forever for live streams)."""

    def __init__(self, config: Config, camera_id: str, peers: CameraPeers) -> None:
        namespace = config.ray.namespace
        spec = budget_spec(config)
        if spec is not None and not any(camera_id in ids for _name, _per_hour, ids in spec):
            spec = None  # no budget applies to this camera: no call per event to ask
        publisher = NamedActor(PUBLISHER_ACTOR, namespace, peers.publisher)
        ports = CameraPorts(
            store=_RayStore(NamedActor(STORE_ACTOR, namespace, peers.store)),
            describe=_ServeVLM(peers.vlm),
            status_sink=_RayPublisher(publisher) if config.mqtt.enabled else None,
            budget=_RayBudget(config, spec, peers.budget) if spec is not None else None,
            metrics=CameraMetrics(camera_id, config.camera(camera_id).objects or ()),
        )
        self._camera = Camera(
            config, camera_id, ports, node=node_of_this_process(), restarted=_reconstructed()
        )

    async def start(self) -> None:
        """Start ingesting in the background; returns at once."""
        self._camera.start()

    async def stop(self) -> None:
        """Stop decoding (an open motion event is closed and queued); queued events stay."""
        await self._camera.stop()

    async def drain(self, timeout_s: float) -> dict[str, Any]:
        """Stop decoding, then analyse and save everything pending; returns the counts."""
        return await self._camera.drain(timeout_s)

    async def hurry(self) -> None:
        """Stop waiting for the VLM (second Ctrl-C): pending events get the fallback text."""
        self._camera.hurry()

    async def ring(self) -> dict[str, Any]:
        """Doorbell ring: analyse the newest frame now and flag the event as a ring."""
        return self._camera.ring()

    async def status(self) -> dict[str, Any]:
        """Live state for `liveobject status`, the API and --until-done."""
        camera = self._camera
        if camera.restarted and not camera.started and not camera.stopping:
            camera.start()  # Ray restarted us after a crash: carry on
        return camera.status().as_dict()


def launch_camera(
    config: Config, camera_id: str, peers: CameraPeers | None = None
) -> tuple[Any, Any]:
    """Create (or find) the actor for one camera and start it: (actor, ref of `start`).

    The ref resolves once Ray has placed the actor and it runs (see cluster.placement).
    Without `peers` they are looked up by name here (the caller's process, not the actor).
    """
    actor = CameraActor.options(  # type: ignore[attr-defined]
        name=camera_actor_name(camera_id),
        namespace=config.ray.namespace,
        get_if_exists=True,
        scheduling_strategy="SPREAD",
        num_cpus=config.camera(camera_id).num_cpus,
    ).remote(config, camera_id, peers or CameraPeers.find(config))
    return actor, actor.start.remote()


def start_camera(config: Config, camera_id: str, peers: CameraPeers | None = None) -> Any:
    """Create (or find) the actor for one camera and start it."""
    return launch_camera(config, camera_id, peers)[0]
