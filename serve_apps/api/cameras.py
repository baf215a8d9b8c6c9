"""Routes of /api/v1/cameras: the list with live status, and the doorbell ring.

Rings are rate-limited per camera (`api.ring_rate_per_min`, a token bucket in this API
replica): beyond the rate the route answers 429 with `Retry-After` and never reaches the camera
actor, so a flood of presses costs no Ray call and no frame.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from pipelines.ratelimit import RateLimiter
from serve_apps.api.deps import CameraId, Context, Store, require_key

router = APIRouter(tags=["cameras"], dependencies=[Depends(require_key)])


@router.get("/api/v1/cameras")
async def list_cameras(store: Store) -> dict[str, Any]:
    """Cameras with status, fps and last event."""
    return {"cameras": await store.cameras()}


def ring_limiter(request: Request) -> RateLimiter:
    """This app's ring rate limiter (created on first use from `api.ring_rate_per_min`)."""
    limiter: RateLimiter | None = getattr(request.app.state, "ring_limiter", None)
    if limiter is None:
        limiter = RateLimiter(request.app.state.ring_rate_per_min)
        request.app.state.ring_limiter = limiter
    return limiter


@router.post("/api/v1/cameras/{camera_id}/ring")
async def ring(context: Context, camera_id: CameraId, request: Request) -> JSONResponse:
    """Doorbell ring: analyse the newest frame now; the event has is_doorbell_ring true."""
    camera = context.cameras.get(camera_id)
    if camera is None:
        raise HTTPException(status_code=404, detail="camera not found")
    if not camera.doorbell:
        raise HTTPException(status_code=409, detail="camera is not a doorbell")
    limiter = ring_limiter(request)
    if not limiter.allow(camera.id):
        retry = max(1, math.ceil(limiter.retry_after_s(camera.id)))
        raise HTTPException(
            status_code=429,
            detail=f"too many rings for this camera; try again in {retry} s",
            headers={"Retry-After": str(retry)},
        )
    result = await context.store.ring(camera.id)
    if not result.get("accepted", False):
        raise HTTPException(status_code=409, detail=str(result.get("reason", "not accepted")))
    return JSONResponse({"camera_id": camera.id, **result}, status_code=202)
