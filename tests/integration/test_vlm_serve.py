"""The `vlm` Serve app with the tiny model: concurrent requests are batched and map back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines.config import VLMConfig
from pipelines.vlm.types import VLMRequest, VLMResult
from serve_apps.vlm import batch_size_fn, build_vlm_app, deployment_options, images_in_batch
from tests.support.media import jpeg

pytestmark = pytest.mark.integration


def frame(i: int) -> bytes:
    return jpeg(((40 * i) % 256, (90 * i) % 256, 120), (80, 60), stripe=False, quality=75)


def test_images_in_batch_counts_frames_and_lets_one_request_through() -> None:
    one, three = (
        VLMRequest("a", "A", (b"x",)),
        VLMRequest("b", "B", (b"x", b"y", b"z")),
    )
    assert images_in_batch([three]) == 1
    assert images_in_batch([one, three, VLMRequest("c", "C", ())]) == 5
    assert images_in_batch([one, three, VLMRequest("c", "C", ())], floor=3) == 9


def test_a_batch_holds_max_batch_size_requests_of_one_to_three_frames() -> None:
    def queued(frames: int) -> Any:
        return SimpleNamespace(request=VLMRequest("a", "A", (b"x",) * frames))

    config = VLMConfig(max_batch_size=8)
    size, budget = batch_size_fn(config), config.batch_images()
    assert budget == 24
    assert size([queued(1 + i % 3) for i in range(8)]) == 24  # eight fill it
    assert size([queued(1) for _ in range(9)]) > budget  # a ninth does not fit
    assert size([queued(9), queued(9), queued(9)]) == 27  # many frames: the images bound it
    assert size([queued(40)]) == 1  # alone, always
    assert VLMConfig(max_batch_size=4, max_batch_images=2).batch_images() == 4
    odd = VLMConfig(max_batch_size=8, max_batch_images=20)  # not a multiple: still 8 at most
    assert batch_size_fn(odd)([queued(1) for _ in range(9)]) > odd.batch_images()
    single = VLMConfig(max_batch_size=1)
    assert batch_size_fn(single)([queued(1), queued(1)]) > single.batch_images()


def test_deployment_options_from_config() -> None:
    opts = deployment_options(VLMConfig(num_gpus=0.5, max_batch_size=32, max_ongoing_requests=40))
    assert opts["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.5}
    assert opts["max_ongoing_requests"] == 64 and opts["num_replicas"] == 1
    auto = deployment_options(
        VLMConfig.model_validate(
            {"num_replicas": "auto", "autoscaling": {"min_replicas": 1, "max_replicas": 3}}
        )
    )
    assert "num_replicas" not in auto and auto["autoscaling_config"]["max_replicas"] == 3


def test_concurrent_requests_are_batched(ray_session: object, tiny_model: Path) -> None:
    from ray import serve

    model = tiny_model
    config = VLMConfig(
        model=str(model),
        num_cpus=0.5,
        max_batch_size=8,
        batch_wait_timeout_s=0.2,
        max_new_tokens=8,
    )
    handle = serve.run(build_vlm_app(config), name="vlm", route_prefix=None)
    try:
        requests = [
            VLMRequest(f"cam{i % 3}", f"Camera {i % 3}", (frame(i),), request_id=f"req-{i}")
            for i in range(16)
        ]

        async def fire() -> list[VLMResult]:
            return list(await asyncio.gather(*(handle.remote(r) for r in requests)))

        results = asyncio.run(fire())
        assert [r.request_id for r in results] == [r.request_id for r in requests]
        for result in results:
            assert result.provider_used == f"transformers:{Path(model).name}"  # not a path
            assert 0 <= result.confidence <= 100 and result.analysis_mode == "single_frame"
        stats = handle.stats.remote().result(timeout_s=30)
        assert stats["requests"] == 16 and stats["images"] == 16
        assert 1 < stats["max_batch_seen"] <= 8
        assert stats["batches"] < stats["requests"]
        assert stats["engine"]["fallbacks"] == 0
        # per-batch metrics: tokens/s from real generated tokens, queue wait from arrivals
        assert 0 < stats["generated_tokens"] <= 16 * config.max_new_tokens
        assert stats["tokens_per_s"] > 0 and stats["generate_ms_total"] > 0
        # requests waited for their batch to fill (batch_wait_timeout_s) or for the one before
        assert 0 < stats["queue_wait_ms_avg"] <= stats["queue_wait_ms_max"]
        assert stats["metrics_enabled"] is True
    finally:
        serve.delete("vlm")
