"""The FastAPI app (`build_api`) and its Ray Serve ingress, the application "api"."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from pipelines.config import Config
from serve_apps import SHUTDOWN_LOOK_S
from serve_apps.api import camera_thumbnail, cameras, events, health, page, stream, summary
from serve_apps.api.client import RayStoreClient, StoreClient
from serve_apps.api.deps import ApiContext
from serve_apps.api.errors import add_error_handlers
from serve_apps.api.guard import RequestGuard, allowed_hosts

API_DEPLOYMENT = "API"
# Requests a replica takes at once beyond its open live streams: streams last hours and each
# holds a slot, so the slots are sized from api.stream.max_clients (the hub refuses more with
# 503) plus these, which only short requests (lists, thumbnails, ring, health) can use.
SHORT_REQUEST_SLOTS = 64


def max_ongoing_requests(config: Config) -> int:
    """Serve's `max_ongoing_requests` for the API deployment: every stream plus the short slots."""
    return config.api.stream.max_clients + SHORT_REQUEST_SLOTS


def deployment_options(config: Config) -> dict[str, Any]:
    """Serve options for the API deployment (benchmarks/bench_search.py's floor uses them too)."""
    return {
        "ray_actor_options": {"num_cpus": 0.05},
        "max_ongoing_requests": max_ongoing_requests(config),
        "graceful_shutdown_wait_loop_s": SHUTDOWN_LOOK_S,
    }


def build_api(store_client: StoreClient, config: Config) -> FastAPI:
    """The FastAPI app serving events (list, search, live stream), thumbnails, summaries,
    cameras, ring, health and the review page."""
    docs = config.api.docs  # the interactive pages load scripts from a CDN: off unless asked
    app = FastAPI(
        title="liveobject",
        version="1",
        description="Camera events analysed by a VLM: events, thumbnails, cameras, health.",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.add_middleware(RequestGuard, hosts=allowed_hosts(config))
    app.state.api = ApiContext.from_config(store_client, config)
    app.state.ring_rate_per_min = config.api.ring_rate_per_min  # serve_apps.api.cameras
    app.state.config = config  # stream settings and narrative backends (stream.py, summary.py)
    app.state.max_ongoing_requests = max_ongoing_requests(config)  # stream.py's status route
    add_error_handlers(app)
    # stream before events: /api/v1/events/stream must not be taken for an event id
    for module in (stream, events, summary, cameras, camera_thumbnail, health, page):
        app.include_router(module.router)
    return app


def build_api_app(config: Config) -> Any:
    """The Serve application "api": deployment "API" ingressing build_api over the actors."""
    from ray import serve

    fastapi_app = build_api(RayStoreClient(config), config)

    @serve.deployment(name=API_DEPLOYMENT, **deployment_options(config))
    @serve.ingress(fastapi_app)
    class API:
        """Stateless HTTP ingress; all state lives in the store and camera actors."""

    return API.bind()  # type: ignore[attr-defined]


def app_builder(args: dict[str, str]) -> Any:
    """Builder for a Serve config file (`import_path: serve_apps.api:app_builder`)."""
    from pipelines.config import ConfigError, load_config

    config = load_config(args["config"])
    refusal = config.api.exposure_refusal()  # api.host: where the Serve config binds it
    if refusal is not None:
        raise ConfigError([refusal])
    return build_api_app(config)
