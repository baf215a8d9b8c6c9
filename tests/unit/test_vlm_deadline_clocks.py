"""VLM deadlines never compare two nodes' wall clocks (#21 item 8): the camera sends its deadline
as a duration, the replica turns it into an instant of its own monotonic clock on arrival, so a
replica whose wall clock is an hour off still answers instead of sending every event to the
fallback text."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Sequence

import pytest

from pipelines.config import BackendConfig
from pipelines.vlm.engine import VLMEngine
from pipelines.vlm.parsing import ParsedOutput
from pipelines.vlm.registry import Backend
from pipelines.vlm.types import VLMRequest, wait_budget_s


class Seer(Backend):
    """Answers at once: what is tested is the engine's deadline, not a model."""

    async def describe(self, requests: Sequence[VLMRequest]) -> list[ParsedOutput | Exception]:
        return [ParsedOutput("a person at the door", ("person",), 80, 80) for _ in requests]


def sent(deadline_s: float = 30.0) -> VLMRequest:
    """A request as a camera sends it, through pickling (as Ray carries it to the replica)."""
    request = VLMRequest.expiring(
        deadline_s, camera_id="door", camera_name="Door", frames=(b"jpeg",), request_id="r1"
    )
    copied: VLMRequest = pickle.loads(pickle.dumps(request))
    return copied


@pytest.mark.parametrize("skew_s", [-3600.0, 3600.0])
def test_a_replica_on_another_clock_still_answers(
    skew_s: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another node: its wall clock an hour off, and its monotonic clock counting from its own
    boot. The request's expiry from the camera's clock means nothing there; re-stamped on
    arrival (as serve_apps.vlm.VLMDeployment.__call__ does) it is the camera's interval."""
    request = sent()
    wall, mono = time.time, time.monotonic
    monkeypatch.setattr(time, "time", lambda: wall() + skew_s)
    monkeypatch.setattr(time, "monotonic", lambda: mono() + 36_000.0)  # booted 10 h earlier
    engine = VLMEngine([Seer(BackendConfig(backend="transformers", model="seer"))])
    stale = asyncio.run(engine.describe(request))  # the camera's expiry, read on this clock
    assert stale.provider_used is None  # has long passed: this is what the re-stamp avoids
    arrived = request.arrived()
    result = asyncio.run(engine.describe(arrived))
    assert result.provider_used is not None and result.description == "a person at the door"


def test_the_deadline_is_a_duration_restamped_on_arrival() -> None:
    request = sent(deadline_s=12.0)
    assert request.deadline_s == 12.0
    # leaving the camera after 5 s of dedupe and budget waits: 7 s are left to give on
    assert request.sending(now=request.expires - 7.0).deadline_s == 7.0
    later = request.arrived(now=1_000.0)
    assert later.expires == 1_012.0 and later.left_s(now=1_004.0) == 8.0
    # the camera waits its own interval plus the grace for the answer to travel back
    assert 12.0 < wait_budget_s(request, default_s=99.0) <= 12.5
    no_deadline = VLMRequest("door", "Door", (b"jpeg",))
    assert no_deadline.arrived() is no_deadline and wait_budget_s(no_deadline, 7.0) == 7.0


def test_an_expired_request_gets_the_fallback_without_a_call() -> None:
    engine = VLMEngine([Seer(BackendConfig(backend="transformers", model="seer"))])
    result = asyncio.run(engine.describe(sent(deadline_s=-1.0).arrived()))
    assert result.provider_used is None  # the fallback text
