"""The API's StoreClient over an in-process EventStore, and the two-camera config of API tests."""

from __future__ import annotations

from typing import Any

from pipelines.config import Config
from pipelines.storage import EventStore
from serve_apps.api import local as serve_local


class LocalStoreClient(serve_local.LocalStoreClient):
    """The API's in-process store client; cameras, rings and health are plain test state."""

    def __init__(self, store: EventStore, config: Config) -> None:
        super().__init__(store, config)
        self.down: set[str] = set()
        self.rings: list[str] = []

    async def health(self) -> dict[str, dict[str, Any]]:
        names = ["ray", "store", "vlm", "mqtt"]
        return {
            n: {"ok": n not in self.down, "detail": "down" if n in self.down else ""} for n in names
        }

    async def cameras(self) -> list[dict[str, Any]]:
        return [
            {
                "camera_id": c.id,
                "camera_name": c.name,
                "status": "online",
                "fps": 5.0,
                "last_event": None,
            }
            for c in self.config.cameras
        ]

    async def ring(self, camera_id: str) -> dict[str, Any]:
        self.rings.append(camera_id)
        return {"accepted": True}


def make_config(api_key: str | None = None) -> Config:
    """Two cameras (one a doorbell) and the API's base URL; `api_key` turns auth on."""
    api: dict[str, Any] = {"base_url": "http://cam.example:8000"}
    if api_key:
        api["api_key"] = api_key
    return Config.model_validate(
        {
            "cameras": [
                {"id": "front", "source": "rtsp://cam1.lan/stream"},
                {"id": "door", "source": "rtsp://cam2.lan/stream", "doorbell": True},
            ],
            "api": api,
        }
    )
