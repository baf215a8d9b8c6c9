"""VLM budgets: continuous token buckets and the global budget's fair share across cameras."""

from __future__ import annotations

import pytest

from pipelines.vlm.budget import CameraBudget, FairShare, TokenBucket

HOUR = 3600.0


def test_bucket_allows_a_burst_then_refills_continuously() -> None:
    bucket = TokenBucket(2, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    # 2 an hour: one token every 30 minutes, accruing continuously (not once an hour)
    assert not bucket.take(HOUR / 2 - 1)
    assert bucket.take(HOUR / 2 + 1)
    assert not bucket.take(HOUR / 2 + 2)
    # never more than the capacity, however long it was idle
    assert [bucket.take(100 * HOUR) for _ in range(3)] == [True, True, False]
    assert not TokenBucket(0, now=0.0).take(10 * HOUR)  # 0 an hour: never
    with pytest.raises(ValueError):
        TokenBucket(-1, now=0.0)


def test_camera_budget_spends_only_when_told() -> None:
    budget = CameraBudget(2, now=0.0)
    assert budget.available(0.0) and budget.available(0.0)  # looking costs nothing
    budget.spend(0.0)
    budget.spend(0.0)
    assert not budget.available(1.0)
    unlimited = CameraBudget(None, now=0.0)
    for _ in range(1000):
        unlimited.spend(0.0)
    assert unlimited.available(0.0)


def test_noisy_camera_cannot_take_the_quiet_ones_share() -> None:
    fair = FairShare(6, ["noisy", "quiet_a", "quiet_b"], now=0.0)
    noisy = [fair.take("noisy", t / 10) for t in range(100)]  # 100 asks in 10 s
    assert sum(noisy) == 2  # its share of 6 an hour among 3 cameras
    # the quiet cameras still find their whole share, later
    assert [fair.take("quiet_a", 60.0) for _ in range(3)] == [True, True, False]
    assert fair.take("quiet_b", 120.0)
    stats = fair.stats()
    assert stats["granted"] == {"noisy": 2, "quiet_a": 2, "quiet_b": 1}
    assert stats["refused"]["noisy"] == 98


def test_unused_shares_flow_to_the_busy_camera_and_the_total_holds() -> None:
    fair = FairShare(6, ["noisy", "quiet"], now=0.0)
    granted = 0
    t = 0.0
    while t < 10 * HOUR:  # noisy asks every minute for 10 hours; quiet never asks
        granted += fair.take("noisy", t)
        t += 60.0
    # its own 3 an hour, plus quiet's 3 an hour once quiet's bucket is full and overflows
    # into the pool: the busy camera uses what the quiet one leaves, never more than the total
    assert 55 <= granted <= 6 * 10 + 6, granted
    # and the quiet camera still has its own full share waiting for it
    assert fair.shares["quiet"].tokens == pytest.approx(3.0)
    assert [fair.take("quiet", t) for _ in range(3)] == [True, True, True]


def test_total_never_exceeds_the_global_budget() -> None:
    fair = FairShare(12, ["a", "b", "c", "d"], now=0.0)
    granted = 0
    t = 0.0
    while t < 5 * HOUR:
        for camera in ("a", "b", "c", "d", "stranger"):
            granted += fair.take(camera, t)
        t += 7.0
    # initial full shares (12) plus 12 an hour
    assert granted <= 12 + 12 * 5 + 1, granted
    assert granted >= 12 * 5 - 4, granted
