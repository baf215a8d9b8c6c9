"""The camera's noise and cost controls (pipelines.camera.noise) with a fake budget port:
the camera's own budget, the global one, and a budget that fails or does not answer."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from pipelines.camera import NullMetrics
from pipelines.camera import noise as noise_module
from pipelines.camera.noise import NoiseControl
from pipelines.config import Config
from pipelines.events import utcnow
from pipelines.ingest.segment import ring_segment
from pipelines.vlm.types import VLMRequest
from tests.support.camera_ports import FakeBudget, FakeVLM


def controls(budget: FakeBudget | None, **camera: Any) -> NoiseControl:
    config = Config.model_validate(
        {
            "cameras": [{"id": "yard", "source": "rtsp://cam/yard", **camera}],
            "vlm": {"dedupe": {"enabled": False}},
            "storage": {"path": "unused"},
        }
    )
    return NoiseControl(config.vlm, config.camera("yard"), budget=budget, metrics=NullMetrics())


def describe_n(noise: NoiseControl, n: int, *, ring: bool = False) -> list[str | None]:
    """Run n events through the controls; each one's provider (None: the fallback text)."""
    vlm = FakeVLM()

    async def run() -> list[str | None]:
        providers = []
        for _ in range(n):
            segment = ring_segment(np.zeros((90, 160, 3), np.uint8), utcnow(), 96, 1280)
            request = VLMRequest(camera_id="yard", camera_name="Yard", frames=(b"jpeg",))
            result = await noise.describe(segment, request, ring, vlm)
            noise.release(segment)
            providers.append(result.provider_used)
        return providers

    return asyncio.run(run())


def test_the_global_budget_throttles_after_its_grants() -> None:
    budget = FakeBudget(grants=2)
    noise = controls(budget)
    assert describe_n(noise, 4) == ["fake:vlm", "fake:vlm", None, None]
    assert budget.asked == ["yard"] * 4
    status = noise.status()
    assert (status["vlm_calls"], status["throttled"], status["throttled_global"]) == (2, 2, 2)


def test_a_chains_budget_refusal_is_counted_as_the_chains() -> None:
    budget = FakeBudget(grants=1, refuser="cloud")
    noise = controls(budget)
    assert describe_n(noise, 3) == ["fake:vlm", None, None]
    status = noise.status()
    assert (status["throttled"], status["throttled_chain"], status["throttled_global"]) == (2, 2, 0)


def test_the_cameras_own_budget_is_spent_before_the_global_one_is_asked() -> None:
    budget = FakeBudget(grants=10)
    noise = controls(budget, vlm_max_per_hour=1)
    assert describe_n(noise, 3) == ["fake:vlm", None, None]
    assert budget.asked == ["yard"]  # the camera's own bucket refused the rest first
    assert noise.status()["throttled_camera"] == 2


def test_rings_spend_the_budgets_too() -> None:
    budget = FakeBudget(grants=1)
    noise = controls(budget, doorbell=True)
    # a flood of rings cannot buy VLM calls past the budget: the second gets the fallback text
    assert describe_n(noise, 2, ring=True) == ["fake:vlm", None]
    assert budget.asked == ["yard", "yard"] and noise.status()["throttled_global"] == 1


@pytest.mark.parametrize("how", ["fail", "hang"])
def test_a_budget_that_fails_or_hangs_lets_the_call_through_and_is_counted(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(noise_module, "BUDGET_CALL_TIMEOUT_S", 0.05)  # a knob, not a sleep
    noise = controls(FakeBudget(fail=how == "fail", hang=how == "hang"))
    assert describe_n(noise, 2) == ["fake:vlm", "fake:vlm"]
    assert noise.status()["budget_errors"] == 2


def test_an_event_over_budget_is_stored_as_throttled_and_the_summary_counts_it(
    tmp_path: Any,
) -> None:
    from datetime import timedelta

    from pipelines.events import Event
    from pipelines.storage import EventStore
    from pipelines.storage.summary import summarize

    noise = controls(FakeBudget(grants=1))
    vlm = FakeVLM()

    async def fields() -> list[dict[str, Any]]:
        out = []
        for _ in range(3):
            segment = ring_segment(np.zeros((90, 160, 3), np.uint8), utcnow(), 96, 1280)
            request = VLMRequest(camera_id="yard", camera_name="Yard", frames=(b"jpeg",))
            result = await noise.describe(segment, request, False, vlm)
            out.append(noise.event_fields(segment, result, False) | {"result": result})
            noise.release(segment)
        return out

    got = asyncio.run(fields())
    assert [f["throttled"] for f in got] == [False, True, True]
    events = [
        Event(
            camera_id="yard",
            camera_name="Yard",
            description=f["result"].description,
            objects_detected=tuple(f["result"].objects),
            confidence=50,
            source_type="rtsp",
            provider_used=f["result"].provider_used,
            throttled=f["throttled"],
            timestamp=utcnow() - timedelta(seconds=3 - i),
        )
        for i, f in enumerate(got)
    ]
    store = EventStore(tmp_path / "data")
    try:
        store.append(events)
        assert [e.throttled for e in store.query(camera_id="yard")[0]] == [True, True, False]
        now = utcnow()
        assert summarize(store, now - timedelta(hours=1), now + timedelta(minutes=1)).throttled == 2
    finally:
        store.close()
