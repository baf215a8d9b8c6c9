"""The pydantic config models: one per YAML section, plus `Config`, the whole file.

Every model forbids unknown keys (`extra="forbid"`) and is frozen. Relative paths resolve
against the `base_dir` validation context (set by `pipelines.config.loading`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines.config.validators import (
    _CONTROL,
    _check_base_url,
    _empty_to_none,
    _invalid,
    _resolve_path,
    _short_repr,
)
from pipelines.config.validators import check_topic_prefix as _check_topic
from pipelines.events import SOURCE_SCHEMES, SmartDetectionType, SourceType, resolve_base_url
from pipelines.redact import redact_url, url_password

CAMERA_ID_RE = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MIN_API_KEY_LENGTH = 16  # api.api_key: shorter keys are a config error
_CAMERA_ID = re.compile(CAMERA_ID_RE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeEnvConfig(_Model):
    """The Ray runtime_env of a run that joins a cluster (stock `rayproject/ray` nodes)."""

    pip: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="pip requirements installed on every node, e.g. ['liveobject==0.1.0'].",
    )
    working_dir: str | None = Field(
        default=None, max_length=4096, description="Local directory or URI shipped to the nodes."
    )
    env_vars: dict[str, str] = Field(
        default_factory=dict, max_length=256, description="Environment variables of the workers."
    )

    def as_ray(self) -> dict[str, Any]:
        """The runtime_env dict for ray.init (empty parts left out)."""
        env: dict[str, Any] = {"pip": self.pip, "env_vars": self.env_vars}
        if self.working_dir:
            env["working_dir"] = self.working_dir
        return {k: v for k, v in env.items() if v}


class RayConfig(_Model):
    """Where Ray runs."""

    address: str | None = Field(
        default=None,
        max_length=512,
        description="null/empty starts a local cluster; 'auto' or 'ray://host:10001' joins one.",
    )
    namespace: str = Field(
        default="liveobject", min_length=1, max_length=128, description="Ray namespace."
    )
    num_cpus: float | None = Field(
        default=None, ge=0, le=4096, description="CPUs for a local cluster (null: all)."
    )
    dashboard_port: int = Field(
        default=8265, ge=1, le=65535, description="Ray dashboard port (busy: a free one is used)."
    )
    metrics_export_port: int | None = Field(
        default=None,
        ge=1024,
        le=65535,
        description="Local cluster: port of Ray's Prometheus /metrics endpoint (null: a free one).",
    )
    placement_timeout_s: float = Field(
        default=10,
        gt=0,
        le=3600,
        description="A camera actor not placed within this is reported `unplaceable`.",
    )
    runtime_env: RuntimeEnvConfig | None = Field(
        default=None,
        description="Joining a cluster: Ray runtime_env that installs liveobject on its nodes.",
    )
    deploy_serve_apps: bool = Field(
        default=True,
        description="false: the apps vlm and api are deployed by others (KubeRay RayService).",
    )

    _none_if_empty = field_validator("address", mode="before")(_empty_to_none)

    @model_validator(mode="after")
    def _apps_elsewhere_need_a_cluster(self) -> RayConfig:
        if not self.deploy_serve_apps and not self.address:
            raise _invalid(
                "deploy_serve_apps: false needs ray.address (the cluster where the Serve apps "
                "are deployed)",
                "deploy_serve_apps",
            )
        return self


class MotionConfig(_Model):
    """Motion detection and event segmentation for one camera."""

    threshold: int = Field(default=25, ge=1, le=255, description="Pixel difference threshold.")
    contour_area: int = Field(
        default=40, ge=1, le=1_000_000, description="Min contour area (px, motion frame)."
    )
    frame_height: int = Field(default=180, ge=60, le=1080, description="Motion frame height.")
    min_motion_frames: int = Field(
        default=2, ge=1, le=1000, description="Consecutive motion frames that start an event."
    )
    end_after_s: float = Field(
        default=2.0, ge=0, le=600, description="Still time that ends an event."
    )
    max_event_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest event; longer motion is split."
    )
    cooldown_s: float = Field(default=0.0, ge=0, le=3600, description="Quiet time between events.")
    max_frames: int = Field(default=3, ge=1, le=16, description="Key frames sent to the VLM.")
    mask: list[list[tuple[int, int]]] = Field(
        default_factory=list,
        max_length=64,
        description="Polygons (motion-frame pixel coordinates) where motion is ignored.",
    )
    recalibrate_ratio: float = Field(
        default=0.5, gt=0, le=1, description="Changed fraction that resets the background."
    )

    @field_validator("mask")
    @classmethod
    def _polygons(cls, mask: list[list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
        for index, polygon in enumerate(mask):
            if not 3 <= len(polygon) <= 256:
                raise _invalid("a mask polygon needs 3 to 256 [x, y] points", index)
            if any(not (0 <= c <= 10_000) for point in polygon for c in point):
                raise _invalid("mask coordinates must be between 0 and 10000", index)
        return mask


ZONE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,63}$"
_ZONE_NAME = re.compile(ZONE_NAME_RE)


class ZoneConfig(_Model):
    """A named zone: a polygon in normalised image coordinates (0-1, any stream resolution)."""

    name: str = Field(
        description="Zone name (letters, digits, space, '_', '-'); recorded in events' `zones`."
    )
    polygon: list[tuple[float, float]] = Field(
        description="[[x, y], ...]: 3-256 points, x and y fractions (0-1) of width and height."
    )
    objects: list[SmartDetectionType] | None = Field(
        default=None,
        min_length=1,
        description="Publish events in this zone only with one of these objects (null: camera's).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ZONE_NAME.match(value):
            raise _invalid(
                f"invalid zone name {_short_repr(value)}: use 1-64 letters, digits, spaces, "
                "'_' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, polygon: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if not 3 <= len(polygon) <= 256:
            raise _invalid(f"a zone polygon needs 3 to 256 [x, y] points, got {len(polygon)}")
        for index, point in enumerate(polygon):
            if any(not (0.0 <= c <= 1.0) for c in point):
                raise _invalid(
                    "zone coordinates are fractions of the image: each x and y between 0 and 1",
                    index,
                )
        return polygon


class CameraConfig(_Model):
    """One camera: its source and how motion events are found on it."""

    id: str = Field(description="Stable id used in MQTT topics and paths; matches CAMERA_ID_RE.")
    name: str = Field(default="", max_length=100, description="Display name (default: from id).")
    source: str = Field(
        min_length=1,
        max_length=4096,
        description="File path or rtsp://, http(s)://, udp:// URL; may contain ${ENV} secrets.",
    )
    detect_fps: float = Field(default=5, ge=0.1, le=60, description="Frames analysed per second.")
    doorbell: bool = Field(default=False, description="A doorbell camera (ring events).")
    prompt: str | None = Field(
        default=None, max_length=4000, description="Extra VLM instructions for this camera."
    )
    enabled: bool = Field(default=True, description="Disabled cameras are not started.")
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Motion settings.")
    stall_timeout_s: float = Field(
        default=10,
        ge=0.5,
        le=600,
        description="Live streams: no new frame for this long means the stream is offline.",
    )
    max_pending_events: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Events waiting for the VLM; when full, new motion merges into the newest.",
    )
    num_cpus: float = Field(
        default=0.1,
        gt=0,
        le=64,
        description="CPUs the camera's actor requests from Ray (decoding at detect_fps is light).",
    )
    max_unsaved_events: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Events kept for retry while the store cannot save; beyond, the oldest drop.",
    )
    ring_merge_s: float = Field(
        default=10,
        ge=0,
        le=3600,
        description="Doorbell: a ring this soon after the last accepted one merges into it.",
    )
    zones: list[ZoneConfig] = Field(
        default_factory=list,
        max_length=32,
        description="Named zones; when any are set, motion must touch one to start an event.",
    )
    objects: list[SmartDetectionType] | None = Field(
        default=None,
        min_length=1,
        description="Publish only events with one of these objects (all are stored); null: all.",
    )
    vlm_max_per_hour: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="VLM calls per hour for this camera (token bucket); null: no own limit.",
    )

    @model_validator(mode="after")
    def _zones_consistent(self) -> CameraConfig:
        seen: set[str] = set()
        for index, zone in enumerate(self.zones):
            if zone.name in seen:
                raise _invalid(f"duplicate zone name {zone.name!r}", "zones", index, "name")
            seen.add(zone.name)
            if self.objects is not None and zone.objects is not None:
                extra = sorted(set(zone.objects) - set(self.objects))
                if extra:
                    raise _invalid(
                        f"zone objects {extra} are not in the camera's objects: a zone's "
                        "objects narrow the camera's list",
                        "zones",
                        index,
                        "objects",
                    )
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        camera_id = data.get("id") if isinstance(data, dict) else None
        if isinstance(camera_id, str) and _CAMERA_ID.match(camera_id) and not data.get("name"):
            data = {**data, "name": re.sub(r"[_-]+", " ", data["id"]).strip().title()}
        return data

    @field_validator("id")
    @classmethod
    def _camera_id(cls, value: str) -> str:
        if not _CAMERA_ID.match(value):
            raise _invalid(
                f"invalid camera id {_short_repr(value)}: use 1-64 characters of lowercase a-z, "
                "0-9, '_' or '-', starting with a letter or digit (ids become MQTT topic levels "
                "and file names)"
            )
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise _invalid("name must not contain control characters")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str, info: ValidationInfo) -> str:
        if _CONTROL.search(value):
            raise _invalid("source must not contain control characters")
        match = _SCHEME.match(value)
        if match is None:
            resolved = _resolve_path(Path(value), info)
            return str(resolved)
        scheme = match.group(1).lower()
        if scheme == "file":
            resolved = _resolve_path(Path(value[len("file://") :]), info)
            return str(resolved)
        if scheme not in SOURCE_SCHEMES:
            raise _invalid(
                f"unsupported source scheme {_short_repr(scheme, 16)}: use a file path or an "
                "rtsp://, rtsps://, http://, https:// or udp:// URL"
            )
        if len(value) == match.end():
            raise _invalid("source URL has no host")
        return value

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if key == "source" and isinstance(value, str) else value

    @property
    def source_type(self) -> SourceType:
        """file | rtsp | http | udp (https counts as http, rtsps as rtsp)."""
        match = _SCHEME.match(self.source)
        if match is None:
            return "file"
        return SOURCE_SCHEMES.get(match.group(1).lower(), "file")


class AutoscalingConfig(_Model):
    """Ray Serve autoscaling of the VLM deployment."""

    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas.")
    target_ongoing_requests: float = Field(
        default=8, gt=0, le=10_000, description="Ongoing requests per replica to aim for."
    )

    @model_validator(mode="after")
    def _order(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise _invalid("min_replicas must not exceed max_replicas", "min_replicas")
        return self


class BackendConfig(_Model):
    """One VLM backend (the primary one or an entry of the fallback list)."""

    backend: Literal["transformers", "openai"] = Field(description="Backend implementation.")
    model: str = Field(min_length=1, max_length=512, description="Hub id, local dir or model name.")
    base_url: str | None = Field(
        default=None, max_length=2048, description="openai: e.g. http://localhost:8001/v1."
    )
    api_key: SecretStr | None = Field(
        default=None, max_length=4096, description="openai: bearer key, via ${ENV}."
    )
    timeout_s: float = Field(default=30, gt=0, le=600, description="Per-request timeout.")

    _none_if_empty = field_validator("base_url", "api_key", mode="before")(_empty_to_none)
    _url = field_validator("base_url")(_check_base_url)

    @field_validator("model")
    @classmethod
    def _model_path(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith(("./", "../", "~")):
            return str(_resolve_path(Path(value), info))
        return value

    @model_validator(mode="after")
    def _openai_needs_url(self) -> BackendConfig:
        if self.backend == "openai" and not self.base_url:
            raise _invalid(
                "the openai backend needs base_url (e.g. http://localhost:8001/v1)", "base_url"
            )
        return self


class DedupeConfig(_Model):
    """Near-duplicate suppression: reuse a recent description instead of calling the VLM."""

    enabled: bool = Field(default=True, description="Compare key frames before calling the VLM.")
    window_s: float = Field(
        default=300,
        gt=0,
        le=86_400,
        description="Reuse only a description this recent (same camera, by event start).",
    )
    max_distance: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="Most changed cells (of 32x32, see docs/events.md) for the same scene.",
    )


class VLMConfig(BackendConfig):
    """The vision-language-model Serve deployment and its backends."""

    backend: Literal["transformers", "openai"] = Field(
        default="transformers", description="transformers (local) or openai (compatible server)."
    )
    model: str = Field(
        default="HuggingFaceTB/SmolVLM-256M-Instruct",
        min_length=1,
        max_length=512,
        description="Hub id or local directory (transformers) / model name (openai).",
    )
    max_batch_size: int = Field(default=8, ge=1, le=256, description="@serve.batch size.")
    batch_wait_timeout_s: float = Field(
        default=0.05, ge=0, le=10, description="How long a batch waits to fill."
    )
    num_replicas: int | Literal["auto"] = Field(
        default=1, description="Replica count, or 'auto' (autoscaling)."
    )
    autoscaling: AutoscalingConfig | None = Field(
        default=None, description="Serve autoscaling; implies num_replicas: auto."
    )
    num_gpus: float = Field(default=0, ge=0, le=8, description="GPUs per replica (fractions ok).")
    num_cpus: float = Field(default=1.0, ge=0, le=256, description="CPUs per replica.")
    max_new_tokens: int = Field(default=96, ge=1, le=2048, description="Generation length cap.")
    max_ongoing_requests: int = Field(
        default=32, ge=1, le=100_000, description="Serve max_ongoing_requests per replica."
    )
    deadline_s: float = Field(
        default=60, gt=0, le=3600, description="Per event; after it the fallback text is used."
    )
    bench_after_failures: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Failed or late batches in a row before a backend is benched for 30 s.",
    )
    image_size: int = Field(
        default=384, ge=32, le=4096, description="Key frames are resized to this long side."
    )
    fallback: list[BackendConfig] = Field(
        default_factory=list, max_length=8, description="Further backends, tried in order."
    )
    build_tiny_if_missing: bool = Field(
        default=False, description="Demo only: build a tiny random model if `model` is missing."
    )
    max_per_hour: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="VLM calls per hour for all cameras, shared fairly (token bucket); null: off.",
    )
    dedupe: DedupeConfig = Field(
        default_factory=DedupeConfig, description="Near-duplicate suppression."
    )

    @model_validator(mode="before")
    @classmethod
    def _auto_with_autoscaling(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("autoscaling") and "num_replicas" not in data:
            data = {**data, "num_replicas": "auto"}
        return data

    @field_validator("num_replicas", mode="before")
    @classmethod
    def _replicas(cls, value: Any) -> Any:
        if value == "auto":
            return value
        try:
            count = int(value) if not isinstance(value, bool | float) else None
        except (TypeError, ValueError):
            count = None
        if count is None or not 1 <= count <= 1000:
            raise _invalid("num_replicas must be an integer from 1 to 1000, or 'auto'")
        return count

    @model_validator(mode="after")
    def _consistent(self) -> VLMConfig:
        if self.autoscaling is not None and self.num_replicas != "auto":
            raise _invalid(
                "num_replicas must be 'auto' (or left out) when autoscaling is set", "num_replicas"
            )
        if self.max_ongoing_requests < self.max_batch_size:
            raise _invalid(
                "max_ongoing_requests must be at least max_batch_size, or batches never fill",
                "max_ongoing_requests",
            )
        return self

    def primary(self) -> BackendConfig:
        """The primary backend as a BackendConfig."""
        return BackendConfig(
            backend=self.backend,
            model=self.model,
            base_url=self.base_url,
            api_key=self.api_key,
            timeout_s=self.timeout_s,
        )

    def backends(self) -> list[BackendConfig]:
        """Primary backend followed by the fallback list, in the order they are tried."""
        return [self.primary(), *self.fallback]


class StorageConfig(_Model):
    """DuckDB, Parquet and thumbnail storage."""

    path: Path = Field(
        default=Path("data"),
        validate_default=True,
        description="Data directory; a relative path is relative to the config file.",
    )
    retention_days: int = Field(default=30, ge=0, le=36_500, description="0 keeps forever.")
    parquet_flush_interval_s: float = Field(
        default=30, ge=0.1, le=86_400, description="How often new rows go to Parquet."
    )
    thumbnail_quality: int = Field(default=85, ge=1, le=100, description="JPEG quality.")
    max_queued_saves: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Saves waiting for the writer; past it a save fails with StoreBusyError.",
    )
    node_resource: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description="Custom Ray resource of the node holding `path`; pins the event-store there.",
    )

    _resolve = field_validator("path")(_resolve_path)


class DiscoveryConfig(_Model):
    """Home Assistant MQTT discovery."""

    enabled: bool = Field(default=True, description="Publish discovery configs.")
    prefix: str = Field(default="homeassistant", max_length=200, description="Discovery prefix.")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _check_topic(value, "discovery prefix")


class TLSConfig(_Model):
    """TLS to the MQTT broker."""

    enabled: bool = Field(default=False, description="Connect with TLS.")
    ca_certs: Path | None = Field(default=None, description="CA bundle (null: system CAs).")
    certfile: Path | None = Field(default=None, description="Client certificate.")
    keyfile: Path | None = Field(default=None, description="Client key.")
    insecure: bool = Field(default=False, description="Skip hostname checks (testing only).")

    _resolve = field_validator("ca_certs", "certfile", "keyfile")(_resolve_path)

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if self.keyfile is not None and self.certfile is None:
            raise _invalid("keyfile needs certfile", "certfile")
        return self


class MQTTConfig(_Model):
    """The MQTT broker connection and what is published."""

    enabled: bool = Field(default=True, description="false: no client, no publishing.")
    host: str = Field(default="localhost", min_length=1, max_length=253, description="Broker.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port.")
    username: str | None = Field(default=None, max_length=256, description="Broker user.")
    password: SecretStr | None = Field(
        default=None, max_length=4096, description="Broker password, via ${ENV}."
    )
    topic_prefix: str = Field(default="liveobject", max_length=200, description="Topic root.")
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of event messages.")
    replay_window_s: float = Field(
        default=300, ge=0, le=30 * 86_400, description="Republish age limit; 0 drops."
    )
    discovery: DiscoveryConfig = Field(
        default_factory=DiscoveryConfig, description="Home Assistant discovery."
    )
    tls: TLSConfig = Field(default_factory=TLSConfig, description="TLS to the broker.")
    keepalive_s: int = Field(default=30, ge=5, le=65535, description="MQTT keepalive.")
    client_id: str | None = Field(default=None, max_length=128, description="null: generated.")
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT version to try first.")
    message_expiry_s: int | None = Field(
        default=None, ge=1, le=4_294_967_295, description="MQTT 5 expiry of event messages."
    )
    queue_size: int = Field(
        default=10_000, ge=1, le=10_000_000, description="Pending publishes kept in memory."
    )
    retry_interval_s: float = Field(
        default=30,
        ge=0.5,
        le=3600,
        description="Events left unsent (queue full, failed) are retried this often.",
    )
    ring_rate_per_min: int = Field(
        default=12,
        ge=1,
        le=6000,
        description="Ring commands accepted per camera and minute (burst as many); more drop.",
    )
    embedded_broker: bool = Field(
        default=False, description="Demo: start a broker when none answers."
    )

    _none_if_empty = field_validator("username", "password", "client_id", mode="before")(
        _empty_to_none
    )

    @field_validator("host", "username", "client_id")
    @classmethod
    def _no_control(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise _invalid("must not contain NUL or control characters")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _check_topic(value, "topic_prefix")

    @field_validator("qos", mode="before")
    @classmethod
    def _qos(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.strip() in ("0", "1", "2") else value

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class StreamConfig(_Model):
    """The live event stream `GET /api/v1/events/stream` (Server-Sent Events), per API replica."""

    heartbeat_s: float = Field(
        default=15, ge=1, le=300, description="A comment line when idle, so proxies keep it open."
    )
    poll_s: float = Field(
        default=0.5, ge=0.05, le=10, description="How often a replica reads newly stored events."
    )
    queue_size: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Events queued per client; when full it is told and cut off (resumes).",
    )
    max_clients: int = Field(
        default=100, ge=1, le=10_000, description="Open streams per replica; more get 503."
    )
    replay_max: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Missed events sent per connection on Last-Event-ID; more: resume again.",
    )
    max_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        le=1024**3,
        description="Bytes per connection, then it ends and resumes (bounds proxy buffers).",
    )


class APIConfig(_Model):
    """The HTTP API (Serve FastAPI ingress)."""

    host: str = Field(default="0.0.0.0", min_length=1, max_length=253, description="Bind host.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    base_url: str = Field(
        default="http://localhost:8000",
        max_length=2048,
        description="Public URL in links; env API_BASE_URL overrides.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        max_length=4096,
        description="Bearer key (16+ chars) for every route and health details.",
    )
    thumbnail_url_ttl_s: int = Field(
        default=86_400, ge=60, le=365 * 86_400, description="Signed thumbnail URL lifetime."
    )
    ring_rate_per_min: int = Field(
        default=12,
        ge=1,
        le=6000,
        description="Ring requests accepted per camera and minute (burst as many); more get 429.",
    )
    stream: StreamConfig = Field(
        default_factory=StreamConfig, description="Live event stream (Server-Sent Events)."
    )
    narrative_timeout_s: float = Field(
        default=15,
        gt=0,
        le=120,
        description="Deadline of a summary's narrative=true; then the plain text is used.",
    )

    _none_if_empty = field_validator("api_key", mode="before")(_empty_to_none)

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # the key signs thumbnail links (through a derived key): a short one is guessable
        if value is not None and len(value.get_secret_value()) < MIN_API_KEY_LENGTH:
            raise _invalid(
                f"api_key must be at least {MIN_API_KEY_LENGTH} characters; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        checked = _check_base_url(value)
        assert checked is not None
        return checked

    def effective_base_url(self) -> str:
        """The base URL for links: env API_BASE_URL, else the configured one."""
        return resolve_base_url(self.base_url)


class CorrelationConfig(_Model):
    """Cross-camera correlation of events."""

    window_s: float = Field(
        default=10, ge=0, le=3600, description="Events starting this close share a group; 0: off."
    )


class ShutdownConfig(_Model):
    """How a stop (Ctrl-C, SIGTERM, `liveobject stop`) drains the pipeline."""

    drain_timeout_s: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="Time to finish queued and in-flight events; then fallback text is stored.",
    )


class Config(_Model):
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

    def camera(self, camera_id: str) -> CameraConfig:
        """The camera with this id (KeyError if none)."""
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(camera_id)

    def secret_values(self) -> list[str]:
        """Every secret in this config (for `pipelines.redact.redact`)."""
        secrets = [self.mqtt.password, self.api.api_key]
        secrets += [backend.api_key for backend in self.vlm.backends()]
        values = [s.get_secret_value() for s in secrets if s is not None]
        for camera in self.cameras:
            values += url_password(camera.source)
        return [v for v in values if v]
