"""The `mqtt` section: the broker connection, TLS and Home Assistant discovery."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from pipelines.config.base import StrictModel
from pipelines.config.validators import _CONTROL, _empty_to_none, _invalid, _resolve_path
from pipelines.config.validators import check_topic_prefix as _check_topic


class DiscoveryConfig(StrictModel):
    """Home Assistant MQTT discovery."""

    enabled: bool = Field(default=True, description="Publish discovery configs.")
    prefix: str = Field(default="homeassistant", max_length=200, description="Discovery prefix.")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _check_topic(value, "discovery prefix")


class TLSConfig(StrictModel):
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


class MQTTConfig(StrictModel):
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
    max_inflight: int = Field(
        default=100,
        ge=1,
        le=65535,
        description="QoS 1/2 messages sent and not yet acknowledged; an MQTT 5 broker's "
        "Receive Maximum caps it (mosquitto's default: 20).",
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
