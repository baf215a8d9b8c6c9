"""GET /api/v1/health: 200 when every component is up, else 503 with the reasons.

Open without a key, so that load balancers and Home Assistant can probe it; but with
`api.api_key` set, an unauthenticated caller learns only ok/degraded and why (which component
is down and a short reason), never counts, paths or other details: those need the key.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serve_apps.api.deps import Context, Credentials

router = APIRouter(tags=["health"])


@router.get("/api/v1/health")
async def health(context: Context, creds: Credentials) -> JSONResponse:
    """200 when every component is up, else 503 with why; details only with the key."""
    components = await context.store.health()
    why = [
        f"{name}: {info.get('detail') or 'down'}"
        for name, info in components.items()
        if not info.get("ok")
    ]
    body: dict[str, object] = {"status": "ok" if not why else "degraded", "why": why}
    if context.key_ok(creds):
        body["components"] = components
    return JSONResponse(body, status_code=200 if not why else 503)
