"""The HTTP API: a FastAPI app over an async store client, and its Ray Serve ingress.

`build_api(store_client, config)` is plain FastAPI (unit-tested with TestClient over a real
EventStore); `build_api_app(config)` wraps it as the Serve application "api" whose client
(`RayStoreClient`) talks to the actors, each call with a short timeout so that /health answers
503 instead of hanging.

Layout: `app.py` builds the app and the Serve deployment; `deps.py` holds the dependencies
(context, store client, auth, path ids); `events.py`, `cameras.py`, `health.py` the routes by
resource, `stream.py` the live event stream (SSE, one poller per replica), `summary.py` period
summaries, `page.py` the review page (files in `static/`); `errors.py` the JSON error handlers;
`client.py` the store client (`local.py`: one over an in-process EventStore). The routes are
documented in docs/http-api.md.

Every path parameter is validated before the store is touched; every error is JSON. The OpenAPI
docs (/docs, /openapi.json) stay open when an API key is set: they describe, they do not serve data.
"""

from serve_apps.api.app import API_DEPLOYMENT, app_builder, build_api, build_api_app
from serve_apps.api.client import CALL_TIMEOUT_S, RayStoreClient, StoreClient, Unavailable

__all__ = [
    "API_DEPLOYMENT",
    "CALL_TIMEOUT_S",
    "RayStoreClient",
    "StoreClient",
    "Unavailable",
    "app_builder",
    "build_api",
    "build_api_app",
]
