"""What every actor and replica of a config asks Ray for, and whether the cluster can hold it.

`demands(config)` lists the resource requests in the order `deploy` creates them (store,
publisher, API, VLM replicas, then the ingest actors: the cameras in config order, in groups of
`ray.cameras_per_actor`, each reserving the sum of its cameras' `num_cpus`). `pack` places
them first-fit on the nodes' free resources — plain Python, no Ray — and names what does not
fit, with what it needs and what is free. `check_fit` runs that against the live cluster
before anything is deployed: a VLM replica that cannot be placed (e.g. `vlm.num_gpus: 1` on a
cluster without a GPU) is a `PlacementError` at once, not a deployment that waits forever;
cameras that do not fit are reported and still created (Ray starts them when resources free
up).

`CameraPlacement` then follows every ingest actor after it was created: one whose `start` has
not answered after `ray.placement_timeout_s` while no node has room for its request is
`unplaceable` (with the reason), and so is each of its cameras, in `status`, the live table,
`/api/v1/cameras` and on MQTT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.config import Config

logger = logging.getLogger(__name__)

STORE_CPUS = 0.05  # cluster.actors.store.EventStoreActor
PUBLISHER_CPUS = 0.05  # cluster.actors.publisher.get_publisher
API_CPUS = 0.05  # serve_apps.api.app (one replica)
STORE_NODE_SHARE = 0.01  # of `storage.node_resource`: 100 deployments can share one node
_EPS = 1e-6
_SHOWN = ("CPU", "GPU")  # always named in a reason; custom resources only when involved


class PlacementError(RuntimeError):
    """The cluster cannot hold a part that the run cannot do without (a VLM replica)."""


@dataclass(frozen=True)
class Demand:
    """One actor or replica and the resources it requests."""

    kind: str  # store | publisher | api | vlm | camera (an ingest actor)
    name: str  # the cameras' ids ("a, b" for a group), or e.g. "vlm replica 1"
    resources: Mapping[str, float]


@dataclass(frozen=True)
class Node:
    """A live node: its id, address and free (or total) resources."""

    node_id: str
    address: str
    resources: Mapping[str, float]


@dataclass
class FitReport:
    """The outcome of `pack`: where each demand went, and why the others did not fit."""

    placed: dict[str, str] = field(default_factory=dict)  # demand name → node id
    unplaceable: dict[str, str] = field(default_factory=dict)  # demand name → reason
    kinds: dict[str, str] = field(default_factory=dict)  # demand name → kind

    def unplaceable_of(self, kind: str) -> dict[str, str]:
        """The unplaceable demands of one kind (name → reason)."""
        return {n: r for n, r in self.unplaceable.items() if self.kinds.get(n) == kind}


def camera_groups(config: Config, camera_ids: list[str]) -> list[list[str]]:
    """The cameras split into ingest actors' groups: `ray.cameras_per_actor` each, in order."""
    size = config.ray.cameras_per_actor
    return [camera_ids[i : i + size] for i in range(0, len(camera_ids), size)]


def group_resources(config: Config, camera_ids: list[str]) -> dict[str, float]:
    """What the ingest actor of a group of cameras requests: the sum of their `num_cpus`."""
    return {"CPU": round(sum(config.camera(cid).num_cpus for cid in camera_ids), 6)}


def store_resources(config: Config) -> dict[str, float]:
    """What the event-store actor requests (pinned by `storage.node_resource` when set)."""
    resources = {"CPU": STORE_CPUS}
    if config.storage.node_resource:
        resources[config.storage.node_resource] = STORE_NODE_SHARE
    return resources


def vlm_replicas(config: Config) -> int:
    """Replicas the VLM deployment starts with (autoscaling: its minimum, at least one)."""
    vlm = config.vlm
    if vlm.num_replicas == "auto":
        return max(1, vlm.autoscaling.min_replicas if vlm.autoscaling else 1)
    return int(vlm.num_replicas)


def demands(config: Config) -> list[Demand]:
    """Every resource request of a deployment of `config`, in creation order."""
    out = [Demand("store", "event-store", store_resources(config))]
    if config.mqtt.enabled:
        out.append(Demand("publisher", "mqtt-publisher", {"CPU": PUBLISHER_CPUS}))
    out.append(Demand("api", "api replica", {"CPU": API_CPUS}))
    vlm = {"CPU": config.vlm.num_cpus}
    if config.vlm.num_gpus:
        vlm["GPU"] = config.vlm.num_gpus
    out += [Demand("vlm", f"vlm replica {i + 1}", vlm) for i in range(vlm_replicas(config))]
    enabled = [cam.id for cam in config.cameras if cam.enabled]
    out += [
        Demand("camera", ", ".join(group), group_resources(config, group))
        for group in camera_groups(config, enabled)
    ]
    return out


def describe(resources: Mapping[str, float], keys: Iterable[str] = _SHOWN) -> str:
    """`CPU 0.1, GPU 1` — the named resources, rounded for people."""
    parts = [f"{key} {resources.get(key, 0.0):g}" for key in keys]
    return ", ".join(parts)


def _fits(need: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(free.get(key, 0.0) + _EPS >= amount for key, amount in need.items() if amount)


def why_not(need: Mapping[str, float], nodes: list[Node]) -> str:
    """The reason `need` fits no node: what it needs, and what the roomiest node has free."""
    gpus = need.get("GPU") or any(n.resources.get("GPU") for n in nodes)
    keys = ["CPU", *(["GPU"] if gpus else []), *sorted(k for k in need if k not in _SHOWN)]
    if not nodes:
        return f"needs {describe(need, keys)}; the cluster has no live node"
    roomiest = max(nodes, key=lambda n: tuple(n.resources.get(k, 0.0) for k in keys))
    total = {k: sum(n.resources.get(k, 0.0) for n in nodes) for k in keys}
    where = f"on {len(nodes)} nodes" if len(nodes) > 1 else "on its one node"
    return (
        f"needs {describe(need, keys)}; free: {describe(roomiest.resources, keys)} at most "
        f"on one node ({describe(total, keys)} {where})"
    )


def pack(wanted: list[Demand], nodes: list[Node]) -> FitReport:
    """First-fit of the demands, in order, onto the nodes' free resources."""
    free = {node.node_id: dict(node.resources) for node in nodes}
    report = FitReport()
    for demand in wanted:
        report.kinds[demand.name] = demand.kind
        target = next((n for n in nodes if _fits(demand.resources, free[n.node_id])), None)
        if target is None:
            left = [Node(n.node_id, n.address, free[n.node_id]) for n in nodes]
            report.unplaceable[demand.name] = why_not(demand.resources, left)
            continue
        for key, amount in demand.resources.items():
            free[target.node_id][key] = free[target.node_id].get(key, 0.0) - amount
        report.placed[demand.name] = target.node_id
    return report


def vlm_gpu_error(config: Config, totals: list[Node]) -> str | None:
    """Why no node could ever hold a VLM replica's GPUs (None when some node could)."""
    gpus = config.vlm.num_gpus
    if not gpus or any(n.resources.get("GPU", 0.0) + _EPS >= gpus for n in totals):
        return None
    most = max((n.resources.get("GPU", 0.0) for n in totals), default=0.0)
    have = "no node of this Ray cluster has a GPU" if not most else f"the largest has {most:g}"
    return (
        f"vlm.num_gpus is {gpus:g} but {have}; set vlm.num_gpus: 0 to run the VLM on CPU, "
        "or add a GPU node to the cluster"
    )


# ---- against the live cluster (Ray imported lazily: the functions above are plain Python) ----
def live_nodes(*, free: bool) -> list[Node]:
    """The cluster's live nodes with their free (or total) resources."""
    import ray
    from ray._private import state

    per_node = state.available_resources_per_node() if free else state.total_resources_per_node()
    addresses = {n["NodeID"]: n.get("NodeManagerAddress", "") for n in ray.nodes() if n["Alive"]}
    return [
        Node(node_id, addresses.get(node_id, ""), {k: float(v) for k, v in res.items()})
        for node_id, res in sorted(per_node.items())
        if node_id in addresses
    ]


def check_fit(config: Config, wanted: list[Demand] | None = None) -> FitReport:
    """Pack the config onto the cluster's free resources; a VLM that cannot fit raises.

    Raises PlacementError when a VLM replica can never be placed (no node has the GPUs) or
    does not fit in what is free now; cameras that do not fit are only reported.
    """
    problem = vlm_gpu_error(config, live_nodes(free=False))
    if problem is not None:
        raise PlacementError(problem)
    report = pack(demands(config) if wanted is None else wanted, live_nodes(free=True))
    for name, reason in report.unplaceable.items():
        kind = report.kinds[name]
        if kind == "vlm":
            raise PlacementError(f"{name} of the VLM deployment cannot be placed: {reason}")
        if kind != "camera":
            logger.warning("%s may not be placed: %s", name, reason)
    return report


def pending_demands() -> list[tuple[dict[str, float], int]] | None:
    """(resource shape, count) of the requests Ray cannot grant now (None: unknown).

    An actor whose resources were granted but whose worker is still starting is not in it,
    so a slow start is never mistaken for a missing resource.
    """
    try:
        import ray
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
        return [
            (dict(request.bundle), int(request.count))
            for demand in status.resource_demands.ray_task_actor_demand
            for request in demand.bundles_by_count
        ]
    except Exception as exc:
        logger.debug("Ray's pending resource demands are unavailable: %s", exc)
        return None


def _same_shape(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    keys = {k for k, v in a.items() if v} | {k for k, v in b.items() if v}
    return all(abs(a.get(k, 0.0) - b.get(k, 0.0)) < 1e-4 for k in keys)


def _starved(overdue: list[str], cameras: dict[str, _Tracked], nodes: list[Node]) -> set[str]:
    """The overdue ingest actors that wait for resources (not for a worker process to start).

    Ray's pending demands say how many requests of each shape wait; the actors created last
    are taken as the waiting ones. Without that view: those whose request fits no node now.
    """
    if not overdue:
        return set()
    demands_now = pending_demands()
    if demands_now is None:
        return {c for c in overdue if not any(_fits(cameras[c].need, n.resources) for n in nodes)}
    starved: set[str] = set()
    for cid in sorted(overdue, key=lambda c: cameras[c].created, reverse=True):
        for index, (shape, count) in enumerate(demands_now):
            if count > 0 and _same_shape(shape, cameras[cid].need):
                demands_now[index] = (shape, count - 1)
                starved.add(cid)
                break
    return starved


@dataclass
class _Tracked:
    ready: Any  # ObjectRef of the actor's `start` call
    created: float
    need: dict[str, float]
    state: str = "starting"  # starting | placed | unplaceable
    reason: str | None = None


class CameraPlacement:
    """Follows ingest actors, by key, from creation until Ray has placed them (or says it
    cannot)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._cameras: dict[str, _Tracked] = {}

    def track(self, key: str, ready_ref: Any, need: Mapping[str, float]) -> None:
        """Follow the ingest actor `key` whose `start` call returned `ready_ref`."""
        self._cameras[key] = _Tracked(ready_ref, time.monotonic(), dict(need))

    def forget(self, camera_id: str) -> None:
        """Stop following a camera (removed by a reconfigure)."""
        self._cameras.pop(camera_id, None)

    def update(self) -> dict[str, str]:
        """Check pending cameras; returns the ones newly found unplaceable (id → reason)."""
        import ray

        pending = {cid: t for cid, t in self._cameras.items() if t.state != "placed"}
        if not pending:
            return {}
        refs = [t.ready for t in pending.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done = set(ready)
        overdue = [
            cid
            for cid, t in pending.items()
            if t.ready not in done and time.monotonic() - t.created >= self.timeout_s
        ]
        nodes = live_nodes(free=True) if overdue else []
        starved = _starved(overdue, self._cameras, nodes)
        newly: dict[str, str] = {}
        for cid, tracked in pending.items():
            if tracked.ready in done:
                if tracked.state == "unplaceable":
                    logger.info("camera %s: placed after all", cid)
                tracked.state, tracked.reason = "placed", None
            elif cid in starved:
                reason = why_not(tracked.need, nodes)
                if tracked.state != "unplaceable" or tracked.reason != reason:
                    newly[cid] = reason
                tracked.state, tracked.reason = "unplaceable", reason
        return newly

    def state(self, camera_id: str) -> tuple[str, str | None]:
        """(starting | placed | unplaceable, reason) of one camera."""
        tracked = self._cameras.get(camera_id)
        return ("placed", None) if tracked is None else (tracked.state, tracked.reason)

    def unplaceable(self) -> dict[str, str]:
        """Every camera currently unplaceable, with its reason."""
        return {c: t.reason or "" for c, t in self._cameras.items() if t.state == "unplaceable"}

    def placed(self, camera_id: str) -> bool:
        """Whether the camera's actor has answered (so status calls will not wait)."""
        return self.state(camera_id)[0] == "placed"
