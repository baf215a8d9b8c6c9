"""Noise and cost controls through real camera actors, the event-store actor and the tiny-model
`vlm` Serve app: zones, near-duplicate reuse, per-camera budgets and the fair global budget.

VLM calls are counted twice: by the camera (`camera_status()["vlm_calls"]`) and by the deployment
itself (`stats()["requests"]`), which only sees what really reached it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import Config
from pipelines.events import Event
from pipelines.samples import generate_sample_video, generate_scene_video
from tests.support.ray_cluster import camera_status
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

NAMESPACE = "noise-tests"
VLM = {
    "model": "",  # the tiny model's path
    "num_cpus": 0.5,
    "max_batch_size": 8,
    "batch_wait_timeout_s": 0.2,
    "max_new_tokens": 8,
    "image_size": 96,
}
BAND = {"name": "band", "polygon": [[0, 0.2], [1, 0.2], [1, 0.6], [0, 0.6]]}
BOTTOM = {"name": "bottom", "polygon": [[0, 0.85], [1, 0.85], [1, 1], [0, 1]]}


class Rig:
    """The module's store and VLM app; starts camera actors and kills them after each test."""

    def __init__(self, storage: Path, model: str, store: Any) -> None:
        self.storage, self.model, self.store = storage, model, store
        self.actors: list[Any] = []

    def config(self, cameras: list[dict[str, Any]], **vlm: Any) -> Config:
        return Config.model_validate(
            {
                "ray": {"namespace": NAMESPACE},
                "cameras": cameras,
                "vlm": {**VLM, "model": self.model, **vlm},
                "storage": {"path": str(self.storage)},
                "mqtt": {"enabled": False},
            }
        )

    def run(self, config: Config, timeout: float = 120) -> dict[str, dict[str, Any]]:
        """Start a camera actor per camera, wait until all are done; their final status."""
        from cluster.actors.ingest import start_camera

        handles = {}
        for camera in config.cameras:
            handles[camera.id] = start_camera(config, camera.id)
            self.actors.append(handles[camera.id])
        return {
            cid: wait_for(lambda a=a: (s := camera_status(a))["done"] and s, timeout, f"{cid} done")
            for cid, a in handles.items()
        }

    def events(self, camera_id: str) -> list[Event]:
        import ray

        events, _ = ray.get(self.store.query.remote(camera_id=camera_id, limit=500))
        return sorted(events, key=lambda e: e.timestamp)

    def vlm_requests(self) -> int:
        from ray import serve

        handle = serve.get_deployment_handle("VLM", app_name="vlm")
        return int(handle.stats.remote().result(timeout_s=30)["requests"])

    def kill_cameras(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors.clear()


@pytest.fixture(scope="module")
def rig(
    ray_session: object, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[Rig]:
    import ray
    from ray import serve

    from cluster.actors.store import get_store
    from pipelines.config import VLMConfig
    from serve_apps.vlm import build_vlm_app

    root = tmp_path_factory.mktemp("noise")
    model = str(tiny_model)
    serve.run(
        build_vlm_app(VLMConfig.model_validate({**VLM, "model": model})),
        name="vlm",
        route_prefix=None,
    )
    helper = Rig(root / "data", model, None)
    helper.store = get_store(helper.config([{"id": "unused", "source": "udp://127.0.0.1:9"}]))
    try:
        yield helper
    finally:
        helper.kill_cameras()
        ray.kill(helper.store, no_restart=True)
        serve.delete("vlm")


@pytest.fixture
def cams(rig: Rig) -> Iterator[Rig]:
    yield rig
    rig.kill_cameras()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("noise-clips")
    return {
        # the same scene twice (one object crossing), then a new object joins it
        "repeat": generate_scene_video(
            folder / "repeat.mp4", [(1, 3, 1), (5, 7, 1), (9, 11, 2)], seconds=13
        ),
        "burst": generate_sample_video(
            folder / "burst.mp4",
            seconds=10,
            motion_windows=[(1 + 2 * k, 2 + 2 * k) for k in range(4)],
        ),
        "noisy": generate_sample_video(
            folder / "noisy.mp4",
            seconds=11,
            motion_windows=[(0.5 + 1.2 * k, 1.2 + 1.2 * k) for k in range(8)],
            seed=3,
        ),
        "quiet": generate_sample_video(
            folder / "quiet.mp4", seconds=13, motion_windows=[(9, 11)], seed=1
        ),
    }


def test_same_scene_is_reused_and_a_changed_scene_calls_the_vlm(
    cams: Rig, clips: dict[str, Path]
) -> None:
    before = cams.vlm_requests()
    config = cams.config(
        [
            {"id": "repeat", "source": str(clips["repeat"]), "zones": [BAND]},
            {"id": "zoned_out", "source": str(clips["repeat"]), "zones": [BOTTOM]},
        ]
    )
    final = cams.run(config)
    first, second, third = cams.events("repeat")
    # the repeated scene: one VLM call, the second event reuses the first's description
    assert first.provider_used is not None and first.provider_used.startswith("transformers:")
    assert second.provider_used == "reused" and second.reused_from == first.event_id
    assert (second.description, second.objects_detected, second.confidence) == (
        first.description,
        first.objects_detected,
        first.confidence,
    )
    assert second.confidence_source == first.confidence_source == "tokens"
    # the scene with a new object is never suppressed
    assert third.provider_used == first.provider_used and third.reused_from is None
    st = final["repeat"]
    assert (st["vlm_calls"], st["reused"]) == (2, 1), st
    assert cams.vlm_requests() - before == 2  # what the deployment itself received
    # zones: recorded on every event and queryable; motion in no zone starts nothing
    assert all(e.zones == ("band",) for e in (first, second, third))
    zoned_out = final["zoned_out"]
    assert zoned_out["frames"] == 65 and zoned_out["segments"] == 0
    assert cams.events("zoned_out") == []
    import ray

    by_zone, _ = ray.get(cams.store.query.remote(zone="band", camera_id="repeat"))
    assert {e.event_id for e in by_zone} == {first.event_id, second.event_id, third.event_id}


def test_camera_budget_throttles_the_third_event_of_a_burst(
    cams: Rig, clips: dict[str, Path]
) -> None:
    before = cams.vlm_requests()
    config = cams.config(
        [
            {
                "id": "burst",
                "source": str(clips["burst"]),
                "vlm_max_per_hour": 2,
                "motion": {"end_after_s": 0.5},
            }
        ],
        dedupe={"enabled": False},  # four identical crossings: budget, not reuse, decides
    )
    st = cams.run(config)["burst"]
    events = cams.events("burst")
    assert len(events) == 4
    described, throttled = events[:2], events[2:]
    assert all(e.provider_used is not None for e in described)
    for event in throttled:
        assert event.provider_used is None and event.description == "Motion detected on Burst"
        assert event.confidence == 0 and event.confidence_source == "none"
    assert (st["vlm_calls"], st["throttled"], st["throttled_camera"]) == (2, 2, 2), st
    assert cams.vlm_requests() - before == 2


def test_noisy_camera_cannot_take_the_quiet_cameras_share(
    cams: Rig, clips: dict[str, Path]
) -> None:
    import ray

    from pipelines.naming import BUDGET_ACTOR

    config = cams.config(
        [
            {
                "id": "noisy",
                "source": str(clips["noisy"]),
                "detect_fps": 5,
                "motion": {"end_after_s": 0.3},
            },
            {"id": "quiet", "source": str(clips["quiet"])},
        ],
        max_per_hour=4,  # a share of 2 each
        dedupe={"enabled": False},
    )
    final = cams.run(config)
    noisy, quiet = cams.events("noisy"), cams.events("quiet")
    assert len(noisy) >= 6 and len(quiet) == 1
    # the quiet camera's event is described (within the deadline, not the fallback text)...
    assert quiet[0].provider_used is not None and quiet[0].confidence_source == "tokens"
    # ...while the noisy one got its share and no more
    assert sum(e.provider_used is not None for e in noisy) == 2
    assert final["noisy"]["throttled_global"] == len(noisy) - 2
    assert final["quiet"]["throttled"] == 0
    budget = ray.get_actor(BUDGET_ACTOR, namespace=NAMESPACE)
    stats = ray.get(budget.stats.remote(), timeout=30)
    assert stats["granted"] == {"noisy": 2, "quiet": 1}
    assert stats["refused"]["noisy"] == len(noisy) - 2
