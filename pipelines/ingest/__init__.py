"""Ingest stage: frame sources, motion detection and motion-event segmentation."""

from pipelines.ingest.motion import MotionDetector, MotionResult
from pipelines.ingest.segment import EventSegmenter, PendingEvents, Segment
from pipelines.ingest.sources import (
    Backoff,
    FileSource,
    Frame,
    FrameSource,
    SourceError,
    StreamSource,
    open_source,
)

__all__ = [
    "Backoff",
    "EventSegmenter",
    "FileSource",
    "Frame",
    "FrameSource",
    "MotionDetector",
    "MotionResult",
    "PendingEvents",
    "Segment",
    "SourceError",
    "StreamSource",
    "open_source",
]
