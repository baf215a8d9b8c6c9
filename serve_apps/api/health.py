"""GET /api/v1/health: open without a key, 503 with the reasons when a component is down."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serve_apps.api.deps import Store

router = APIRouter(tags=["health"])


@router.get("/api/v1/health")
async def health(store: Store) -> JSONResponse:
    """200 when every component is up, else 503 with the reasons."""
    components = await store.health()
    why = [
        f"{name}: {info.get('detail') or 'down'}"
        for name, info in components.items()
        if not info.get("ok")
    ]
    status = "ok" if not why else "degraded"
    return JSONResponse(
        {"status": status, "components": components, "why": why},
        status_code=200 if not why else 503,
    )
