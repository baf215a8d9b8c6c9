"""The shared Ray session's description, and what tests ask of actors running in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RaySession:
    """The shared local Ray cluster: its namespace and where Serve's HTTP proxy listens."""

    namespace: str
    serve_port: int


def status(actor: Any) -> dict[str, Any]:
    """An actor's `status()` (a camera's, the publisher's), within 30 s."""
    import ray

    result: dict[str, Any] = ray.get(actor.status.remote(), timeout=30)
    return result


def camera_status(actor: Any) -> dict[str, Any]:
    """The status of the one camera of an ingest actor (`start_camera`'s), within 30 s, asked
    as `liveobject run` asks: an actor Ray restarted after a crash resumes the camera."""
    import ray

    answer: dict[str, dict[str, Any]] = ray.get(actor.status.remote(None, True), timeout=30)
    (status_of_camera,) = answer.values()
    return status_of_camera


def ray_logs() -> str:
    """Everything the Ray processes of this session wrote to their log files so far."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    chunks = []
    for path in logs.rglob("*"):
        if path.is_file() and path.suffix in (".out", ".err", ".log"):
            chunks.append(path.read_text(errors="replace"))
    return "\n".join(chunks)
