"""VLM call budgets: token buckets per camera and a global budget shared fairly across cameras.

`TokenBucket`: `per_hour` tokens an hour, refilled continuously (not once an hour), holding at
most `capacity` (default one hour's worth, so a burst of `per_hour` calls is allowed and then
one more every `3600 / per_hour` seconds). `cameras[].vlm_max_per_hour` is one such bucket in
that camera's actor.

`FairShare`: the global `vlm.max_per_hour`, split so that one camera with constant motion cannot
take the others' share: every camera has its own share bucket (`per_hour / n` an hour, holding
as much) that only it may spend, and what a full share bucket would overflow (the budget a
quiet camera leaves unused) goes to a common pool (holding at most `per_hour`) that any camera
may spend once its own share is gone. A quiet camera therefore always finds its share, while a
busy one gets its share plus whatever the quiet ones leave; together they never exceed
`per_hour` an hour (plus the initial full buckets). It runs in one place, the `vlm-budget` actor.

`Budgets`: the global FairShare and one per backend chain with a budget
(`vlm.backends.NAME.max_per_hour`, shared by the cameras on that chain); a call must fit all the
budgets its camera is under.

Times are `time.monotonic()` seconds, passed in, so the logic is testable without a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.config import Config

__all__ = ["GLOBAL", "Budgets", "CameraBudget", "FairShare", "TokenBucket", "budget_spec"]

HOUR_S = 3600.0
GLOBAL = "global"  # what `Budgets.refusal` names the global budget (a chain has its own name)


class TokenBucket:
    """`per_hour` tokens an hour, refilled continuously, at most `capacity` held; starts full."""

    def __init__(self, per_hour: float, now: float, capacity: float | None = None) -> None:
        if per_hour < 0:
            raise ValueError("per_hour must be >= 0")
        self.rate_s = float(per_hour) / HOUR_S
        self.capacity = float(per_hour if capacity is None else capacity)
        self.tokens = self.capacity
        self._at = now

    def refill(self, now: float) -> float:
        """Add what accrued since the last call; returns what overflowed the capacity."""
        elapsed = max(0.0, now - self._at)
        self._at = max(self._at, now)
        self.tokens += elapsed * self.rate_s
        spill = max(0.0, self.tokens - self.capacity)
        self.tokens -= spill
        return spill

    def add(self, tokens: float) -> float:
        """Put tokens in (e.g. another bucket's overflow); returns what did not fit."""
        self.tokens += tokens
        spill = max(0.0, self.tokens - self.capacity)
        self.tokens -= spill
        return spill

    def available(self, now: float) -> bool:
        """Whether a whole token is there (after refilling)."""
        self.refill(now)
        return self.tokens >= 1.0 - 1e-9

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        if not self.available(now):
            return False
        self.tokens -= 1.0
        return True


class CameraBudget:
    """One camera's own limit (`cameras[].vlm_max_per_hour`); unlimited when None."""

    def __init__(self, per_hour: int | None, now: float) -> None:
        self.bucket = TokenBucket(per_hour, now) if per_hour is not None else None

    def available(self, now: float) -> bool:
        """Whether a call fits this camera's budget now (spends nothing)."""
        return self.bucket is None or self.bucket.available(now)

    def spend(self, now: float) -> None:
        """Record one call against the budget."""
        if self.bucket is not None:
            self.bucket.take(now)


class FairShare:
    """A global calls-per-hour budget shared fairly by the given cameras (see module doc)."""

    def __init__(self, per_hour: int, cameras: Iterable[str], now: float) -> None:
        self.per_hour = int(per_hour)
        ids = list(dict.fromkeys(cameras))
        share = self.per_hour / max(1, len(ids))
        self.shares = {cid: TokenBucket(share, now) for cid in ids}
        self.pool = TokenBucket(0, now, capacity=self.per_hour)
        self.pool.tokens = 0.0
        self.granted: dict[str, int] = dict.fromkeys(ids, 0)
        self.refused: dict[str, int] = dict.fromkeys(ids, 0)

    def _refill(self, now: float) -> None:
        for bucket in self.shares.values():
            self.pool.add(bucket.refill(now))

    def available(self, camera_id: str, now: float) -> bool:
        """Whether `take` would grant this camera a call now (nothing is spent)."""
        self._refill(now)
        own = self.shares.get(camera_id)
        return (own is not None and own.available(now)) or self.pool.available(now)

    def take(self, camera_id: str, now: float) -> bool:
        """One call for this camera: from its share, else from the pool; False when neither."""
        self._refill(now)
        own = self.shares.get(camera_id)
        granted = (own is not None and own.take(now)) or self.pool.take(now)
        counts = self.granted if granted else self.refused
        counts[camera_id] = counts.get(camera_id, 0) + 1
        return granted

    def stats(self) -> dict[str, Any]:
        """Tokens left per share and in the pool, and grants/refusals per camera."""
        return {
            "per_hour": self.per_hour,
            "pool": round(self.pool.tokens, 3),
            "shares": {cid: round(b.tokens, 3) for cid, b in self.shares.items()},
            "granted": dict(self.granted),
            "refused": dict(self.refused),
        }


Budget = tuple[str, int, tuple[str, ...]]  # (name, max_per_hour, camera ids); "" is the global


def budget_spec(config: Config) -> tuple[Budget, ...] | None:
    """The budgets a config sets, over their enabled cameras: each chain's
    (`vlm.backends.NAME.max_per_hour`, its cameras), then the global one (`vlm.max_per_hour`,
    every camera); None when it sets none."""
    cameras = [c for c in config.cameras if c.enabled]
    budgets: list[Budget] = []
    for name, chain in sorted(config.vlm.backends.items()):
        if chain.max_per_hour is not None:
            budgets.append(
                (name, chain.max_per_hour, tuple(c.id for c in cameras if c.vlm == name))
            )
    if config.vlm.max_per_hour is not None:
        budgets.append(("", config.vlm.max_per_hour, tuple(c.id for c in cameras)))
    return tuple(budgets) or None


class Budgets:
    """Every budget of a spec, each a FairShare over its cameras. A call is granted only when
    every budget its camera is under can grant it, and then it is taken from all of them: a
    refusal by one spends nothing of the others."""

    def __init__(self, spec: tuple[Budget, ...], now: float) -> None:
        self.spec = spec
        self.shares = {name: FairShare(per_hour, ids, now) for name, per_hour, ids in spec}

    def covers(self, camera_id: str) -> bool:
        """Whether any budget applies to this camera."""
        return any(camera_id in ids for _name, _per_hour, ids in self.spec)

    def take(self, camera_id: str, now: float) -> bool:
        """One call for this camera; False (nothing spent) when a budget it is under refuses."""
        return self.refusal(camera_id, now) is None

    def refusal(self, camera_id: str, now: float) -> str | None:
        """Take one call for this camera from every budget it is under: None when granted,
        else which budget refused (`GLOBAL`, or the chain's name) and nothing is spent."""
        mine = [(name, self.shares[name]) for name, _per_hour, ids in self.spec if camera_id in ids]
        for name, share in mine:
            if not share.available(camera_id, now):
                share.take(camera_id, now)  # counted as refused there; it has nothing to give
                return name or GLOBAL
        for _name, share in mine:
            share.take(camera_id, now)
        return None

    def stats(self) -> dict[str, Any]:
        """The global budget's stats (FairShare.stats) with each chain's under `chains`."""
        out: dict[str, Any] = dict(self.shares[""].stats()) if "" in self.shares else {}
        chains = {name: fair.stats() for name, fair in self.shares.items() if name}
        return out | ({"chains": chains} if chains else {})
