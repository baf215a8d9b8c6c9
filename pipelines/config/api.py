"""The `api` section: the HTTP API and its live event stream."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, field_validator

from pipelines.config.base import StrictModel
from pipelines.config.validators import _check_base_url, _empty_to_none, _invalid
from pipelines.events import resolve_base_url

MIN_API_KEY_LENGTH = 16  # api.api_key: shorter keys are a config error


class StreamConfig(StrictModel):
    """The live event stream `GET /api/v1/events/stream` (Server-Sent Events), per API replica."""

    heartbeat_s: float = Field(
        default=15, ge=1, le=300, description="A comment line when idle, so proxies keep it open."
    )
    poll_s: float = Field(
        default=0.5,
        ge=0.05,
        le=10,
        description="How long a replica's read of the store waits for the next save (long-poll).",
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


def is_loopback(host: str) -> bool:
    """Whether a bind host is this machine only: `localhost` or a loopback address (a name
    such as 127.example.com is not: it can resolve anywhere)."""
    host = host.strip().lower().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class APIConfig(StrictModel):
    """The HTTP API (Serve FastAPI ingress)."""

    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=253,
        description="Bind host; beyond loopback it needs api_key or allow_unauthenticated.",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Serve a non-loopback host without api_key (anyone on the network reads all).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Host names accepted besides loopback and base_url's (DNS-rebinding guard).",
    )
    docs: bool = Field(
        default=False,
        description="Serve /docs and /redoc (they load scripts from a CDN); /openapi.json always.",
    )
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
    thumbnail_token_epoch: int = Field(
        default=0,
        ge=0,
        le=2**31,
        description="Raise it (and apply) to revoke every thumbnail link handed out so far.",
    )
    ring_rate_per_min: int = Field(
        default=12,
        ge=1,
        le=6000,
        description="Ring requests accepted per camera and minute (burst as many); more get 429.",
    )
    heavy_reads_per_min: int = Field(
        default=60,
        ge=1,
        le=60_000,
        description=(
            "Summaries and text searches (`q`) answered per minute, all callers together "
            "(burst as many); more get 429, so reads cannot crowd out the cameras' saves."
        ),
    )
    narratives_per_min: int = Field(
        default=6,
        ge=1,
        le=6000,
        description="summary?narrative=true requests a minute (each asks a remote LLM); more: 429",
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

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        names = []
        for name in value:
            bare = name.strip().lower().strip("[]")
            if not (0 < len(bare) <= 253) or any(c in bare for c in "/@ \t[]"):
                raise _invalid(f"allowed_hosts: {name[:40]!r} is not a host name")
            if bare.count(":") == 1:
                raise _invalid(f"allowed_hosts: {name[:40]!r}: a host name without a port")
            names.append(bare)
        return names

    def exposure_refusal(self) -> str | None:
        """Why binding `host` is refused (None when it is not): beyond loopback the API needs
        `api_key`, or `allow_unauthenticated: true` said explicitly."""
        if is_loopback(self.host) or self.api_key is not None or self.allow_unauthenticated:
            return None
        return (
            f"api.host {self.host} listens beyond this machine and api.api_key is not set: "
            "anyone on the network could read every event and thumbnail and ring the doorbell. "
            "Set api.api_key, or api.host: 127.0.0.1, or api.allow_unauthenticated: true"
        )

    def link_key(self) -> str | None:
        """What thumbnail links are signed with: the API key, bound to thumbnail_token_epoch
        (a new epoch invalidates every earlier link; the API key itself stays)."""
        if self.api_key is None:
            return None
        key = self.api_key.get_secret_value()
        return (
            key
            if self.thumbnail_token_epoch == 0
            else f"{key}\x00epoch:{self.thumbnail_token_epoch}"
        )

    def effective_base_url(self) -> str:
        """The base URL for links: env API_BASE_URL, else the configured one."""
        return resolve_base_url(self.base_url)
