"""The `vlm-budget` actor: the one place the global `vlm.max_per_hour` is counted, and each
backend chain's `vlm.backends.NAME.max_per_hour` (shared by the cameras on that chain).

A thin wrapper over `pipelines.vlm.budget.Budgets`. Camera actors create it on first use
(`get_if_exists`), so it lives as long as the cameras that use it (it is not detached). A call
carries the budget's spec (limit and cameras); an actor left over from a run with another spec
starts over with the new one rather than enforce stale limits.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from pipelines.config import Config
from pipelines.naming import BUDGET_ACTOR
from pipelines.vlm.budget import Budget, Budgets, budget_spec

logger = logging.getLogger(__name__)

Spec = tuple[Budget, ...]
__all__ = ["BudgetActor", "Spec", "budget_spec", "get_budget"]


def _spec(raw: Any) -> Spec:
    """A spec as it arrives over Ray (lists for tuples)."""
    return tuple((str(n), int(p), tuple(ids)) for n, p, ids in raw)


@ray.remote(num_cpus=0)
class BudgetActor:
    """Grants VLM calls from the global budget, fairly across cameras."""

    def __init__(self, spec: Spec) -> None:
        self._budgets = Budgets(_spec(spec), time.monotonic())

    def take(self, camera_id: str, spec: Spec) -> str | None:
        """One VLM call for camera_id from its chain's budget and the global one: None when
        granted, else the budget that refused (`Budgets.refusal`)."""
        spec = _spec(spec)
        if spec != self._budgets.spec:
            logger.info("vlm-budget: new budgets %s", [(n or "global", p) for n, p, _ in spec])
            self._budgets = Budgets(spec, time.monotonic())
        return self._budgets.refusal(camera_id, time.monotonic())

    def stats(self) -> dict[str, Any]:
        """Tokens left and grants/refusals per camera (see `Budgets.stats`)."""
        return self._budgets.stats()


def get_budget(config: Config, spec: Spec) -> Any:
    """The `vlm-budget` actor, created if it does not exist (safe when cameras race)."""
    try:
        return BudgetActor.options(  # type: ignore[attr-defined]
            name=BUDGET_ACTOR,
            namespace=config.ray.namespace,
            get_if_exists=True,
        ).remote(spec)
    except ValueError:  # lost a creation race on a Ray without atomic get_if_exists
        return ray.get_actor(BUDGET_ACTOR, namespace=config.ray.namespace)
