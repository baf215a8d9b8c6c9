"""The pipeline's core step: a closed motion segment and the VLM's answer make an Event."""

from __future__ import annotations

from typing import Any

from pipelines.config import CameraConfig
from pipelines.events import Event, smart_detection_type
from pipelines.ingest.ids import segment_event_id
from pipelines.ingest.segment import Segment
from pipelines.vlm.types import VLMResult


def segment_identity(
    camera_id: str, segment: Segment, file_identity: str | None, *, is_ring: bool
) -> dict[str, Any]:
    """A file segment's derived event id and media offset; nothing for rings and streams.

    A file replayed after a restart gives its segments the same ids, so the store can tell a
    segment it has already (`pipelines.ingest.ids`).
    """
    if is_ring or file_identity is None:
        return {}
    return {
        "event_id": segment_event_id(camera_id, file_identity, segment.start_pts),
        "media_offset_s": max(0.0, segment.start_pts),
    }


def build_event(
    camera: CameraConfig,
    segment: Segment,
    result: VLMResult,
    *,
    is_ring: bool,
    latency_ms: float,
    file_identity: str | None = None,
    noise_fields: dict[str, Any] | None = None,
) -> Event:
    """The Event for one analysed segment (timestamps are the segment's wall-clock times)."""
    objects = tuple(result.objects)
    return Event(
        camera_id=camera.id,
        camera_name=camera.name,
        description=result.description or f"Motion detected on {camera.name}",
        objects_detected=objects,
        confidence=result.confidence,
        source_type=camera.source_type,
        timestamp=segment.start_wall,
        ended_at=segment.end_wall,
        smart_detection_type=smart_detection_type(objects),
        is_doorbell_ring=True if is_ring else None,
        provider_used=result.provider_used,
        analysis_mode=result.analysis_mode,
        ai_confidence=result.ai_confidence,
        frame_count=segment.frame_count,
        merged_motion=segment.merged_motion,
        vlm_latency_ms=round(latency_ms, 1),
        frames_from=("main" if segment.from_main else "detect") if camera.detect_source else None,
        **segment_identity(camera.id, segment, file_identity, is_ring=is_ring),
        **(noise_fields or {}),
    )
