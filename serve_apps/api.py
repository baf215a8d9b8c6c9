"""The HTTP API: a FastAPI app over an async store client, and its Ray Serve ingress.

`build_api(store_client, config)` is plain FastAPI (unit-tested with TestClient over a real
EventStore); `build_api_app(config)` wraps it as the Serve application "api" whose client talks
to the `event-store`, `camera:<id>` and `mqtt-publisher` actors, each call with a short timeout
so that /health answers 503 instead of hanging.

Every path parameter is validated before the store is touched; every error is JSON. The OpenAPI
docs (/docs, /openapi.json) stay open when an API key is set: they describe, they do not serve data.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.auth import check_thumbnail_token, keys_match
from pipelines.config import CAMERA_ID_RE, Config
from pipelines.events import Event, event_payload
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR, VLM_APP, camera_actor_name

logger = logging.getLogger(__name__)

API_DEPLOYMENT = "API"
CALL_TIMEOUT_S = 3.0

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_CAMERA_RE = re.compile(CAMERA_ID_RE)
_OBJECT_RE = r"^[A-Za-z0-9 _-]{1,64}$"


# Module level: FastAPI resolves these string annotations (postponed evaluation) here.
EventIdParam = Annotated[str, PathParam(description="Event uuid")]
CameraIdParam = Annotated[str, PathParam(description="Camera id")]


class Unavailable(Exception):
    """A cluster component (store, camera, publisher) did not answer in time or is gone."""


class StoreClient(Protocol):
    """What the API needs from the store and the cluster (async; Ray or in-process)."""

    async def get(self, event_id: str) -> Event | None: ...

    async def query(self, **filters: Any) -> tuple[list[Event], str | None]: ...

    async def thumbnail_path(self, event_id: str) -> Path | None: ...

    async def thumbnail_bytes(self, event_id: str) -> bytes | None: ...

    async def health(self) -> dict[str, dict[str, Any]]: ...

    async def cameras(self) -> list[dict[str, Any]]: ...

    async def ring(self, camera_id: str) -> dict[str, Any]: ...


def _event_id(value: str) -> str:
    """Canonical lowercase uuid, or a 404 (an id that cannot exist is simply not found)."""
    if len(value) != 36 or not _UUID_RE.fullmatch(value):
        raise HTTPException(status_code=404, detail="event not found")
    return str(uuid.UUID(value))


def _camera_id(value: str) -> str:
    if len(value) > 64 or not _CAMERA_RE.fullmatch(value):
        raise HTTPException(status_code=404, detail="camera not found")
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def build_api(store_client: StoreClient, config: Config) -> FastAPI:
    """The FastAPI app serving events, thumbnails, cameras, ring and health."""
    api_cfg = config.api
    api_key = api_cfg.api_key.get_secret_value() if api_cfg.api_key is not None else None
    base_url = api_cfg.effective_base_url()
    ttl = api_cfg.thumbnail_url_ttl_s
    cameras_by_id = {cam.id: cam for cam in config.cameras}
    bearer = HTTPBearer(auto_error=False, description="The configured api.api_key")

    app = FastAPI(
        title="liveobject",
        version="1",
        description="Camera events analysed by a VLM: events, thumbnails, cameras, health.",
    )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Field locations and messages only: never echo the offending input back.
        errors = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Unavailable)
    async def _unavailable(_request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse({"detail": f"{exc} unavailable"}, status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    def _check_key(creds: HTTPAuthorizationCredentials | None) -> bool:
        return api_key is None or (creds is not None and keys_match(creds.credentials, api_key))

    async def require_key(
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # local: no Annotated
    ) -> None:
        if not _check_key(creds):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong API key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def payload(event: Event) -> dict[str, Any]:
        return event_payload(event, base_url, api_key, ttl)

    @app.get("/api/v1/events", dependencies=[Depends(require_key)], tags=["events"])
    async def list_events(
        camera_id: Annotated[str | None, Query(pattern=CAMERA_ID_RE, max_length=64)] = None,
        since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
        until: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
        object: Annotated[str | None, Query(pattern=_OBJECT_RE, max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        """Events newest first, filtered, one page at a time (follow next_cursor)."""
        try:
            events, next_cursor = await store_client.query(
                camera_id=camera_id,
                since=_utc(since),
                until=_utc(until),
                object=object,
                limit=limit,
                cursor=cursor,
            )
        except (ValueError, OverflowError) as exc:
            raise HTTPException(status_code=400, detail="invalid cursor or filter") from exc
        return {"events": [payload(e) for e in events], "next_cursor": next_cursor}

    @app.get("/api/v1/events/{event_id}", dependencies=[Depends(require_key)], tags=["events"])
    async def get_event(event_id: EventIdParam) -> dict[str, Any]:
        """One event, with the same fields as its MQTT payload."""
        event = await store_client.get(_event_id(event_id))
        if event is None:
            raise HTTPException(status_code=404, detail="event not found")
        return payload(event)

    @app.get(
        "/api/v1/events/{event_id}/thumbnail",
        tags=["events"],
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    async def get_thumbnail(
        event_id: EventIdParam,
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # local: no Annotated
        token: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        """The event's JPEG thumbnail (Bearer key or the signed `token` from thumbnail_url)."""
        if api_key is not None and not _check_key(creds):
            if token is None:
                raise HTTPException(
                    status_code=401,
                    detail="missing or wrong API key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            problem = check_thumbnail_token(token, event_id, api_key)
            if problem == "expired":
                raise HTTPException(status_code=401, detail="thumbnail token expired")
            if problem is not None:
                raise HTTPException(status_code=403, detail="invalid thumbnail token")
        eid = _event_id(event_id)
        path = await store_client.thumbnail_path(eid)
        if path is not None and Path(path).is_file():
            return FileResponse(path, media_type="image/jpeg")
        data = await store_client.thumbnail_bytes(eid)
        if data is None:
            raise HTTPException(status_code=404, detail="thumbnail not found")
        return Response(content=data, media_type="image/jpeg")

    @app.get("/api/v1/cameras", dependencies=[Depends(require_key)], tags=["cameras"])
    async def list_cameras() -> dict[str, Any]:
        """Cameras with status, fps and last event."""
        return {"cameras": await store_client.cameras()}

    @app.post(
        "/api/v1/cameras/{camera_id}/ring", dependencies=[Depends(require_key)], tags=["cameras"]
    )
    async def ring(camera_id: CameraIdParam) -> JSONResponse:
        """Doorbell ring: analyse the newest frame now; the event has is_doorbell_ring true."""
        camera = cameras_by_id.get(_camera_id(camera_id))
        if camera is None:
            raise HTTPException(status_code=404, detail="camera not found")
        if not camera.doorbell:
            raise HTTPException(status_code=409, detail="camera is not a doorbell")
        result = await store_client.ring(camera.id)
        if not result.get("accepted", False):
            raise HTTPException(status_code=409, detail=str(result.get("reason", "not accepted")))
        return JSONResponse({"camera_id": camera.id, **result}, status_code=202)

    @app.get("/api/v1/health", tags=["health"])
    async def health() -> JSONResponse:
        """200 when every component is up, else 503 with the reasons."""
        components = await store_client.health()
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

    return app


async def _with_timeout(awaitable: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
    return await asyncio.wait_for(awaitable, timeout=timeout)


class RayStoreClient:
    """StoreClient over the cluster's actors; handles are looked up lazily in the replica."""

    def __init__(self, config: Config, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._config = config
        self._namespace = config.ray.namespace
        self._timeout = timeout_s
        self._handles: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    async def _actor(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            import ray

            handle = await _with_timeout(
                asyncio.to_thread(ray.get_actor, name, namespace=self._namespace), self._timeout
            )
            self._handles[name] = handle
        return handle

    async def _call(self, actor: str, method: str, *args: Any, **kwargs: Any) -> Any:
        from ray.exceptions import RayActorError

        try:
            handle = await self._actor(actor)
            return await _with_timeout(
                getattr(handle, method).remote(*args, **kwargs), self._timeout
            )
        except (ValueError, TimeoutError, RayActorError) as exc:
            self._handles.pop(actor, None)  # restarted or gone: look it up again next time
            if isinstance(exc, ValueError) and not isinstance(exc, RayActorError):
                from ray.exceptions import RayTaskError

                if isinstance(exc, RayTaskError):  # the method itself refused the input
                    raise
            raise Unavailable(actor) from exc

    async def get(self, event_id: str) -> Event | None:
        """One event from the store actor."""
        result: Event | None = await self._call(STORE_ACTOR, "get", event_id)
        return result

    async def query(self, **filters: Any) -> tuple[list[Event], str | None]:
        """A page of events from the store actor."""
        result: tuple[list[Event], str | None] = await self._call(STORE_ACTOR, "query", **filters)
        return result

    async def thumbnail_path(self, event_id: str) -> Path | None:
        """The thumbnail's path when it is readable from this node, else None."""
        path = await self._call(STORE_ACTOR, "thumbnail_path", event_id)
        return Path(path) if path is not None and Path(path).is_file() else None

    async def thumbnail_bytes(self, event_id: str) -> bytes | None:
        """The thumbnail's bytes (when the store runs on another node)."""
        data: bytes | None = await self._call(STORE_ACTOR, "thumbnail_bytes", event_id)
        return data

    async def cameras(self) -> list[dict[str, Any]]:
        """Configured cameras merged with their actors' live status."""

        async def one(cam: Any) -> dict[str, Any]:
            base = {
                "camera_id": cam.id,
                "camera_name": cam.name,
                "source_type": cam.source_type,
                "doorbell": cam.doorbell,
                "enabled": cam.enabled,
            }
            try:
                live = await self._call(camera_actor_name(cam.id), "status")
            except Exception as exc:
                return {
                    **base,
                    "status": "unavailable",
                    "fps": 0.0,
                    "last_event": None,
                    "error": type(exc).__name__,
                }
            return {**base, **{k: v for k, v in live.items() if k != "source"}}

        return list(await asyncio.gather(*(one(c) for c in self._config.cameras)))

    async def ring(self, camera_id: str) -> dict[str, Any]:
        """Ask the camera actor to analyse its newest frame as a doorbell ring."""
        result: dict[str, Any] = await self._call(camera_actor_name(camera_id), "ring")
        return result  # Unavailable (→ 503) when the camera actor does not answer

    async def health(self) -> dict[str, dict[str, Any]]:
        """Ray, store, VLM and (when enabled) MQTT, each {"ok": bool, "detail": str}."""
        checks = {"ray": self._ray_ok(), "store": self._store_ok(), "vlm": self._vlm_ok()}
        if self._config.mqtt.enabled:
            checks["mqtt"] = self._mqtt_ok()
        results = await asyncio.gather(*checks.values(), return_exceptions=True)
        out: dict[str, dict[str, Any]] = {}
        for name, result in zip(checks, results, strict=True):
            if isinstance(result, BaseException):
                detail = "timeout" if isinstance(result, TimeoutError) else type(result).__name__
                out[name] = {"ok": False, "detail": detail}
            else:
                out[name] = result
        return out

    async def _ray_ok(self) -> dict[str, Any]:
        import ray

        return {"ok": ray.is_initialized(), "detail": "" if ray.is_initialized() else "down"}

    async def _store_ok(self) -> dict[str, Any]:
        info = await self._call(STORE_ACTOR, "health")
        ok = bool(info.get("ok"))
        return {
            "ok": ok,
            "detail": "" if ok else "unhealthy",
            **{k: v for k, v in info.items() if k in ("stored", "published", "unpublished")},
        }

    async def _vlm_ok(self) -> dict[str, Any]:
        from ray import serve

        status = await _with_timeout(asyncio.to_thread(serve.status), self._timeout)
        app = status.applications.get(VLM_APP)
        state = str(getattr(app, "status", "NOT_DEPLOYED")).rsplit(".", 1)[-1]
        ok = state == "RUNNING"
        return {"ok": ok, "detail": "" if ok else f"vlm app {state.lower()}"}

    async def _mqtt_ok(self) -> dict[str, Any]:
        info = await self._call(PUBLISHER_ACTOR, "status")
        ok = bool(info.get("connected"))
        return {
            "ok": ok,
            "detail": "" if ok else "broker not connected",
            "pending": info.get("pending", 0),
        }


def build_api_app(config: Config) -> Any:
    """The Serve application "api": deployment "API" ingressing build_api over the actors."""
    from ray import serve

    fastapi_app = build_api(RayStoreClient(config), config)

    @serve.deployment(name=API_DEPLOYMENT, ray_actor_options={"num_cpus": 0.05})
    @serve.ingress(fastapi_app)
    class API:
        """Stateless HTTP ingress; all state lives in the store and camera actors."""

    return API.bind()  # type: ignore[attr-defined]


def app_builder(args: dict[str, str]) -> Any:
    """Builder for a Serve config file (`import_path: serve_apps.api:app_builder`)."""
    from pipelines.config import load_config

    return build_api_app(load_config(args["config"]))
