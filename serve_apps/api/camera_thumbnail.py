"""GET /api/v1/cameras/{camera_id}/thumbnail: a camera's event thumbnails behind a token that
does not expire (the retained `last_event` URL, so Home Assistant's image never breaks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, Response

from serve_apps.api.deps import (
    CameraId,
    Context,
    camera_thumbnail_access,
    valid_event_id,
)

router = APIRouter(tags=["cameras"])


@router.get(
    "/api/v1/cameras/{camera_id}/thumbnail",
    dependencies=[Depends(camera_thumbnail_access)],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def camera_thumbnail(
    context: Context,
    camera_id: CameraId,
    event_id: Annotated[
        str | None, Query(max_length=36, description="Event uuid; absent: the newest event")
    ] = None,
) -> Response:
    """The JPEG of `event_id` (an event of this camera), else of the camera's newest event."""
    if camera_id not in context.cameras:
        raise HTTPException(status_code=404, detail="camera not found")
    store = context.store
    if event_id is not None:
        event = await store.get(valid_event_id(event_id))
        if event is None or event.camera_id != camera_id:
            raise HTTPException(status_code=404, detail="event not found")
    else:
        events, _ = await store.query(camera_id=camera_id, limit=1)
        if not events:
            raise HTTPException(status_code=404, detail="no event yet")
        event = events[0]
    path = await store.thumbnail_path(event.event_id)
    if path is not None and Path(path).is_file():
        return FileResponse(path, media_type="image/jpeg")
    data = await store.thumbnail_bytes(event.event_id)
    if data is None:
        raise HTTPException(status_code=404, detail="thumbnail not found")
    return Response(content=data, media_type="image/jpeg")
