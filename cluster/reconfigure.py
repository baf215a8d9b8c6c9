"""Reconfigure a running deployment in place (`liveobject apply --config FILE`).

`plan(old, new)` compares two configs — plain Python, unit-tested without Ray — and says which
cameras are added, removed, restarted (their own entry, or a setting cameras read from
outside it, changed) or unchanged, and whether the `vlm` and `api` Serve apps must be
redeployed. Sections whose change needs a new run (`ray` apart from `placement_timeout_s`,
`storage`, `correlation`, `mqtt`) make the plan a refusal that names them. Secrets compare by
value: a new `api.api_key` redeploys the API (old key refused at once) while the publisher takes
the new key for its thumbnail links in the same apply, a new `vlm` key redeploys the VLM, and a
new `mqtt.password` is refused as needing a new run.

`apply_pending(run, fleet)` runs in the `liveobject run` process, once per tick of its
housekeeping: it takes a config that `apply` left on the run actor and carries the plan out on
the camera fleet (cluster.fleet) — removed and changed cameras are retired (drained: nothing
they hold is lost; then removed), the publisher takes the new camera list (removed cameras'
discovery cleared), changed apps are redeployed, then new and changed cameras start. Unchanged
cameras are not touched: their actors keep running without a gap.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import ray
from ray import serve

from cluster.fleet import CameraFleet
from cluster.placement import live_nodes, vlm_gpu_error
from pipelines.config import Config
from pipelines.naming import API_APP, VLM_APP
from pipelines.vlm.budget import budget_spec
from serve_apps.api import build_api_app
from serve_apps.vlm import build_vlm_app

logger = logging.getLogger(__name__)

IN_PLACE_RAY_KEYS = frozenset({"placement_timeout_s"})  # ray.* keys applied without a new run
NEEDS_NEW_RUN = ("storage", "correlation", "mqtt")
# Settings a camera reads from outside its own `cameras[]` entry
# (cluster/actors/ingest.py): a change restarts every camera.
CAMERA_GLOBALS: dict[str, tuple[str, ...]] = {
    "vlm": ("image_size", "deadline_s", "max_per_hour", "dedupe", "backends"),
    "storage": ("thumbnail_quality",),
    "mqtt": ("enabled",),
    "shutdown": (),  # the whole section
}


@dataclass(frozen=True)
class Plan:
    """What applying `new` over `old` does; `refused` says why it cannot be done in place."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    redeploy_vlm: bool = False
    redeploy_api: bool = False
    refused: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (lists), for the run actor and `liveobject apply`."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _section(config: Config, name: str) -> Any:
    # Python mode, not JSON: there a SecretStr dumps as "**********" and a changed key would
    # look unchanged; pydantic's secrets compare by value (never printed: plans name sections).
    return getattr(config, name).model_dump()


def _camera_globals(config: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, keys in CAMERA_GLOBALS.items():
        dump = _section(config, section) if hasattr(config, section) else {}
        out[section] = {k: dump.get(k) for k in keys} if keys else dump
    return out


def _cameras(config: Config) -> dict[str, dict[str, Any]]:
    return {c.id: c.model_dump() for c in config.cameras if c.enabled}


def refusal(old: Config, new: Config) -> str | None:
    """Why `new` cannot replace `old` in a running deployment (None when it can)."""
    changed = [name for name in NEEDS_NEW_RUN if _section(old, name) != _section(new, name)]
    old_ray, new_ray = _section(old, "ray"), _section(new, "ray")
    changed += [
        f"ray.{key}"
        for key in sorted(set(old_ray) | set(new_ray))
        if key not in IN_PLACE_RAY_KEYS and old_ray.get(key) != new_ray.get(key)
    ]
    changed += [
        f"api.{key}" for key in ("host", "port") if getattr(old.api, key) != getattr(new.api, key)
    ]
    # the proxy stays bound where the run started it: the new API must be safe there
    exposed = new.api.model_copy(update={"host": old.api.host}).exposure_refusal()
    if exposed is not None:
        return exposed
    if not changed:
        return None
    return (
        f"{', '.join(changed)} changed: that needs a new run (`liveobject stop`, then "
        "`liveobject run --config FILE`); apply changes cameras, vlm and api in place"
    )


def plan(old: Config, new: Config) -> Plan:
    """Compare two configs: cameras to add, remove, restart, keep; apps to redeploy."""
    why = refusal(old, new)
    if why is not None:
        return Plan(refused=why)
    before, after = _cameras(old), _cameras(new)
    # a changed budget (a camera moved to another chain too) restarts every camera: they all
    # send the budget actor one spec, and it starts over whenever the spec changes
    globals_changed = _camera_globals(old) != _camera_globals(new) or (
        budget_spec(old) != budget_spec(new)
    )
    restarted = [
        cid for cid in after if cid in before and (globals_changed or before[cid] != after[cid])
    ]
    without_vlm = {"exclude": {"vlm", "ray"}}
    return Plan(
        added=tuple(c for c in after if c not in before),
        removed=tuple(c for c in before if c not in after),
        restarted=tuple(restarted),
        unchanged=tuple(c for c in after if c in before and c not in restarted),
        redeploy_vlm=_section(old, "vlm") != _section(new, "vlm"),
        redeploy_api=old.model_dump(**without_vlm) != new.model_dump(**without_vlm),  # type: ignore[arg-type]
    )


# ---- carrying a plan out (Ray) ---------------------------------------------------------------
def apply_pending(run: Any, fleet: CameraFleet) -> None:
    """Apply the config `liveobject apply` left on the run actor, if any; report the result."""
    pending = ray.get(run.take.remote(), timeout=10)
    if pending is None:
        return
    ticket, config = pending
    try:
        result = apply(fleet, config)
    except Exception as exc:
        logger.exception("applying a new config failed")
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    run.report.remote(ticket, result)


def apply(fleet: CameraFleet, new: Config) -> dict[str, Any]:
    """Carry out plan(fleet.config, new) on the running deployment; what was done."""
    steps = plan(fleet.config, new)
    if steps.refused is not None:
        return {"ok": False, "error": steps.refused, **steps.as_dict()}
    if steps.redeploy_vlm:
        problem = vlm_gpu_error(new, live_nodes(free=False))
        if problem is not None:
            return {"ok": False, "error": problem, **steps.as_dict()}
    logger.info(
        "applying a new config: +%s -%s restart %s, vlm %s, api %s",
        list(steps.added),
        list(steps.removed),
        list(steps.restarted),
        "redeploy" if steps.redeploy_vlm else "kept",
        "redeploy" if steps.redeploy_api else "kept",
    )
    reports = fleet.retire([*steps.removed, *steps.restarted])
    drained = {cid: int(report.get("events", 0)) for cid, report in reports.items()}
    if fleet.publisher is not None:
        ray.get(fleet.publisher.reconfigure.remote(new), timeout=30)
    if new.ray.deploy_serve_apps:
        _redeploy(new, vlm=steps.redeploy_vlm, api=steps.redeploy_api)
    elif steps.redeploy_vlm or steps.redeploy_api:
        logger.warning("vlm/api settings changed: redeploy the apps where they are deployed")
    fleet.use_config(new)
    fleet.start([*steps.restarted, *steps.added])
    return {"ok": True, "drained": drained, **steps.as_dict()}


def _redeploy(config: Config, *, vlm: bool, api: bool) -> None:
    if vlm:
        serve.run(build_vlm_app(config.vlm), name=VLM_APP, route_prefix=None)
    if api:
        serve.run(build_api_app(config), name=API_APP, route_prefix="/")
