"""The `api` Serve ingress on a real Ray cluster: answers fast and in JSON even with actors gone."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from pipelines.config import Config
from serve_apps.api import build_api_app

pytestmark = pytest.mark.integration


def test_api_ingress_answers_without_hanging(ray_session, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ray import serve

    config = Config.model_validate(
        {
            "ray": {"namespace": "liveobject-apitest"},  # no actors live here
            "cameras": [{"id": "door", "source": "rtsp://cam.lan/s", "doorbell": True}],
            "storage": {"path": str(tmp_path)},
        }
    )
    serve.run(build_api_app(config), name="api-test", route_prefix="/apitest")
    base = f"http://127.0.0.1:{ray_session.serve_port}/apitest"
    try:
        with httpx.Client(timeout=30) as http:
            t = time.monotonic()
            r = http.get(f"{base}/api/v1/health")
            assert time.monotonic() - t < 15
            assert r.status_code == 503
            body = r.json()
            assert body["components"]["store"]["ok"] is False and body["why"]
            assert http.get(f"{base}/api/v1/events").status_code == 503
            assert http.get(f"{base}/api/v1/events/{uuid.uuid4()}").status_code == 503
            assert http.get(f"{base}/api/v1/events/..%2f..%2fetc%2fpasswd").status_code == 404
            assert http.post(f"{base}/api/v1/cameras/door/ring").status_code == 503
            cams = http.get(f"{base}/api/v1/cameras").json()["cameras"]
            assert cams[0]["camera_id"] == "door" and cams[0]["status"] == "unavailable"
            assert http.get(f"{base}/openapi.json").status_code == 200
    finally:
        serve.delete("api-test")
