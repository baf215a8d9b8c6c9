"""The ingest actors of a run: form the groups, start them, follow placement, drain, retire.

`CameraFleet` owns every `ingest:g.<n>` actor that `liveobject run` created, from creation until
it is drained or removed. The cameras are split into groups of `ray.cameras_per_actor` in
config order (cluster.placement.camera_groups); each group is one ingest actor
(cluster.actors.ingest) that reserves the sum of its cameras' `num_cpus`. A new group waits
unplaced until Ray has placed it (its `start` call answered). A group's members are fixed when
it is made: cameras that `apply` adds or restarts form new groups, a removed camera leaves its
group (its neighbours keep running), and a group left empty is killed. The full stop
(`cluster.runtime`) and `apply` retiring cameras (`cluster.reconfigure`) wait for the cameras'
reports in the same loop, `_reports`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ray

from cluster.actors.ingest import launch_group
from cluster.peers import CameraPeers
from cluster.placement import CameraPlacement, camera_groups, group_resources
from pipelines.camera.camera import stop_wait_s
from pipelines.config import Config
from pipelines.naming import ingest_actor_name

logger = logging.getLogger(__name__)

# How long past `shutdown.drain_timeout_s` a drain waits for a camera's report, for every drain
# (the full stop and `apply` alike). A camera bounds its own drain: stopping decoding (10 s) is
# inside the timeout, then the fallback events' saves get 15 s (pipelines.camera.camera); the
# rest is slack for Ray to deliver the call and the answer to a busy actor. Removing one camera
# from a group that keeps running waits for its decode thread first (`stop_wait_s`): added.
DRAIN_GRACE_S = 45.0
DRAIN_POLL_S = 0.2  # how often the drain loop looks at the hurry event and for answers


@dataclass
class _Group:
    """One ingest actor of the fleet and the cameras it runs now."""

    key: str  # `g.<n>`: the actor is `ingest:g.<n>`
    actor: Any
    ids: list[str] = field(default_factory=list)
    placed: bool = False


class CameraFleet:
    """The ingest actors of one run, with their config, peers and placement."""

    def __init__(self, config: Config, peers: CameraPeers, run: Any | None = None) -> None:
        self.config = config
        self.peers = peers  # handed to every ingest actor this fleet creates
        self.groups: dict[str, _Group] = {}
        self._next_key = 1
        self.placement = CameraPlacement(config.ray.placement_timeout_s)  # by group key
        self._run = run  # the namespace's run actor: told which cameras cannot be placed
        self._reported: tuple[dict[str, str], dict[str, list[str]]] = ({}, {})  # told it last
        self._orphans: list[str] = []  # kept cameras of a killed unplaced group: start() again

    @property
    def publisher(self) -> Any | None:
        """The mqtt-publisher handle the cameras were given (None: MQTT off)."""
        return self.peers.publisher

    @property
    def cameras(self) -> list[str]:
        """The placed cameras (their actors answer calls)."""
        return [cid for g in self.groups.values() if g.placed for cid in g.ids]

    def ids(self) -> list[str]:
        """Every camera of the fleet, placed or not."""
        return [cid for g in self.groups.values() for cid in g.ids]

    def actor_names(self) -> list[str]:
        """The names of the fleet's ingest actors."""
        return [ingest_actor_name(key) for key in self.groups]

    def use_config(self, config: Config) -> None:
        """Take a new config (`apply`): groups started from now on read it."""
        self.config = config
        self.placement.timeout_s = config.ray.placement_timeout_s

    def start(self, camera_ids: Iterable[str]) -> None:
        """Create the ingest actors of new groups of these cameras (and of those a `retire`
        took out of a group never placed); each group stays unplaced until Ray has placed it."""
        # Serve was not up when the fleet was made, or `apply` brought a global budget
        self.peers = self.peers.completed(self.config)
        wanted, self._orphans = [*self._orphans, *camera_ids], []
        for members in camera_groups(self.config, wanted):
            key = f"g.{self._next_key}"
            self._next_key += 1
            actor, ready = launch_group(self.config, key, members, self.peers)
            self.groups[key] = _Group(key, actor, list(members))
            self.placement.track(key, ready, group_resources(self.config, members))

    def follow_placement(self) -> None:
        """Mark placed groups; say which cameras cannot be placed (log, MQTT, run actor)."""
        if not all(g.placed for g in self.groups.values()):
            newly = self.placement.update()
            for group in self.groups.values():
                group.placed = group.placed or self.placement.placed(group.key)
            for key, reason in newly.items():
                for camera_id in self.groups[key].ids:
                    logger.warning("camera %s is unplaceable: %s", camera_id, reason)
                    if self.publisher is not None:
                        source_type = self.config.camera(camera_id).source_type
                        self.publisher.set_camera_status.remote(
                            camera_id, "unplaceable", source_type, reason
                        )
        self._report_placement()  # also after a retire removed the last unplaced group

    def _report_placement(self) -> None:
        """Tell the run actor the unplaceable cameras and the groups not placed yet, whenever
        either changed (the API and `liveobject status` read them there)."""
        waiting = {
            ingest_actor_name(k): list(g.ids) for k, g in self.groups.items() if not g.placed
        }
        now = (self.unplaceable(), waiting)
        if now == self._reported or self._run is None:
            return
        try:
            self._run.set_unplaceable.remote(*now)
            self._reported = now
        except Exception:
            logger.debug("run actor gone")

    def unplaceable(self) -> dict[str, str]:
        """Every camera whose group cannot be placed now, with the reason."""
        reasons = self.placement.unplaceable()
        return {
            cid: reasons[key] for key, g in self.groups.items() if key in reasons for cid in g.ids
        }

    def statuses(self, timeout_s: float = 5.0) -> dict[str, dict[str, Any]]:
        """Each camera's status (one wait for all); unplaced ones say starting or unplaceable.
        A group Ray restarted after a crash resumes its cameras on this call."""
        placed = [g for g in self.groups.values() if g.placed]
        calls = {g.actor.status.remote(list(g.ids), True): g for g in placed}
        ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=timeout_s)
        done = set(ready)
        out: dict[str, dict[str, Any]] = {}
        for ref, group in calls.items():
            try:
                answer = ray.get(ref) if ref in done else TimeoutError()
            except Exception as exc:
                answer = exc
            for cid in group.ids:
                if isinstance(answer, dict) and cid in answer:
                    out[cid] = answer[cid]
                else:
                    error = type(answer).__name__ if isinstance(answer, Exception) else "missing"
                    out[cid] = {"camera_id": cid, "status": "unknown", "error": error}
        for group in self.groups.values():
            if not group.placed:
                state, reason = self.placement.state(group.key)
                for cid in group.ids:
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
        self.follow_placement()  # a group placed since the last tick holds events: drain it
        wanted = set(self.ids() if camera_ids is None else camera_ids)
        timeout_s = self.config.shutdown.drain_timeout_s
        pending: dict[Any, tuple[list[str], bool]] = {}
        draining: list[tuple[Any, list[str]]] = []
        for group in self.groups.values():
            ids = [cid for cid in group.ids if cid in wanted]
            if group.placed and ids:
                pending[group.actor.drain.remote(ids, timeout_s)] = (ids, True)
                draining.append((group.actor, ids))

        def hurry_all() -> None:
            for actor, ids in draining:
                actor.hurry.remote(ids)

        return _reports(pending, timeout_s, hurry, hurry_all)

    def retire(self, camera_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Drain, remove and forget cameras; returns their drain reports (see `drain`).

        A group whose every camera goes is drained and killed. From a group that keeps some,
        each camera is removed on its own (stopped, drained, closed), its neighbours running
        on (its reservation stays the group's until the group ends: Ray cannot shrink an
        actor's). A group not placed yet holds nothing: it is killed, and the cameras it keeps
        start in a new group with the next `start` (apply's, under the new config).
        """
        self.follow_placement()  # a group placed since the last tick holds events: drain it
        wanted = set(camera_ids) & set(self.ids())
        timeout_s = self.config.shutdown.drain_timeout_s
        # a removed camera first waits for its decode thread (a blocked read ends at its own
        # timeout), then drains: its report may take that much longer than a drain's
        stop_s = max((stop_wait_s(self.config.camera(c)) for c in wanted), default=0.0)
        pending: dict[Any, tuple[list[str], bool]] = {}
        removing = False
        for group in list(self.groups.values()):
            going = [cid for cid in group.ids if cid in wanted]
            if not going or not group.placed:
                continue
            if len(going) == len(group.ids):
                pending[group.actor.drain.remote(going, timeout_s)] = (going, True)
            else:
                removing = True
                for cid in going:
                    pending[group.actor.remove.remote(cid, timeout_s)] = ([cid], False)
        reports = _reports(pending, timeout_s + (stop_s if removing else 0.0))
        for key, group in list(self.groups.items()):
            keep = [cid for cid in group.ids if cid not in wanted]
            if len(keep) == len(group.ids):
                continue
            if keep and group.placed:
                group.ids = keep
                continue
            ray.kill(group.actor, no_restart=True)
            self.placement.forget(key)
            del self.groups[key]
            self._orphans += keep
        self._report_placement()
        return reports


def _reports(
    pending: dict[Any, tuple[list[str], bool]],
    timeout_s: float,
    hurry: threading.Event | None = None,
    on_hurry: Callable[[], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Wait for the cameras' drain reports (the one drain loop: a full stop and `apply`).

    `pending` maps each call to its cameras and whether it answers a report per camera (a
    group's `drain`: {id: report}) or one report (`remove`). Waits at most `timeout_s` +
    DRAIN_GRACE_S; `hurry` set calls `on_hurry` once.
    """
    deadline = time.monotonic() + timeout_s + DRAIN_GRACE_S
    reports: dict[str, dict[str, Any]] = {}
    hurried = False
    while pending and time.monotonic() < deadline:
        if hurry is not None and hurry.is_set() and not hurried and on_hurry is not None:
            hurried = True
            on_hurry()
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=DRAIN_POLL_S)
        for ref in ready:
            ids, keyed = pending.pop(ref)
            try:
                answer = dict(ray.get(ref))
            except Exception as exc:
                for cid in ids:
                    logger.error("camera %s could not drain: %s", cid, type(exc).__name__)
                continue
            per_camera = answer if keyed else {ids[0]: answer}
            for cid in ids:
                report = per_camera.get(cid)
                if isinstance(report, dict) and "error" not in report:
                    reports[cid] = report
                else:
                    logger.error("camera %s could not drain: %s", cid, report)
    for ids, _keyed in pending.values():
        for cid in ids:
            logger.error("camera %s did not finish draining in time", cid)
    return reports
