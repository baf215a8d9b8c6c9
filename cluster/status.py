"""State of a running cluster, read from its named actors and Serve (for `liveobject status`)."""

from __future__ import annotations

from typing import Any

import ray

from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR

TIMEOUT_S = 10.0


def _call(actor_name: str, method: str, namespace: str) -> Any:
    try:
        actor = ray.get_actor(actor_name, namespace=namespace)
        return ray.get(getattr(actor, method).remote(), timeout=TIMEOUT_S)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}"}


def gather_status(namespace: str) -> dict[str, Any]:
    """Cameras, Serve apps, MQTT and store state of the cluster in `namespace`."""
    from ray import serve

    cameras: dict[str, Any] = {}
    for info in ray.util.list_named_actors(all_namespaces=True):
        name = info["name"] if isinstance(info, dict) else str(info)
        ns = info.get("namespace", namespace) if isinstance(info, dict) else namespace
        if ns == namespace and name.startswith("camera:"):
            cameras[name.split(":", 1)[1]] = _call(name, "status", namespace)
    try:
        apps = {name: str(app.status) for name, app in serve.status().applications.items()}
    except Exception as exc:
        apps = {"error": type(exc).__name__}
    return {
        "cameras": cameras,
        "serve": apps,
        "mqtt": _call(PUBLISHER_ACTOR, "status", namespace),
        "store": _call(STORE_ACTOR, "counts", namespace),
    }
