"""Rate limits on the API's expensive reads: summaries and text searches share one budget
(`api.heavy_reads_per_min`), narratives have their own (`api.narratives_per_min`). Both count
every caller together: the point is to keep the store's read threads and the remote model from
being monopolised, not fairness between callers. Over a budget: 429 with `Retry-After`.
"""

from __future__ import annotations

import math

from fastapi import HTTPException, Request

from pipelines.ratelimit import RateLimiter

HEAVY_READS = "heavy_reads"
NARRATIVES = "narratives"


def spend(request: Request, budget: str, what: str) -> None:
    """Take one token of `budget` (HEAVY_READS or NARRATIVES), or raise 429."""
    state = request.app.state
    limiters: dict[str, RateLimiter] = getattr(state, "read_limiters", None) or {}
    limiter = limiters.get(budget)
    if limiter is None:
        config = state.config.api
        per_minute = (
            config.heavy_reads_per_min if budget == HEAVY_READS else config.narratives_per_min
        )
        limiter = limiters[budget] = RateLimiter(per_minute, max_keys=2)
        state.read_limiters = limiters
    if not limiter.allow(budget):
        retry = max(1, math.ceil(limiter.retry_after_s(budget)))
        raise HTTPException(
            status_code=429,
            detail=f"too many {what}; try again in {retry} s",
            headers={"Retry-After": str(retry)},
        )
