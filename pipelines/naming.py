"""Names of the Ray actors and Serve apps: the one place they are spelled."""

from __future__ import annotations

STORE_ACTOR = "event-store"
PUBLISHER_ACTOR = "mqtt-publisher"
BUDGET_ACTOR = "vlm-budget"
VLM_APP = "vlm"
VLM_DEPLOYMENT = "VLM"
API_APP = "api"
RUN_ACTOR = "liveobject-run"  # the running `liveobject run` of a namespace (not detached)
VLM_REPLICA_KEY = "liveobject-vlm-replica:"  # internal-KV prefix of VLM replica reports


def camera_actor_name(camera_id: str) -> str:
    """Name of the actor that ingests one camera."""
    return f"camera:{camera_id}"
