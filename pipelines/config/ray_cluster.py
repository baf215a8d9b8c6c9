"""The `ray` section: where Ray runs and the runtime_env of a joined cluster."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from pipelines.config.base import StrictModel
from pipelines.config.validators import _empty_to_none, _invalid


class RuntimeEnvConfig(StrictModel):
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


class RayConfig(StrictModel):
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
        description="A camera whose ingest actor is not placed within this is `unplaceable`.",
    )
    cameras_per_actor: int = Field(
        default=8,
        ge=1,
        le=256,
        description=(
            "Cameras hosted by one ingest actor process (each on its own decode thread); "
            "a group reserves the sum of its cameras' num_cpus."
        ),
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
