"""Messages exchanged with the VLM: one request per motion event, one result back."""

from __future__ import annotations

import time
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
    # Wall-clock time (time.time()) after which the caller uses the fallback text: the camera
    # sets it once, and the engine stops waiting at the same moment (one interval, not two).
    deadline_at: float | None = None

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
    # where `confidence` came from: tokens | logprobs | stated | default, or none (no analysis)
    confidence_source: str | None = None


# The engine answers (with the fallback text at worst) by the request's `deadline_at`; the
# caller waits this much longer for that answer to travel back before giving up itself.
REPLY_GRACE_S = 0.5


def wait_budget_s(request: VLMRequest, default_s: float) -> float:
    """How long a caller waits for `request`: until its `deadline_at` plus REPLY_GRACE_S
    (`default_s` from now when it has none)."""
    if request.deadline_at is None:
        return default_s
    return max(0.0, request.deadline_at - time.time()) + REPLY_GRACE_S


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
        confidence_source="none",
    )
