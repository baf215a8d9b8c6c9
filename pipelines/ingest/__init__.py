"""Ingest stage: frame sources, motion detection and motion-event segmentation."""

from pipelines.ingest.motion import MotionDetector, MotionResult
from pipelines.ingest.opening import DetectSource, MainStream, open_source
from pipelines.ingest.segment import EventSegmenter, PendingEvents, Segment
from pipelines.ingest.sources import (
    Backoff,
    FileSource,
    Frame,
    FrameSource,
    SourceError,
    StreamSource,
)

__all__ = [
    "Backoff",
    "DetectSource",
    "EventSegmenter",
    "FileSource",
    "Frame",
    "FrameSource",
    "MainStream",
    "MotionDetector",
    "MotionResult",
    "PendingEvents",
    "Segment",
    "SourceError",
    "StreamSource",
    "open_source",
]
