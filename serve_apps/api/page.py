"""GET /: the review page (timeline, filters, search, summary, cameras, live events).

Plain HTML, CSS and JavaScript from `static/`, served by this app: no build step, no CDN. The
page itself holds no data, so it loads without a key; everything it shows comes from the keyed
routes, with the key the user enters once (kept in the tab's sessionStorage, sent as a Bearer
header, never put in a URL). The HTML tells the script whether the server wants a key. A strict
Content-Security-Policy allows only this origin's scripts, styles, images and connections.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from serve_apps.api.deps import Context

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=2)
def _index(needs_key: bool) -> str:
    html = (STATIC / "index.html").read_text("utf-8")
    return html.replace("{{AUTH}}", "key" if needs_key else "none")


@router.get("/", response_class=HTMLResponse)
async def review_page(context: Context) -> HTMLResponse:
    """The review page."""
    needs_key = context.api_key is not None
    return HTMLResponse(_index(needs_key), headers=HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> FileResponse:
    """The page's script and style sheet."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail="Not Found")
    return FileResponse(STATIC / name, media_type=media_type, headers=HEADERS)
