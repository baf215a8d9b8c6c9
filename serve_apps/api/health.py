"""GET /api/v1/health: 200 when every component is up, else 503 with the reasons.

Open without a key, so that load balancers and Home Assistant can probe it; but with
`api.api_key` set, an unauthenticated caller learns only ok/degraded and why (which component
is down and a short reason), never counts, paths or other details: those need the key.

A probe never waits long on a busy cluster: it waits up to HEALTH_WAIT_S for a fresh check, then
answers with the last check's result when that is recent (HEALTH_STALE_S); probes arriving
together share one check.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serve_apps.api.client import StoreClient
from serve_apps.api.deps import Context, Credentials

router = APIRouter(tags=["health"])


HEALTH_WAIT_S = 0.5  # a probe waits this long for a fresh check ...
HEALTH_STALE_S = 10.0  # ... then takes the last one, if it is no older than this


@dataclass
class _Checks:
    """One component check at a time (probes share it), and the last one's answer."""

    running: asyncio.Future[dict[str, dict[str, Any]]] | None = None
    last: dict[str, dict[str, Any]] | None = None
    at: float = 0.0


async def components_now(store: StoreClient, checks: _Checks) -> dict[str, dict[str, Any]]:
    """The components' health: a fresh check, or, when that takes longer than HEALTH_WAIT_S
    (a busy cluster: a flood of rings, say), the last answer while it is recent. Concurrent
    probes share the check in flight, so a storm of probes costs one check at a time."""
    if checks.running is None or checks.running.done():

        async def check() -> dict[str, dict[str, Any]]:
            answer = await store.health()
            checks.last, checks.at = answer, time.monotonic()
            return answer

        checks.running = asyncio.ensure_future(check())
    try:
        return await asyncio.wait_for(asyncio.shield(checks.running), HEALTH_WAIT_S)
    except TimeoutError:
        if checks.last is not None and time.monotonic() - checks.at <= HEALTH_STALE_S:
            return checks.last
    return await asyncio.shield(checks.running)


@router.get("/api/v1/health")
async def health(request: Request, context: Context, creds: Credentials) -> JSONResponse:
    """200 when every component is up, else 503 with why; details only with the key."""
    checks: _Checks | None = getattr(request.app.state, "health_checks", None)
    if checks is None:
        checks = request.app.state.health_checks = _Checks()
    components = await components_now(context.store, checks)
    why = [  # for everyone: a component's `public` text where its detail names addresses
        f"{name}: {info.get('public') or info.get('detail') or 'down'}"
        for name, info in components.items()
        if not info.get("ok")
    ]
    body: dict[str, object] = {"status": "ok" if not why else "degraded", "why": why}
    if context.key_ok(creds):
        body["components"] = components
    return JSONResponse(body, status_code=200 if not why else 503)
