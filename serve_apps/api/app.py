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

API_DEPLOYMENT = "API"


def build_api(store_client: StoreClient, config: Config) -> FastAPI:
    """The FastAPI app serving events (list, search, live stream), thumbnails, summaries,
    cameras, ring, health and the review page."""
    app = FastAPI(
        title="liveobject",
        version="1",
        description="Camera events analysed by a VLM: events, thumbnails, cameras, health.",
    )
    app.state.api = ApiContext.from_config(store_client, config)
    app.state.ring_rate_per_min = config.api.ring_rate_per_min  # serve_apps.api.cameras
    app.state.config = config  # stream settings and narrative backends (stream.py, summary.py)
    add_error_handlers(app)
    # stream before events: /api/v1/events/stream must not be taken for an event id
    for module in (stream, events, summary, cameras, camera_thumbnail, health, page):
        app.include_router(module.router)
    return app


def build_api_app(config: Config) -> Any:
    """The Serve application "api": deployment "API" ingressing build_api over the actors."""
    from ray import serve

    fastapi_app = build_api(RayStoreClient(config), config)

    @serve.deployment(
        name=API_DEPLOYMENT,
        ray_actor_options={"num_cpus": 0.05},
        graceful_shutdown_wait_loop_s=SHUTDOWN_LOOK_S,
    )
    @serve.ingress(fastapi_app)
    class API:
        """Stateless HTTP ingress; all state lives in the store and camera actors."""

    return API.bind()  # type: ignore[attr-defined]


def app_builder(args: dict[str, str]) -> Any:
    """Builder for a Serve config file (`import_path: serve_apps.api:app_builder`)."""
    from pipelines.config import load_config

    return build_api_app(load_config(args["config"]))
