"""Messages exchanged with the VLM: one request per motion event, one result back."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Literal

AnalysisMode = Literal["single_frame", "multi_frame"]


@dataclass(frozen=True, slots=True)
class VLMRequest:
    """Key frames (JPEG bytes, already sized) of one motion event on one camera."""

    camera_id: str
    camera_name: str
    frames: tuple[bytes, ...]
    prompt: str | None = None
    request_id: str = ""
    # The caller's deadline as a duration, and as a time.monotonic() instant of the process
    # holding the request. Wall clocks of different nodes disagree (skew, NTP steps), so only
    # the duration crosses nodes: the VLM replica re-stamps `expires` on arrival (`arrived`),
    # and the camera and the engine count the same interval, each on its own monotonic clock.
    deadline_s: float | None = None
    expires: float | None = None
    chain: str | None = None  # the camera's backend chain (`cameras[].vlm`); None: the default

    @classmethod
    def expiring(cls, deadline_s: float, **fields: Any) -> VLMRequest:
        """A request whose caller waits deadline_s from now."""
        return cls(**fields, deadline_s=deadline_s, expires=time.monotonic() + deadline_s)

    def sending(self, now: float | None = None) -> VLMRequest:
        """This request as it leaves for another process: its duration is what is left now
        (time spent on dedupe, budgets and the handle is not given to the replica again)."""
        left = self.left_s(now)
        if left is None:
            return self
        return dataclasses.replace(self, deadline_s=max(0.0, left))

    def arrived(self, now: float | None = None) -> VLMRequest:
        """This request as received in another process: `expires` from its own clock (the
        transit time, milliseconds, is given to the receiver)."""
        if self.deadline_s is None:
            return self
        start = time.monotonic() if now is None else now
        return dataclasses.replace(self, expires=start + self.deadline_s)

    def left_s(self, now: float | None = None) -> float | None:
        """Seconds until `expires` on this process's monotonic clock (None: no deadline)."""
        if self.expires is None:
            return None
        return self.expires - (time.monotonic() if now is None else now)

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


# The engine answers (with the fallback text at worst) by the time the request expires; the
# caller waits this much longer for that answer to travel back before giving up itself.
REPLY_GRACE_S = 0.5


def wait_budget_s(request: VLMRequest, default_s: float) -> float:
    """How long a caller waits for `request`: until it expires plus REPLY_GRACE_S
    (`default_s` from now when it has no deadline)."""
    left = request.left_s()
    if left is None:
        return default_s
    return max(0.0, left) + REPLY_GRACE_S


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
