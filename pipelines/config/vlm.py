"""The `vlm` section: the VLM Serve deployment, its backends, autoscaling and dedupe."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from pipelines.config.base import StrictModel
from pipelines.config.validators import _check_base_url, _empty_to_none, _invalid, _resolve_path


class AutoscalingConfig(StrictModel):
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


class BackendConfig(StrictModel):
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
    revision: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="transformers: Hub revision to load (pin a commit sha); null: default branch.",
    )

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


class ChainConfig(BackendConfig):
    """A named backend chain `vlm.backends.NAME` for the cameras that choose it (`vlm: NAME`).

    A backend, its fallbacks, and optionally its own deadline and budget."""

    fallback: list[BackendConfig] = Field(
        default_factory=list, max_length=8, description="Further backends, tried in order."
    )
    deadline_s: float | None = Field(
        default=None, gt=0, le=3600, description="Per event on this chain; null: vlm.deadline_s."
    )
    max_per_hour: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="VLM calls per hour for the cameras on this chain, shared fairly; null: off.",
    )

    def chain(self) -> list[BackendConfig]:
        """Its backend followed by its fallbacks, in the order they are tried."""
        return [_primary_of(self), *self.fallback]


def _primary_of(config: BackendConfig) -> BackendConfig:
    """The BackendConfig fields of a section that also holds other settings."""
    return BackendConfig(
        backend=config.backend,
        model=config.model,
        base_url=config.base_url,
        api_key=config.api_key,
        timeout_s=config.timeout_s,
        revision=config.revision,
    )


CHAIN_NAME = r"^[a-z][a-z0-9_-]{0,31}$"


class DedupeConfig(StrictModel):
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
    revision: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="transformers: Hub revision to load (pin a commit sha); null: default branch.",
    )
    max_batch_size: int = Field(
        default=8, ge=1, le=256, description="Requests (events) in one batched generate at most."
    )
    max_batch_images: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Image budget of one batch; null: 3 times max_batch_size. A request counts its "
        "frames, and at least max_batch_images / max_batch_size.",
    )
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
    backends: dict[str, ChainConfig] = Field(
        default_factory=dict,
        max_length=16,
        description=(
            "Named backend chains a camera can choose with `cameras[].vlm` (e.g. `cloud` for the "
            "doorbell); the section's own backend and `fallback` are the chain of the others."
        ),
    )

    @field_validator("backends")
    @classmethod
    def _chain_names(cls, chains: dict[str, ChainConfig]) -> dict[str, ChainConfig]:
        import re

        for name in chains:
            if not re.match(CHAIN_NAME, name) or name in ("default", "global"):
                raise _invalid(
                    f"backend chain name {name[:40]!r}: lowercase letters, digits, _ and -, "
                    "starting with a letter, at most 32, not 'default' or 'global'",
                    name,
                )
        return chains

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

    def batch_images(self) -> int:
        """The image budget of one batch (`max_batch_images`, default 3 times max_batch_size)."""
        if self.max_batch_images is not None:
            return max(self.max_batch_images, self.max_batch_size)
        return 3 * self.max_batch_size

    def primary(self) -> BackendConfig:
        """The primary backend as a BackendConfig."""
        return _primary_of(self)

    def default_chain(self) -> list[BackendConfig]:
        """Primary backend followed by the fallback list, in the order they are tried (the
        chain of every camera without `vlm`)."""
        return [self.primary(), *self.fallback]

    def chain_of(self, name: str | None) -> list[BackendConfig]:
        """The backends of a camera's chain (`cameras[].vlm`; None: the default chain)."""
        return self.default_chain() if name is None else self.backends[name].chain()

    def deadline_of(self, name: str | None) -> float:
        """The per-event deadline of a chain: its own, else `deadline_s`."""
        own = self.backends[name].deadline_s if name is not None else None
        return own if own is not None else self.deadline_s

    def all_backends(self) -> list[BackendConfig]:
        """Every backend of every chain (secrets, narratives)."""
        return [*self.default_chain(), *(b for c in self.backends.values() for b in c.chain())]
