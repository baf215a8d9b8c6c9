"""The camera actors of a run: start, follow placement, drain, retire, status.

`CameraFleet` owns every `camera:<id>` actor that `liveobject run` created, from creation until
it is drained or removed: a new actor waits in `unplaced` until Ray has placed it (its `start`
call answered), then moves to `cameras`. The full stop (`cluster.runtime`) and `liveobject
apply` retiring cameras (`cluster.reconfigure`) drain through the same loop, `drain`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import ray

from cluster.actors.camera import launch_camera
from cluster.peers import CameraPeers
from cluster.placement import CameraPlacement, camera_resources
from pipelines.config import Config
from pipelines.naming import camera_actor_name

logger = logging.getLogger(__name__)

# How long past `shutdown.drain_timeout_s` a drain waits for a camera's report, for every drain
# (the full stop and `apply` alike). A camera bounds its own drain: stopping decoding (10 s) is
# inside the timeout, then the fallback events' saves get 15 s (pipelines.camera.camera); the
# rest is slack for Ray to deliver the call and the answer to a busy actor.
DRAIN_GRACE_S = 45.0
DRAIN_POLL_S = 0.2  # how often the drain loop looks at the hurry event and for answers
NAME_FREE_WAIT_S = 15.0  # a retired camera's name must be free before a restart reuses it


class CameraFleet:
    """The camera actors of one run, with their config, peers and placement."""

    def __init__(self, config: Config, peers: CameraPeers, run: Any | None = None) -> None:
        self.config = config
        self.peers = peers  # handed to every camera actor this fleet creates
        self.cameras: dict[str, Any] = {}  # placed: their actors answer calls
        self.unplaced: dict[str, Any] = {}  # created, not placed by Ray yet
        self.placement = CameraPlacement(config.ray.placement_timeout_s)
        self._run = run  # the namespace's run actor: told which cameras cannot be placed

    @property
    def publisher(self) -> Any | None:
        """The mqtt-publisher handle the cameras were given (None: MQTT off)."""
        return self.peers.publisher

    def ids(self) -> list[str]:
        """Every camera of the fleet, placed or not."""
        return [*self.cameras, *self.unplaced]

    def use_config(self, config: Config) -> None:
        """Take a new config (`apply`): cameras started from now on read it."""
        self.config = config
        self.placement.timeout_s = config.ray.placement_timeout_s

    def start(self, camera_ids: Iterable[str]) -> None:
        """Create camera actors; each stays in `unplaced` until Ray has placed it."""
        # Serve was not up when the fleet was made, or `apply` brought a global budget
        self.peers = self.peers.completed(self.config)
        for camera_id in camera_ids:
            actor, ready = launch_camera(self.config, camera_id, self.peers)
            self.unplaced[camera_id] = actor
            self.placement.track(camera_id, ready, camera_resources(self.config, camera_id))

    def follow_placement(self) -> None:
        """Move placed cameras to `cameras`; say which cannot be placed (log, MQTT, run actor)."""
        if not self.unplaced:
            return
        newly = self.placement.update()
        for camera_id in list(self.unplaced):
            if self.placement.placed(camera_id):
                self.cameras[camera_id] = self.unplaced.pop(camera_id)
        for camera_id, reason in newly.items():
            logger.warning("camera %s is unplaceable: %s", camera_id, reason)
            if self.publisher is not None:
                source_type = self.config.camera(camera_id).source_type
                self.publisher.set_camera_status.remote(
                    camera_id, "unplaceable", source_type, reason
                )
        if (newly or not self.unplaced) and self._run is not None:
            try:
                self._run.set_unplaceable.remote(self.placement.unplaceable())
            except Exception:
                logger.debug("run actor gone")

    def statuses(self, timeout_s: float = 5.0) -> dict[str, dict[str, Any]]:
        """Each camera's status (one wait for all); unplaced ones say starting or unplaceable."""
        calls = {actor.status.remote(): cid for cid, actor in self.cameras.items()}
        ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=timeout_s)
        done = set(ready)
        out: dict[str, dict[str, Any]] = {}
        for ref, cid in calls.items():
            try:
                answer = ray.get(ref) if ref in done else TimeoutError()
            except Exception as exc:
                answer = exc
            out[cid] = (
                answer
                if isinstance(answer, dict)
                else {"camera_id": cid, "status": "unknown", "error": type(answer).__name__}
            )
        for cid in self.unplaced:
            state, reason = self.placement.state(cid)
            out[cid] = {"camera_id": cid, "status": state, "reason": reason}
        return out

    def drain(
        self, camera_ids: Iterable[str] | None = None, *, hurry: threading.Event | None = None
    ) -> dict[str, dict[str, Any]]:
        """Drain placed cameras (all by default) at once; each one's report (counts).

        Decoding stops, then every queued and in-flight segment is analysed and saved
        (`shutdown.drain_timeout_s` bounds the wait for the VLM; then the fallback text is
        stored). `hurry` set (a second Ctrl-C) stops waiting for the VLM at once. A camera that
        fails or does not answer within DRAIN_GRACE_S past the timeout is logged, not reported.
        """
        self.follow_placement()  # a camera placed since the last tick holds events: drain it
        wanted = set(self.cameras if camera_ids is None else camera_ids)
        actors = {cid: actor for cid, actor in self.cameras.items() if cid in wanted}
        timeout_s = self.config.shutdown.drain_timeout_s
        pending = {actor.drain.remote(timeout_s): cid for cid, actor in actors.items()}
        deadline = time.monotonic() + timeout_s + DRAIN_GRACE_S
        reports: dict[str, dict[str, Any]] = {}
        hurried = False
        while pending and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set() and not hurried:
                hurried = True
                for cid in pending.values():
                    actors[cid].hurry.remote()
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=DRAIN_POLL_S)
            for ref in ready:
                cid = pending.pop(ref)
                try:
                    reports[cid] = dict(ray.get(ref))
                except Exception as exc:
                    logger.error("camera %s could not drain: %s", cid, type(exc).__name__)
        for cid in pending.values():
            logger.error("camera %s did not finish draining in time", cid)
        return reports

    def retire(self, camera_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Drain, kill and forget cameras; returns the drain reports (see `drain`).

        Returns once each camera's actor name is free (or NAME_FREE_WAIT_S passed), so that a
        restart can create the actor again under the same name.
        """
        ids = [cid for cid in camera_ids if cid in self.cameras or cid in self.unplaced]
        reports = self.drain(ids)
        for cid in ids:  # a camera never placed holds nothing: killed without a drain
            actor = self.cameras.pop(cid) if cid in self.cameras else self.unplaced.pop(cid)
            ray.kill(actor, no_restart=True)
            self.placement.forget(cid)
            self._await_name_free(cid)
        return reports

    def _await_name_free(self, camera_id: str) -> None:
        deadline = time.monotonic() + NAME_FREE_WAIT_S
        while time.monotonic() < deadline:
            try:
                ray.get_actor(camera_actor_name(camera_id), namespace=self.config.ray.namespace)
            except ValueError:
                return
            time.sleep(0.1)
