"""A VLM provider per camera (#22): named backend chains in `vlm.backends`, chosen by
`cameras[].vlm`; the config's errors, the router that splits a batch by chain, and each chain's
own deadline and budget."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from pipelines.config import BackendConfig, ConfigError, load_config
from pipelines.vlm.budget import Budgets
from pipelines.vlm.engine import VLMEngine
from pipelines.vlm.parsing import ParsedOutput
from pipelines.vlm.registry import Backend
from pipelines.vlm.router import VLMRouter
from pipelines.vlm.types import VLMRequest

CONFIG = """\
cameras:
  - id: doorbell
    source: rtsp://cam/door
    vlm: cloud
  - id: garden
    source: rtsp://cam/garden
vlm:
  model: local-model
  deadline_s: 30
  backends:
    cloud:
      backend: openai
      model: big-cloud-model
      base_url: https://vlm.example/v1
      api_key: cloud-secret-key-123
      deadline_s: 8
      max_per_hour: 60
      fallback:
        - {backend: transformers, model: local-model}
"""


def test_a_camera_names_its_chain_and_each_chain_has_its_backends_and_deadline(
    tmp_path: Path,
) -> None:
    path = tmp_path / "liveobject.yaml"
    path.write_text(CONFIG)
    config = load_config(path)
    vlm = config.vlm
    assert config.camera("doorbell").vlm == "cloud" and config.camera("garden").vlm is None
    assert [b.model for b in vlm.chain_of("cloud")] == ["big-cloud-model", "local-model"]
    assert [b.model for b in vlm.chain_of(None)] == ["local-model"]
    assert (vlm.deadline_of("cloud"), vlm.deadline_of(None)) == (8, 30)
    assert "cloud-secret-key-123" in config.secret_values()  # redacted like every secret


def test_a_missing_chain_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "liveobject.yaml"
    path.write_text(CONFIG.replace("vlm: cloud", "vlm: clowd"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert f"{path}:4:" in text, text  # the camera's `vlm:` line
    assert "no backend chain named 'clowd'" in text and "have: cloud" in text


@pytest.mark.parametrize("name", ["default", "Cloud", "9lives", "x" * 40])
def test_chain_names_are_plain(tmp_path: Path, name: str) -> None:
    path = tmp_path / "liveobject.yaml"
    path.write_text(
        CONFIG.replace("vlm: cloud", f"vlm: {name}").replace("    cloud:", f"    {name}:")
    )
    with pytest.raises(ConfigError, match="backend chain name"):
        load_config(path)


class Named(Backend):
    """Answers at once with its own name; records each batch it got."""

    def __init__(self, model: str) -> None:
        super().__init__(BackendConfig(backend="transformers", model=model))
        self.batches: list[list[str]] = []

    async def describe(self, requests: Sequence[VLMRequest]) -> list[ParsedOutput | Exception]:
        self.batches.append([r.request_id for r in requests])
        return [ParsedOutput(f"seen by {self.model}", ("person",), 80, 80) for _ in requests]


def _request(n: int, chain: str | None) -> VLMRequest:
    return VLMRequest("cam", "Cam", (b"jpeg",), request_id=f"r{n}", chain=chain)


def test_a_mixed_batch_is_split_by_chain_and_answered_in_order() -> None:
    local, cloud = Named("local"), Named("cloud")
    router = VLMRouter({None: VLMEngine([local]), "cloud": VLMEngine([cloud])})
    chains = [None, "cloud", None, "cloud", "gone"]  # "gone": a chain this replica lacks
    requests = [_request(n, chain) for n, chain in enumerate(chains)]
    results = asyncio.run(router.describe_batch(requests))
    assert [r.request_id for r in results] == ["r0", "r1", "r2", "r3", "r4"]
    assert [r.provider_used for r in results] == [
        "abstract:local",
        "abstract:cloud",
        "abstract:local",
        "abstract:cloud",
        "abstract:local",
    ]
    assert local.batches == [["r0", "r2", "r4"]] and cloud.batches == [["r1", "r3"]]
    assert set(router.stats()["chains"]) == {"cloud"}


def test_a_chain_budget_is_shared_by_its_cameras_and_the_global_one_by_all() -> None:
    spec = (("cloud", 2, ("door", "gate")), ("", 3, ("door", "gate", "yard")))
    budgets = Budgets(spec, now=0.0)
    granted = [budgets.take(camera, 0.0) for camera in ("door", "gate", "door", "yard", "yard")]
    # door and gate have one cloud call each; the global budget has 3 (one share per camera)
    assert granted == [True, True, False, True, False]
    stats = budgets.stats()
    assert stats["chains"]["cloud"]["granted"] == {"door": 1, "gate": 1}
    assert stats["granted"] == {"door": 1, "gate": 1, "yard": 1}


def test_a_refusal_by_one_budget_spends_nothing_of_the_others() -> None:
    budgets = Budgets((("cloud", 4, ("door",)), ("", 2, ("door", "yard"))), now=0.0)
    # the global budget (a share of 1 each) refuses door's second call: cloud keeps 3 of its 4
    assert [budgets.take("door", 0.0) for _ in range(4)] == [True, False, False, False]
    cloud = budgets.stats()["chains"]["cloud"]
    assert cloud["granted"] == {"door": 1} and cloud["shares"]["door"] == 3.0
    assert budgets.stats()["refused"] == {"door": 3, "yard": 0}


def test_the_spec_of_a_config_names_each_chains_cameras_and_the_global_budget(
    tmp_path: Path,
) -> None:
    from pipelines.vlm.budget import budget_spec

    path = tmp_path / "liveobject.yaml"
    path.write_text(CONFIG)
    assert budget_spec(load_config(path)) == (("cloud", 60, ("doorbell",)),)
    path.write_text(CONFIG.replace("  deadline_s: 30\n", "  deadline_s: 30\n  max_per_hour: 10\n"))
    spec = budget_spec(load_config(path))
    assert spec == (("cloud", 60, ("doorbell",)), ("", 10, ("doorbell", "garden")))
    path.write_text(CONFIG.replace("      max_per_hour: 60\n", ""))
    assert budget_spec(load_config(path)) is None


def test_a_backend_two_chains_list_is_built_once(tmp_path: Path) -> None:
    path = tmp_path / "liveobject.yaml"
    path.write_text(CONFIG)
    router = VLMRouter.from_config(load_config(path).vlm)
    default, cloud = router.engines[None].backends, router.engines["cloud"].backends
    assert [b.name for b in cloud] == ["openai:big-cloud-model", "transformers:local-model"]
    assert cloud[1] is default[0]  # the cloud chain's fallback is the default chain's model
    assert len(router.backends) == 2


def test_a_refusal_names_the_budget_that_refused() -> None:
    chain_first = Budgets((("cloud", 1, ("door",)), ("", 4, ("door", "yard"))), now=0.0)
    assert [chain_first.refusal("door", 0.0) for _ in range(2)] == [None, "cloud"]
    global_first = Budgets((("cloud", 4, ("door",)), ("", 1, ("door",))), now=0.0)
    assert [global_first.refusal("door", 0.0) for _ in range(2)] == [None, "global"]
