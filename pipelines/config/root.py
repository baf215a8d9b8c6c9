"""`Config`, the whole file: every section, plus the checks that span sections."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from pipelines.config.api import APIConfig
from pipelines.config.base import StrictModel
from pipelines.config.cameras import CameraConfig
from pipelines.config.correlation import CorrelationConfig
from pipelines.config.mqtt import MQTTConfig
from pipelines.config.ray_cluster import RayConfig
from pipelines.config.shutdown import ShutdownConfig
from pipelines.config.storage import StorageConfig
from pipelines.config.validators import _invalid
from pipelines.config.vlm import VLMConfig
from pipelines.redact import url_password


class Config(StrictModel):
    """The whole liveobject configuration."""

    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster.")
    cameras: list[CameraConfig] = Field(
        min_length=1, max_length=1024, description="Cameras (ids unique)."
    )
    vlm: VLMConfig = Field(default_factory=VLMConfig, description="VLM deployment.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Event storage.")
    mqtt: MQTTConfig = Field(default_factory=MQTTConfig, description="MQTT publishing.")
    api: APIConfig = Field(default_factory=APIConfig, description="HTTP API.")
    correlation: CorrelationConfig = Field(
        default_factory=CorrelationConfig, description="Cross-camera correlation."
    )
    shutdown: ShutdownConfig = Field(
        default_factory=ShutdownConfig, description="Draining on stop."
    )

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        # Validate absent sections from {} too, so defaults see the context (base_dir).
        if isinstance(data, dict):
            data = {"storage": {}, "mqtt": {}, **data}
        return data

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        seen: dict[str, int] = {}
        for index, camera in enumerate(cameras):
            if camera.id in seen:
                raise _invalid(
                    f"duplicate camera id {camera.id!r} (also cameras.{seen[camera.id]}.id)",
                    index,
                    "id",
                )
            seen[camera.id] = index
        return cameras

    @model_validator(mode="after")
    def _chains_exist(self) -> Config:
        for index, camera in enumerate(self.cameras):
            if camera.vlm is not None and camera.vlm not in self.vlm.backends:
                have = ", ".join(sorted(self.vlm.backends)) or "none"
                raise _invalid(
                    f"camera {camera.id!r}: no backend chain named {camera.vlm[:32]!r} in "
                    f"vlm.backends (have: {have})",
                    "cameras",
                    index,
                    "vlm",
                )
        return self

    def camera(self, camera_id: str) -> CameraConfig:
        """The camera with this id (KeyError if none)."""
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(camera_id)

    def secret_values(self) -> list[str]:
        """Every secret in this config (for `pipelines.redact.redact`)."""
        secrets = [self.mqtt.password, self.api.api_key]
        secrets += [backend.api_key for backend in self.vlm.all_backends()]
        values = [s.get_secret_value() for s in secrets if s is not None]
        for camera in self.cameras:
            values += url_password(camera.source)
            values += url_password(camera.detect_source or "")
        return [v for v in values if v]
