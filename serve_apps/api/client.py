"""The store client: what the routes need (`StoreClient`) and its Ray implementation.

`RayStoreClient` talks to the `event-store`, `ingest:<key>` and `mqtt-publisher` actors, each
call with a short timeout, so that a component that is gone answers `Unavailable` (→ 503)
instead of hanging the request. Which ingest actor runs a camera is asked of the ingest actors
themselves (cluster.directory), in a worker thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from pipelines.config import CameraConfig, Config
from pipelines.events import Event
from pipelines.mqtt.diagnose import public_reason
from pipelines.naming import (
    PUBLISHER_ACTOR,
    RUN_ACTOR,
    STORE_ACTOR,
    VLM_APP,
)
from pipelines.storage.summary import Summary

CALL_TIMEOUT_S = 3.0


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

    # The live stream (serve_apps.api.stream) and summaries (serve_apps.api.summary).

    async def last_seq(self) -> int: ...

    async def seq_of(self, event_id: str) -> int | None: ...

    async def events_after(
        self,
        after: int,
        upto: int | None = None,
        limit: int = 500,
        wait_s: float = 0.0,
        **filters: Any,
    ) -> list[tuple[int, Event]]: ...

    async def summary(self, **params: Any) -> Summary: ...


async def _with_timeout(awaitable: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
    return await asyncio.wait_for(awaitable, timeout=timeout)


def _component(ok: bool, why: str, **extra: Any) -> dict[str, Any]:
    """One health entry: {"ok", "detail" ("" when ok, else why), **extra}."""
    return {"ok": ok, "detail": "" if ok else why, **extra}


class RayStoreClient:
    """StoreClient over the cluster's actors; handles are looked up lazily in the replica."""

    def __init__(self, config: Config, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._config = config
        self._namespace = config.ray.namespace
        self._timeout = timeout_s
        self._handles: dict[str, Any] = {}
        self._directory: Any = None  # cluster.directory.IngestDirectory, made on first use

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        state["_directory"] = None
        return state

    def _ingest(self) -> Any:
        if self._directory is None:
            from cluster.directory import IngestDirectory

            self._directory = IngestDirectory(self._namespace)
        return self._directory

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
        return await self._call_within(self._timeout, actor, method, *args, **kwargs)

    async def _call_within(
        self, timeout_s: float, actor: str, method: str, *args: Any, **kwargs: Any
    ) -> Any:
        from ray.exceptions import RayActorError

        try:
            handle = await self._actor(actor)
            return await _with_timeout(getattr(handle, method).remote(*args, **kwargs), timeout_s)
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

    async def last_seq(self) -> int:
        """The store's largest seq (where a new live stream starts)."""
        result: int = await self._call(STORE_ACTOR, "last_seq")
        return result

    async def seq_of(self, event_id: str) -> int | None:
        """The seq of a stored event, or None."""
        result: int | None = await self._call(STORE_ACTOR, "seq_of", event_id)
        return result

    async def events_after(
        self,
        after: int,
        upto: int | None = None,
        limit: int = 500,
        wait_s: float = 0.0,
        **filters: Any,
    ) -> list[tuple[int, Event]]:
        """(seq, event) saved after seq `after`, in saving order; with none yet, the store
        answers at its next commit or after wait_s (a long-poll of the delivery feed)."""
        result: list[tuple[int, Event]] = await self._call_within(
            self._timeout + wait_s,
            STORE_ACTOR,
            "events_after",
            after,
            upto,
            limit,
            wait_s,
            **filters,
        )
        return result

    async def summary(self, **params: Any) -> Summary:
        """A period's Summary from the store actor."""
        result: Summary = await self._call(STORE_ACTOR, "summary", **params)
        return result

    async def cameras(self) -> list[dict[str, Any]]:
        """Configured cameras merged with their ingest actors' live status."""
        unplaceable, waiting = await self._placement()
        try:
            live = await _with_timeout(
                asyncio.to_thread(self._ingest().statuses, self._timeout, set(waiting)),
                self._timeout * 2,
            )
        except Exception:
            live = {}
        starting = {cid for ids in waiting.values() for cid in ids}
        return [
            self._camera(c, unplaceable.get(c.id), live.get(c.id), c.id in starting)
            for c in self._config.cameras
        ]

    async def _placement(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        """Cameras the cluster cannot place now (from the run actor), each with the reason; and
        the ingest actors not placed yet (asking them would wait)."""
        try:
            unplaceable, waiting = await asyncio.gather(
                self._call(RUN_ACTOR, "unplaceable"), self._call(RUN_ACTOR, "waiting")
            )
            return unplaceable, waiting
        except Exception:  # no `liveobject run` (Serve-only deployment): nothing known
            return {}, {}

    @staticmethod
    def _camera(
        cam: CameraConfig, unplaceable: str | None, live: dict[str, Any] | None, starting: bool
    ) -> dict[str, Any]:
        base = {
            "camera_id": cam.id,
            "camera_name": cam.name,
            "source_type": cam.source_type,
            "doorbell": cam.doorbell,
            "enabled": cam.enabled,
        }
        if unplaceable is not None:  # its actor waits for resources: it was not asked
            return {
                **base,
                "status": "unplaceable",
                "reason": unplaceable,
                "fps": 0.0,
                "last_event": None,
            }
        if live is None and starting:  # its ingest actor is not placed yet
            return {**base, "status": "starting", "fps": 0.0, "last_event": None}
        if live is None or "error" in live:
            error = "Unavailable" if live is None else str(live["error"])
            return {**base, "status": "unavailable", "fps": 0.0, "last_event": None, "error": error}
        return {**base, **{k: v for k, v in live.items() if k not in ("source", "detect_source")}}

    async def ring(self, camera_id: str) -> dict[str, Any]:
        """Ask the camera's ingest actor to analyse its newest frame as a doorbell ring."""
        try:
            result = await _with_timeout(
                asyncio.to_thread(self._ingest().ring, camera_id, self._timeout),
                self._timeout * 3,
            )
        except Exception as exc:
            raise Unavailable(f"camera:{camera_id}") from exc
        if result is None:  # no ingest actor runs it (or none answered in time): 503
            raise Unavailable(f"camera:{camera_id}")
        return dict(result)

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

        return _component(ray.is_initialized(), "down")

    async def _store_ok(self) -> dict[str, Any]:
        info = await self._call(STORE_ACTOR, "health")
        counts = {k: v for k, v in info.items() if k in ("stored", "published", "unpublished")}
        return _component(bool(info.get("ok")), str(info.get("detail") or "unhealthy"), **counts)

    async def _vlm_ok(self) -> dict[str, Any]:
        from ray import serve

        status = await _with_timeout(asyncio.to_thread(serve.status), self._timeout)
        app = status.applications.get(VLM_APP)
        state = str(getattr(app, "status", "NOT_DEPLOYED")).rsplit(".", 1)[-1]
        return _component(state == "RUNNING", f"vlm app {state.lower()}")

    async def _mqtt_ok(self) -> dict[str, Any]:
        info = await self._call(PUBLISHER_ACTOR, "status")
        reason = info.get("reason")
        ok = bool(info.get("connected"))
        entry = _component(
            ok, str(reason or "broker not connected"), pending=info.get("pending", 0)
        )
        if not ok:  # `why` is shown without the key: the kind, not the broker's address
            entry["public"] = public_reason(reason)
        return entry
