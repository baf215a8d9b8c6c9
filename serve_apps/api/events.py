"""Routes of /api/v1/events: the list (with the `q` text search), one event, its thumbnail."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response

from pipelines.config import CAMERA_ID_RE, ZONE_NAME_RE
from pipelines.events import as_utc
from pipelines.storage.search import parse_terms
from serve_apps.api.deps import (
    Context,
    EventId,
    EventIdParam,
    Store,
    require_key,
    thumbnail_access,
    valid_event_id,
)
from serve_apps.api.limits import HEAVY_READS, spend

OBJECT_RE = r"^[A-Za-z0-9 _-]{1,64}$"

router = APIRouter(tags=["events"])


@router.get("/api/v1/events", dependencies=[Depends(require_key)])
async def list_events(
    request: Request,
    context: Context,
    camera_id: Annotated[str | None, Query(pattern=CAMERA_ID_RE, max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    object: Annotated[str | None, Query(pattern=OBJECT_RE, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Words; each must be in the description or an object"),
    ] = None,
    zone: Annotated[
        str | None,
        Query(pattern=ZONE_NAME_RE, max_length=64, description="Events whose motion touched it"),
    ] = None,
) -> dict[str, Any]:
    """Events newest first, filtered, one page at a time (follow next_cursor)."""
    try:
        terms = parse_terms(q)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=f"invalid search: {exc}") from exc
    if terms:
        spend(request, HEAVY_READS, "searches and summaries")
    try:
        events, next_cursor = await context.store.query(
            camera_id=camera_id,
            since=as_utc(since),
            until=as_utc(until),
            object=object,
            limit=limit,
            cursor=cursor,
            q=q,
            zone=zone,
        )
    except (ValueError, OverflowError) as exc:
        raise HTTPException(status_code=400, detail="invalid cursor or filter") from exc
    return {"events": [context.payload(e) for e in events], "next_cursor": next_cursor}


@router.get("/api/v1/events/{event_id}", dependencies=[Depends(require_key)])
async def get_event(context: Context, event_id: EventId) -> dict[str, Any]:
    """One event, with the same fields as its MQTT payload."""
    event = await context.store.get(event_id)
    if event is None:
        raise HTTPException(status_code=404, detail="event not found")
    return context.payload(event)


@router.get(
    "/api/v1/events/{event_id}/thumbnail",
    dependencies=[Depends(thumbnail_access)],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def get_thumbnail(store: Store, event_id: EventIdParam) -> Response:
    """The event's JPEG thumbnail (Bearer key or the signed `token` from thumbnail_url)."""
    # Checked here, not as a dependency: a bad `token` query must stay a 422 before any 404.
    event_id = valid_event_id(event_id)
    path = await store.thumbnail_path(event_id)
    if path is not None and Path(path).is_file():
        return FileResponse(path, media_type="image/jpeg")
    data = await store.thumbnail_bytes(event_id)
    if data is None:
        raise HTTPException(status_code=404, detail="thumbnail not found")
    return Response(content=data, media_type="image/jpeg")
