"""State of a running cluster, and how it is shown (`liveobject status` and the live table).

`gather_status(namespace)` reads the named actors, the run actor (cameras Ray cannot place) and
the VLM replicas' reports; `render` draws it as tables for a terminal and `plain_lines` as one
line per camera and replica for logs and pipes. Both show, per camera, the node it runs on,
and per VLM replica its node and queue. `liveobject run` draws its own snapshots with the same
two functions.
"""

from __future__ import annotations

from typing import Any

import ray
from rich.console import Group
from rich.table import Table

from cluster.actors.run import find_run
from cluster.directory import IngestDirectory
from cluster.metrics import node_label
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR

TIMEOUT_S = 10.0
CAMERA_COLUMNS = (
    "camera",
    "status",
    "node",
    "fps",
    "frames",
    "events",
    "queue",
    "vlm in flight",
    "reused",  # noise control (docs/events.md): a near-duplicate's description reused
    "throttled",  # over a VLM budget: the fallback text
    "filtered",  # stored, not published: no wanted object
)
VLM_COLUMNS = ("vlm replica", "node", "queued", "running", "requests")


def _call(actor_name: str, method: str, namespace: str) -> Any:
    try:
        actor = ray.get_actor(actor_name, namespace=namespace)
        return ray.get(getattr(actor, method).remote(), timeout=TIMEOUT_S)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}"}


def _cameras(namespace: str) -> dict[str, Any]:
    """Every camera's status from the ingest actors; those of an ingest actor not placed yet
    (the run actor knows them) are `starting` or `unplaceable`, and it is not asked."""
    run = find_run(namespace)
    unplaceable: dict[str, str] = {}
    waiting: dict[str, list[str]] = {}
    if run is not None:
        try:
            unplaceable, waiting = ray.get(
                [run.unplaceable.remote(), run.waiting.remote()], timeout=TIMEOUT_S
            )
        except Exception:
            unplaceable, waiting = {}, {}
    cameras: dict[str, Any] = {}
    for cam_ids in waiting.values():
        for cam_id in cam_ids:
            cameras[cam_id] = {"camera_id": cam_id, "status": "starting", "reason": None}
    for cam_id, reason in unplaceable.items():
        cameras[cam_id] = {"camera_id": cam_id, "status": "unplaceable", "reason": reason}
    cameras.update(IngestDirectory(namespace).statuses(TIMEOUT_S, skip=set(waiting)))
    return dict(sorted(cameras.items()))


def gather_status(namespace: str) -> dict[str, Any]:
    """Cameras, VLM replicas, Serve apps, MQTT and store state of the cluster in `namespace`."""
    from ray import serve

    from serve_apps.vlm import replica_reports

    try:
        apps = {name: str(app.status) for name, app in serve.status().applications.items()}
    except Exception as exc:
        apps = {"error": type(exc).__name__}
    try:
        vlm = replica_reports()
    except Exception:
        vlm = []
    run = find_run(namespace)
    try:
        owner = None if run is None else ray.get(run.owner.remote(), timeout=TIMEOUT_S)
    except Exception:
        owner = None
    return {
        "run": owner,
        "cameras": _cameras(namespace),
        "vlm": vlm,
        "serve": apps,
        "mqtt": _call(PUBLISHER_ACTOR, "status", namespace),
        "store": _call(STORE_ACTOR, "health", namespace),  # counts, and ok/detail (disk full)
    }


# ---- showing it ------------------------------------------------------------------------------
def camera_row(cam_id: str, cam: dict[str, Any]) -> tuple[str, ...]:
    """The table cells of one camera (an unplaceable one: its reason after the status)."""
    status = str(cam.get("status", cam.get("error", "unknown")))
    main = cam.get("main_stream")
    if isinstance(main, dict) and main.get("status") != "online":  # a detect_source camera
        status += f" (main stream {main.get('status')})"
    return (
        cam_id,
        status,
        node_label(cam.get("node")),
        str(cam.get("fps", "")),
        str(cam.get("frames", "")),
        str(cam.get("events", "")),
        str(cam.get("queue_depth", "")),
        str(cam.get("in_flight", "")),
        str(cam.get("reused", "")),
        str(cam.get("throttled", "")),
        str(cam.get("filtered", "")),
    )


def vlm_row(replica: dict[str, Any]) -> tuple[str, ...]:
    """The table cells of one VLM replica."""
    return (
        str(replica.get("replica", ""))[:12],
        node_label(replica.get("node")),
        str(replica.get("queued", "")),
        str(replica.get("running", "")),
        str(replica.get("requests", "")),
    )


def _reasons(snap: dict[str, Any]) -> list[str]:
    return [
        f"{cid}: {cam['status']} — {cam['reason']}"
        for cid, cam in sorted(snap["cameras"].items())
        if cam.get("reason")
    ]


def _mqtt_text(mqtt: dict[str, Any]) -> str:
    """Connected, published and pending; when not connected, why (certificate, password…)."""
    text = (
        f"MQTT: connected={mqtt.get('connected', False)} published={mqtt.get('acked', 0)} "
        f"pending={mqtt.get('pending', 0)}"
    )
    if mqtt.get("enabled", True) and not mqtt.get("connected") and mqtt.get("reason"):
        text += f"  NOT CONNECTED: {mqtt['reason']}"
    return text


def _store_text(store: dict[str, Any]) -> str:
    """The store's counts, and loudly why it is degraded (a full disk) or unreachable."""
    if "error" in store:
        return f"store: unreachable ({store['error']})"
    counts = {k: store[k] for k in ("stored", "published", "unpublished", "filtered") if k in store}
    text = f"store: {counts}"
    if store.get("ok") is False:
        text += f"  DEGRADED: {store.get('detail') or 'unhealthy'}"
    return text


def render(snap: dict[str, Any], title: str = "liveobject") -> Group:
    """Cameras and VLM replicas as tables (for a terminal), MQTT and store below."""
    cameras = Table(title=title, expand=False)
    for col in CAMERA_COLUMNS:
        cameras.add_column(col)
    for cam_id, cam in sorted(snap["cameras"].items()):
        cameras.add_row(*camera_row(cam_id, cam))
    replicas = Table(expand=False)
    for col in VLM_COLUMNS:
        replicas.add_column(col)
    for replica in snap.get("vlm", []):
        replicas.add_row(*vlm_row(replica))
    notes = _reasons(snap)
    caption = f"{_mqtt_text(snap.get('mqtt', {}))}   {_store_text(snap.get('store', {}))}"
    cameras.caption = "\n".join([*notes, caption])
    return Group(cameras, replicas)


def plain_lines(snap: dict[str, Any]) -> list[str]:
    """The same, one line per camera and per replica (for logs, pipes and CI)."""
    lines = []
    for cam_id, cam in sorted(snap["cameras"].items()):
        cells = dict(zip(CAMERA_COLUMNS, camera_row(cam_id, cam), strict=True))
        text = " ".join(f"{k.replace(' ', '_')}={v}" for k, v in cells.items() if v)
        if cam.get("reason"):
            text += f" reason={cam['reason']!r}"
        lines.append(text)
    for replica in snap.get("vlm", []):
        cells = dict(zip(VLM_COLUMNS, vlm_row(replica), strict=True))
        lines.append(" ".join(f"{k.replace(' ', '_')}={v}" for k, v in cells.items() if v))
    lines.append(f"{_mqtt_text(snap.get('mqtt', {}))} {_store_text(snap.get('store', {}))}")
    return lines
