"""The `vlm-budget` actor: the one place the global `vlm.max_per_hour` is counted.

A thin wrapper over `pipelines.vlm.budget.FairShare`. Camera actors create it on first use
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
from pipelines.vlm.budget import FairShare

logger = logging.getLogger(__name__)

Spec = tuple[int, tuple[str, ...]]


def budget_spec(config: Config) -> Spec | None:
    """(max_per_hour, enabled camera ids), or None when there is no global budget."""
    per_hour = config.vlm.max_per_hour
    if per_hour is None:
        return None
    return per_hour, tuple(c.id for c in config.cameras if c.enabled)


@ray.remote(num_cpus=0)
class BudgetActor:
    """Grants VLM calls from the global budget, fairly across cameras."""

    def __init__(self, spec: Spec) -> None:
        self._spec = spec
        self._fair = FairShare(spec[0], spec[1], time.monotonic())

    def take(self, camera_id: str, spec: Spec) -> bool:
        """One VLM call for camera_id from the global budget; False when over it."""
        spec = (int(spec[0]), tuple(spec[1]))
        if spec != self._spec:
            logger.info("vlm-budget: new budget %s/h for %d cameras", spec[0], len(spec[1]))
            self._spec = spec
            self._fair = FairShare(spec[0], spec[1], time.monotonic())
        return self._fair.take(camera_id, time.monotonic())

    def stats(self) -> dict[str, Any]:
        """Tokens left and grants/refusals per camera."""
        return self._fair.stats()


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
