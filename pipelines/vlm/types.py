"""Messages exchanged with the VLM: one request per motion event, one result back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AnalysisMode = Literal["single_frame", "multi_frame"]


@dataclass(frozen=True, slots=True)
class VLMRequest:
    """Key frames (JPEG bytes, already sized) of one motion event on one camera."""

    camera_id: str
    camera_name: str
    frames: tuple[bytes, ...]
    prompt: str | None = None
    request_id: str = ""

    @property
    def analysis_mode(self) -> AnalysisMode:
        """single_frame for one key frame, multi_frame for several."""
        return "multi_frame" if len(self.frames) > 1 else "single_frame"


@dataclass(frozen=True, slots=True)
class VLMResult:
    """What the VLM (or the fallback) said about one request; request_id echoes the request."""

    description: str
    objects: tuple[str, ...]
    confidence: int
    ai_confidence: int | None
    provider_used: str | None
    analysis_mode: AnalysisMode
    request_id: str = ""
    latency_ms: float = 0.0


def fallback_result(request: VLMRequest, latency_ms: float = 0.0) -> VLMResult:
    """The result used when no backend answered (or the deadline passed)."""
    return VLMResult(
        description=f"Motion detected on {request.camera_name}",
        objects=(),
        confidence=0,
        ai_confidence=None,
        provider_used=None,
        analysis_mode=request.analysis_mode,
        request_id=request.request_id,
        latency_ms=latency_ms,
    )
