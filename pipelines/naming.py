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


INGEST_PREFIX = "ingest:"  # every ingest actor's name starts so (cluster.actors.ingest)


def ingest_actor_name(key: str) -> str:
    """Name of an ingest actor: `ingest:g.3` for a run's third group, `ingest:<camera id>` for
    a camera started on its own (tests, benchmarks). A camera id never holds a dot."""
    return f"{INGEST_PREFIX}{key}"


# What an ingest actor's group answers about a camera it does not run (pipelines.camera.group;
# cluster.directory then asks the other ingest actors).
NOT_IN_GROUP = "not in this group"
