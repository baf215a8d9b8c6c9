"""FastAPI dependencies of the routes: context (config + store client), auth, path ids.

`build_api` puts one `ApiContext` on `app.state.api`; routes reach it, and the store client in
it, through `Context` and `Store`. Auth is `require_key` (Bearer API key, constant-time compare)
or, for a thumbnail, `thumbnail_access` (the key, or the signed `token` of its thumbnail_url)
and `camera_thumbnail_access` (the key, or the camera's token of the retained last_event URL).
Health is open, but `key_ok` decides whether it shows details (see serve_apps.api.health).
Every dependency is async: FastAPI runs a plain `def` one in a worker thread on each request
(tests/unit/test_api.py checks every route).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipelines.auth import check_camera_token, check_thumbnail_token, keys_match
from pipelines.config import CAMERA_ID_RE, CameraConfig, Config
from pipelines.events import Event, event_payload
from serve_apps.api.client import StoreClient

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_CAMERA_RE = re.compile(CAMERA_ID_RE)


@dataclass(frozen=True)
class ApiContext:
    """What the routes need from the config, and the store client they query."""

    store: StoreClient
    api_key: str | None
    link_key: str | None  # signs and checks thumbnail links (api.link_key)
    base_url: str
    thumbnail_ttl_s: int
    cameras: Mapping[str, CameraConfig]

    @classmethod
    def from_config(cls, store: StoreClient, config: Config) -> ApiContext:
        """The context for an app over `store` configured by `config.api` and `config.cameras`."""
        api_cfg = config.api
        return cls(
            store=store,
            api_key=api_cfg.api_key.get_secret_value() if api_cfg.api_key is not None else None,
            link_key=api_cfg.link_key(),
            base_url=api_cfg.effective_base_url(),
            thumbnail_ttl_s=api_cfg.thumbnail_url_ttl_s,
            cameras={cam.id: cam for cam in config.cameras},
        )

    def payload(self, event: Event) -> dict[str, Any]:
        """The event's JSON (as on MQTT), its thumbnail_url signed when a key is set."""
        return event_payload(event, self.base_url, self.link_key, self.thumbnail_ttl_s)

    def key_ok(self, creds: HTTPAuthorizationCredentials | None) -> bool:
        """True when no key is configured or the Bearer credentials match it."""
        return self.api_key is None or (
            creds is not None and keys_match(creds.credentials, self.api_key)
        )


async def get_context(request: Request) -> ApiContext:
    """The app's ApiContext (set by build_api)."""
    context: ApiContext = request.app.state.api
    return context


Context = Annotated[ApiContext, Depends(get_context)]


async def get_store(context: Context) -> StoreClient:
    """The store client the routes query."""
    return context.store


Store = Annotated[StoreClient, Depends(get_store)]

bearer = HTTPBearer(auto_error=False, description="The configured api.api_key")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
EventIdParam = Annotated[str, PathParam(description="Event uuid")]
CameraIdParam = Annotated[str, PathParam(description="Camera id")]


def _no_key() -> HTTPException:
    return HTTPException(
        status_code=401, detail="missing or wrong API key", headers={"WWW-Authenticate": "Bearer"}
    )


async def require_key(context: Context, creds: Credentials) -> None:
    """401 unless the request carries the configured key (when one is set)."""
    if not context.key_ok(creds):
        raise _no_key()


async def thumbnail_access(
    context: Context,
    event_id: EventIdParam,
    creds: Credentials,
    token: Annotated[str | None, Query(max_length=200)] = None,
) -> None:
    """Like require_key, but the signed `token` of the event's thumbnail_url also opens it."""
    if context.key_ok(creds):
        return
    if token is None or context.api_key is None:
        raise _no_key()
    assert context.link_key is not None
    problem = check_thumbnail_token(token, event_id, context.link_key)
    if problem == "expired":
        raise HTTPException(status_code=401, detail="thumbnail token expired")
    if problem is not None:
        raise HTTPException(status_code=403, detail="invalid thumbnail token")


async def camera_thumbnail_access(
    context: Context,
    camera_id: CameraIdParam,
    creds: Credentials,
    token: Annotated[str | None, Query(max_length=200)] = None,
    event_id: Annotated[str | None, Query(max_length=36)] = None,
) -> None:
    """Like require_key, but the token of the retained last_event URL also opens it: for that
    one event only (`event_id` required with a token)."""
    if context.key_ok(creds):
        return
    if token is None or context.link_key is None:
        raise _no_key()
    if event_id is None or not check_camera_token(
        token, camera_id, event_id.lower(), context.link_key
    ):
        raise HTTPException(status_code=403, detail="invalid thumbnail token")


def valid_event_id(event_id: EventIdParam) -> str:
    """Canonical lowercase uuid, or a 404 (an id that cannot exist is simply not found)."""
    if len(event_id) != 36 or not _UUID_RE.fullmatch(event_id):
        raise HTTPException(status_code=404, detail="event not found")
    return str(uuid.UUID(event_id))


async def valid_camera_id(camera_id: CameraIdParam) -> str:
    """The camera id when it is well-formed, else a 404."""
    if len(camera_id) > 64 or not _CAMERA_RE.fullmatch(camera_id):
        raise HTTPException(status_code=404, detail="camera not found")
    return camera_id


async def _valid_event_id(event_id: EventIdParam) -> str:
    # valid_event_id stays a plain function: events.py and camera_thumbnail.py call it too
    return valid_event_id(event_id)


EventId = Annotated[str, Depends(_valid_event_id)]
CameraId = Annotated[str, Depends(valid_camera_id)]
