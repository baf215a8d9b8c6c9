"""Typed configuration: one pydantic model per YAML section, loaded with file:line errors.

`load_config` composes the YAML node tree (so every key keeps its line number), substitutes
`${VAR}` / `${VAR:-default}` from the environment into string values, validates with the
models (`extra="forbid"`: unknown keys are errors) and raises `ConfigError` whose lines
read `FILE:LINE: field.path: message`. Messages never contain secret values or raw control
characters: input values are not echoed, and every value taken from the environment is
redacted from the messages as a second line of defence.

The models live in `pipelines.config.models` (their shared checks in
`pipelines.config.validators`) and the loader in `pipelines.config.loading`; this package
re-exports the public names of both.
"""

from pipelines.config.loading import (
    ConfigError,
    Loc,
    check_config_file,
    expand_env,
    load_config,
    parse_config_text,
)
from pipelines.config.models import (
    CAMERA_ID_RE,
    ZONE_NAME_RE,
    APIConfig,
    AutoscalingConfig,
    BackendConfig,
    CameraConfig,
    Config,
    CorrelationConfig,
    DedupeConfig,
    DiscoveryConfig,
    MotionConfig,
    MQTTConfig,
    RayConfig,
    SourceType,
    StorageConfig,
    TLSConfig,
    VLMConfig,
    ZoneConfig,
)

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
