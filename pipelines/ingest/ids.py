"""Event ids of file sources: derived, so that replaying a file yields the same ids again.

A camera whose ingest actor Ray restarts replays its file from the start. Motion segmentation
of the same file with the same settings cuts the same segments, so an id derived from the
camera, the file's identity (path, size, modification time) and the segment's media offset
makes the replay idempotent at the store (its primary key). Live streams never replay: they
keep random ids.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["file_identity", "segment_event_id"]

# uuid5(NAMESPACE_URL, "https://liveobject.dev/event-id/file"): fixed forever, ids depend on it
_NAMESPACE = uuid.UUID("00355f35-d73e-5749-8b86-51697a9032c8")


def file_identity(path: str | os.PathLike[str]) -> str:
    """`path|size|mtime_ns` of a file: a changed or replaced file gets new event ids."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}"


def segment_event_id(camera_id: str, identity: str, media_offset_s: float) -> str:
    """The event id of the segment starting at media_offset_s (ms resolution) of a file."""
    millis = round(media_offset_s * 1000)
    return str(uuid.uuid5(_NAMESPACE, f"{camera_id}\n{identity}\n{millis}"))
