"""Routes of /api/v1/cameras: the list with live status, and the doorbell ring."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from serve_apps.api.deps import CameraId, Context, Store, require_key

router = APIRouter(tags=["cameras"], dependencies=[Depends(require_key)])


@router.get("/api/v1/cameras")
async def list_cameras(store: Store) -> dict[str, Any]:
    """Cameras with status, fps and last event."""
    return {"cameras": await store.cameras()}


@router.post("/api/v1/cameras/{camera_id}/ring")
async def ring(context: Context, camera_id: CameraId) -> JSONResponse:
    """Doorbell ring: analyse the newest frame now; the event has is_doorbell_ring true."""
    camera = context.cameras.get(camera_id)
    if camera is None:
        raise HTTPException(status_code=404, detail="camera not found")
    if not camera.doorbell:
        raise HTTPException(status_code=409, detail="camera is not a doorbell")
    result = await context.store.ring(camera.id)
    if not result.get("accepted", False):
        raise HTTPException(status_code=409, detail=str(result.get("reason", "not accepted")))
    return JSONResponse({"camera_id": camera.id, **result}, status_code=202)
