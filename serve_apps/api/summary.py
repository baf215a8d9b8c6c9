"""GET /api/v1/summary: what happened in a period (counts, busiest hour, representative events).

The facts come from the store (pipelines.storage.summary). `narrative=true` also asks an
OpenAI-compatible backend of `vlm` (primary or fallback) for a short paragraph over them, within
`api.narrative_timeout_s`; without such a backend, or when it fails, the narrative is the plain
factual text and says why.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from pipelines.config import CAMERA_ID_RE, Config
from pipelines.events import as_utc, format_timestamp, utcnow
from pipelines.storage.summary import MAX_EXAMPLES, Summary, plain_text
from pipelines.vlm.narrative import narrate
from serve_apps.api.deps import ApiContext, Context, require_key
from serve_apps.api.limits import HEAVY_READS, NARRATIVES, spend

router = APIRouter(tags=["summary"], dependencies=[Depends(require_key)])

_DURATION_RE = re.compile(r"^(\d{1,6}(?:\.\d{1,3})?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_PERIOD = timedelta(days=366)


def parse_since(text: str, until: datetime) -> datetime:
    """`24h`, `90m`, `7d`, `3600s` before until, or an ISO 8601 time (ValueError otherwise)."""
    text = text.strip()
    match = _DURATION_RE.fullmatch(text.lower())
    if match:
        span = timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        if span > MAX_PERIOD:
            raise ValueError("since: at most 366 days")
        return until - span
    try:
        return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise ValueError("since: a duration such as 24h, 90m, 7d, or an ISO 8601 time") from None


@router.get("/api/v1/summary")
async def summary(
    request: Request,
    context: Context,
    since: Annotated[
        str, Query(max_length=40, description="Duration before until (24h, 90m, 7d) or ISO 8601")
    ] = "24h",
    until: Annotated[datetime | None, Query(description="ISO 8601; default now")] = None,
    camera_id: Annotated[str | None, Query(pattern=CAMERA_ID_RE, max_length=64)] = None,
    examples: Annotated[int, Query(ge=0, le=MAX_EXAMPLES)] = 5,
    narrative: Annotated[bool, Query(description="Ask an OpenAI-compatible backend")] = False,
) -> dict[str, Any]:
    """Counts per camera, object and hour, busiest hour, first/last and representative events."""
    end = as_utc(until) if until is not None else utcnow()
    try:
        start = parse_since(since, end)
    except OverflowError:  # e.g. 24h before 0001-01-01
        raise HTTPException(status_code=400, detail="date out of range") from None
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    if start > end:
        raise HTTPException(status_code=400, detail="since is after until")
    if narrative:  # first: a refused narrative spends no summary token
        spend(request, NARRATIVES, "narratives")
    spend(request, HEAVY_READS, "searches and summaries")
    try:
        facts = await context.store.summary(
            since=start, until=end, camera_id=camera_id, examples=examples
        )
    except OverflowError as exc:
        raise HTTPException(status_code=400, detail="date out of range") from exc
    body = summary_json(context, facts)
    if narrative:
        config: Config = request.app.state.config
        told = await narrate(
            facts.facts(), config.vlm.default_chain(), config.api.narrative_timeout_s
        )
        if told.text is not None:
            body["narrative"] = {"text": told.text, "source": told.source, "generated": True}
        else:
            body["narrative"] = {
                "text": body["text"],
                "source": "facts",
                "generated": False,
                "fallback_reason": told.reason,
            }
    return body


def summary_json(context: ApiContext, facts: Summary) -> dict[str, Any]:
    """The route's JSON for a Summary (events as in the list, thumbnails signed with a key)."""
    busiest = facts.busiest_hour

    def event(ev: Any) -> dict[str, Any] | None:
        return None if ev is None else context.payload(ev)

    return {
        "since": format_timestamp(facts.since),
        "until": format_timestamp(facts.until),
        "camera_id": facts.camera_id,
        "total": facts.total,
        "cameras": [
            {"camera_id": cid, "camera_name": name, "count": n} for cid, name, n in facts.cameras
        ],
        "objects": [{"object": obj, "count": n} for obj, n in facts.objects],
        "hours": [{"hour": format_timestamp(h), "count": n} for h, n in facts.hours],
        "busiest_hour": None
        if busiest is None
        else {"hour": format_timestamp(busiest[0]), "count": busiest[1]},
        "first_event": event(facts.first_event),
        "last_event": event(facts.last_event),
        "rings": facts.rings,
        "reused": facts.reused,
        "fallback": facts.fallback,
        "filtered": facts.filtered,
        "throttled": facts.throttled,
        "examples": [{**context.payload(ev), "similar_events": n} for ev, n in facts.examples],
        "text": plain_text(facts),
    }
