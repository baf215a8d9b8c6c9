"""A camera's live state, as `liveobject status`, the API and --until-done read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CameraStatus:
    """One camera's state and counters (`as_dict()` is what the actor returns)."""

    camera_id: str
    camera_name: str
    status: str  # starting | online | offline | unavailable
    source_type: str
    source: str  # redacted
    fps: float
    frames: int
    events: int  # events saved
    merged_motion: int  # motion bursts merged into saved events
    segments: int  # motion segments cut
    merged_pending: int  # segments merged into a queued one (VLM behind)
    queue_depth: int
    max_queue_depth: int
    max_pending_events: int
    in_flight: int
    activity: bool
    ingest_done: bool
    done: bool  # ingest done and nothing queued, analysed or unsaved
    failures: int
    retry_in_s: float | None
    last_error: str | None
    last_event: dict[str, Any] | None
    doorbell: bool
    node: dict[str, str]
    pid: int
    # the outbox (pipelines.camera.outbox)
    unsaved: int
    max_unsaved: int
    save_retrying: bool
    save_failures: int
    dropped: int
    dropped_event_ids: list[str]
    # restarts, rings, stop
    already_stored: int
    rings_accepted: int
    rings_merged: int
    ring_pending: bool
    restarted: bool
    draining: bool
    fallback_at_stop: int
    # noise control (pipelines.camera.noise)
    noise: dict[str, int] = field(default_factory=dict)
    # a camera with a detect_source: that URL (redacted) and its main stream's state
    detect_source: str | None = None
    main_stream: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, the noise counters at the top level (the detect-source keys
        only for a camera that has one)."""
        data = asdict(self)
        noise = data.pop("noise")
        if data["detect_source"] is None:
            del data["detect_source"], data["main_stream"]
        return {**data, **noise}
