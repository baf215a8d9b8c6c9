"""Typed configuration: one pydantic model per YAML section, loaded with file:line errors.

`load_config` composes the YAML node tree (so every key keeps its line number), substitutes
`${VAR}` / `${VAR:-default}` from the environment into string values, validates with the
models (`extra="forbid"`: unknown keys are errors) and raises `ConfigError` whose lines
read `FILE:LINE: field.path: message`. Messages never contain secret values or raw control
characters: input values are not echoed, and every value taken from the environment is
redacted from the messages as a second line of defence.

The models live one module per section (`pipelines.config.cameras`, `.vlm`, `.mqtt`, ...)
over the strict base in `pipelines.config.base`, with `Config`, the whole file, in
`pipelines.config.root`; their shared checks are in `pipelines.config.validators` and the loader
in `pipelines.config.loading`. This package re-exports the public names of all of them.
"""

from pipelines.config.api import APIConfig
from pipelines.config.cameras import CAMERA_ID_RE, CameraConfig
from pipelines.config.correlation import CorrelationConfig
from pipelines.config.loading import (
    ConfigError,
    Loc,
    check_config_file,
    expand_env,
    load_config,
    parse_config_text,
)
from pipelines.config.motion import MotionConfig
from pipelines.config.mqtt import DiscoveryConfig, MQTTConfig, TLSConfig
from pipelines.config.ray_cluster import RayConfig
from pipelines.config.root import Config
from pipelines.config.storage import StorageConfig
from pipelines.config.vlm import AutoscalingConfig, BackendConfig, DedupeConfig, VLMConfig
from pipelines.config.zones import ZONE_NAME_RE, ZoneConfig
from pipelines.events import SourceType

__all__ = [
    "CAMERA_ID_RE",
    "ZONE_NAME_RE",
    "APIConfig",
    "AutoscalingConfig",
    "BackendConfig",
    "CameraConfig",
    "Config",
    "ConfigError",
    "CorrelationConfig",
    "DedupeConfig",
    "DiscoveryConfig",
    "Loc",
    "MQTTConfig",
    "MotionConfig",
    "RayConfig",
    "SourceType",
    "StorageConfig",
    "TLSConfig",
    "VLMConfig",
    "ZoneConfig",
    "check_config_file",
    "expand_env",
    "load_config",
    "parse_config_text",
]
