"""Camera actors on the shared Ray cluster: faults, live streams, redaction, correlation,
doorbell rings and flow control, with the real event-store actor and the tiny-model `vlm` app.

The `vlm` app batches with a 1 s wait, so each VLM call takes at least about a second: slow
enough that a camera with a short queue must merge motion, fast enough for the other tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import Config
from pipelines.events import Event
from pipelines.samples import generate_sample_video
from tests.support.network import free_port, free_udp_port
from tests.support.ray_cluster import camera_status, ray_logs
from tests.support.streams import TSServer
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.heavy(60)]

NAMESPACE = "cam-tests"
FLOW_WINDOWS = [(1.0 + 2 * k, 1.8 + 2 * k) for k in range(19)]  # the flow clip's motion
VLM = {
    "model": "",  # filled with the tiny model's path
    "num_cpus": 0.5,
    "max_batch_size": 8,
    "batch_wait_timeout_s": 1.0,
    "max_new_tokens": 8,
    "image_size": 96,
}


# ---------------------------------------------------------------- helpers


def make_config(storage: Path, cameras: list[dict[str, Any]], model: str) -> Config:
    return Config.model_validate(
        {
            "ray": {"namespace": NAMESPACE},
            "cameras": cameras,
            "vlm": {**VLM, "model": model},
            "storage": {"path": str(storage)},
            "mqtt": {"enabled": False},
            # 5 s, not 2: two camera actors started together may begin decoding a few
            # seconds apart on a busy machine (seen: 2.3 s under four pytest workers)
            "correlation": {"window_s": 5},
        }
    )


class Cluster:
    """The module's store and VLM; starts camera actors and kills them all at teardown."""

    def __init__(self, storage: Path, model: str, store: Any) -> None:
        self.storage, self.model, self.store = storage, model, store
        self.actors: list[Any] = []

    def config(self, cameras: list[dict[str, Any]]) -> Config:
        return make_config(self.storage, cameras, self.model)

    def start(self, config: Config) -> dict[str, Any]:
        from cluster.actors.ingest import start_camera

        handles = {}
        for camera in config.cameras:
            handle = start_camera(config, camera.id)
            self.actors.append(handle)
            handles[camera.id] = handle
        return handles

    def events(self, camera_id: str) -> list[Event]:
        import ray

        events, _cursor = ray.get(self.store.query.remote(camera_id=camera_id, limit=500))
        return list(events)

    def kill_cameras(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors.clear()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "early": generate_sample_video(folder / "early.mp4", seconds=6, motion_windows=[(1, 3)]),
        "late": generate_sample_video(
            folder / "late.mp4", seconds=13, motion_windows=[(9, 11)], seed=1
        ),
        "loop": generate_sample_video(folder / "loop.mp4", seconds=4, motion_windows=[(1, 2.5)]),
        "flow": generate_sample_video(
            folder / "flow.mp4", seconds=40, motion_windows=FLOW_WINDOWS, seed=2
        ),
    }


@pytest.fixture(scope="module")
def cluster(
    ray_session: object, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[Cluster]:
    import ray
    from ray import serve

    from cluster.actors.store import get_store
    from pipelines.config import VLMConfig
    from serve_apps.vlm import build_vlm_app

    root = tmp_path_factory.mktemp("camera-actors")
    model = str(tiny_model)
    serve.run(
        build_vlm_app(VLMConfig.model_validate({**VLM, "model": model})),
        name="vlm",
        route_prefix=None,
    )
    config = make_config(root / "data", [{"id": "unused", "source": "udp://127.0.0.1:9"}], model)
    store = get_store(config)
    helper = Cluster(root / "data", model, store)
    try:
        yield helper
    finally:
        helper.kill_cameras()
        ray.kill(store, no_restart=True)
        serve.delete("vlm")


@pytest.fixture
def cams(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, with every camera actor the test started killed afterwards."""
    yield cluster
    cluster.kill_cameras()


# ---------------------------------------------------------------- tests


def test_broken_files_are_unavailable_and_others_still_flow(
    cams: Cluster, clips: dict[str, Path], tmp_path: Path
) -> None:
    """Four broken files and a good one in one ingest actor (a run's default groups cameras
    in one process): each broken one is `unavailable` with its reason, the good one's events
    flow."""
    import ray

    from cluster.actors.ingest import launch_group

    empty = tmp_path / "empty.mp4"
    empty.touch()
    truncated = tmp_path / "truncated.mp4"
    data = clips["early"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    expected = {
        "bad_missing": (tmp_path / "missing.mp4", "not found"),
        "bad_empty": (empty, "empty (0 bytes)"),
        "bad_truncated": (truncated, "cannot read video file"),
        "bad_text": (text, "cannot read video file"),
    }
    cameras = [{"id": cid, "source": str(path)} for cid, (path, _) in expected.items()]
    cameras.append({"id": "good", "source": str(clips["early"])})
    config = cams.config(cameras)
    actor, _started = launch_group(config, "broken", [cam.id for cam in config.cameras])
    cams.actors.append(actor)

    def statuses() -> dict[str, dict[str, Any]]:
        answer: dict[str, dict[str, Any]] = ray.get(actor.status.remote(None, True), timeout=30)
        return answer

    unavailable = wait_for(
        lambda: (
            (s := statuses()) and all(s[cid]["status"] == "unavailable" for cid in expected) and s
        ),
        30,
        "the broken cameras to become unavailable",
    )
    for cid, (_path, message) in expected.items():
        st = unavailable[cid]
        assert message in st["last_error"], (cid, st["last_error"])
        assert st["ingest_done"] and st["frames"] == 0 and st["events"] == 0
    events = wait_for(lambda: cams.events("good"), 60, "events of the good camera")
    assert events[0].camera_id == "good" and events[0].source_type == "file"
    assert statuses()["good"]["frames"] > 0
    # each failure is logged with the camera and the reason
    logs = wait_for(
        lambda: (
            (text := ray_logs()) and "camera bad_missing: video file not found" in text and text
        ),
        15,
        "the logged error",
    )
    for cid in expected:
        assert f"camera {cid}:" in logs


def test_live_stream_goes_offline_and_recovers(cams: Cluster, clips: dict[str, Path]) -> None:
    server = TSServer(clips["loop"], free_udp_port())
    server.start()
    try:
        config = cams.config(
            [
                {
                    "id": "live",
                    "source": f"udp://127.0.0.1:{server.port}",
                    "detect_fps": 5,
                    "stall_timeout_s": 2,
                    "motion": {"end_after_s": 1.0},
                }
            ]
        )
        actor = cams.start(config)["live"]
        first = wait_for(lambda: cams.events("live"), 40, "a first event from the live stream")
        assert first[0].source_type == "udp"
        assert camera_status(actor)["status"] == "online"

        server.kill()
        killed = time.monotonic()
        wait_for(lambda: camera_status(actor)["status"] == "offline", 10, "status offline")
        assert time.monotonic() - killed < 6  # stall timeout 2 s + detection slack
        st = camera_status(actor)
        assert st["failures"] >= 1 and "stall" in st["last_error"]

        server.start()
        wait_for(lambda: camera_status(actor)["status"] == "online", 30, "status back online")
        back = datetime.now(UTC)
        wait_for(
            lambda: [e for e in cams.events("live") if e.timestamp >= back],
            30,
            "events after the restart",
        )
    finally:
        server.kill()


def test_password_in_source_url_never_leaks(cams: Cluster) -> None:
    from fastapi.testclient import TestClient

    from serve_apps.api import RayStoreClient, build_api

    secret = "hunter2"
    closed = free_port()
    config = cams.config(
        [{"id": "secret_cam", "source": f"rtsp://admin:{secret}@127.0.0.1:{closed}/s"}]
    )
    actor = cams.start(config)["secret_cam"]
    st = wait_for(
        lambda: (s := camera_status(actor))["status"] == "unavailable" and s["last_error"] and s,
        30,
        "the rtsp camera to fail",
    )
    assert st["failures"] >= 1
    assert secret not in repr(st)
    assert "***" in st["source"] and f"127.0.0.1:{closed}" in st["last_error"]

    import ray

    refused = ray.get(actor.ring.remote("secret_cam"))
    assert refused["accepted"] is False and secret not in repr(refused)

    with TestClient(
        build_api(RayStoreClient(config), config), base_url="http://localhost"
    ) as client:
        for path in ("/api/v1/cameras", "/api/v1/events", "/api/v1/health"):
            resp = client.get(path)
            assert resp.status_code < 500 or path.endswith("health"), (path, resp.text)
            assert secret not in resp.text, path
        cameras = client.get("/api/v1/cameras").json()["cameras"]
        assert cameras[0]["status"] == "unavailable" and cameras[0]["last_error"]
        assert client.post("/api/v1/cameras/secret_cam/ring").status_code == 409
    logs = ray_logs()
    assert "camera secret_cam:" in logs  # the failure was logged...
    assert secret not in logs  # ...without the password, anywhere in the cluster's logs


def test_overlapping_motion_shares_a_correlation_group(
    cams: Cluster, clips: dict[str, Path]
) -> None:
    config = cams.config(
        [
            {"id": "corr_a", "source": str(clips["early"])},
            {"id": "corr_b", "source": str(clips["early"])},
            {"id": "corr_c", "source": str(clips["late"])},
        ]
    )
    # file events are stamped when decoded: a and b together, c only after they are done
    actors = cams.start(config.model_copy(update={"cameras": config.cameras[:2]}))
    for cid, actor in actors.items():
        wait_for(lambda a=actor: camera_status(a)["done"], 60, f"{cid} to finish")
    time.sleep(config.correlation.window_s + 0.5)
    actors = cams.start(config.model_copy(update={"cameras": config.cameras[2:]}))
    wait_for(lambda: camera_status(actors["corr_c"])["done"], 60, "corr_c to finish")
    a, b, c = (cams.events(cid) for cid in ("corr_a", "corr_b", "corr_c"))
    assert len(a) == len(b) == len(c) == 1, (a, b, c)
    # sanity: a and b start together (within the window), c starts after the window
    assert abs((a[0].timestamp - b[0].timestamp).total_seconds()) < config.correlation.window_s
    assert (c[0].timestamp - a[0].timestamp).total_seconds() > config.correlation.window_s
    assert c[0].media_offset_s is not None and c[0].media_offset_s > 8  # motion at 9-11 s
    assert a[0].correlation_group_id is not None
    assert a[0].correlation_group_id == b[0].correlation_group_id
    assert c[0].correlation_group_id != a[0].correlation_group_id


def test_doorbell_ring_makes_a_ring_event_on_that_camera(
    cams: Cluster, clips: dict[str, Path]
) -> None:
    import ray

    config = cams.config(
        [
            {"id": "bell", "source": str(clips["late"]), "doorbell": True},
            {"id": "porch", "source": str(clips["late"])},
        ]
    )
    actors = cams.start(config)
    for cid, actor in actors.items():
        wait_for(lambda a=actor: camera_status(a)["frames"] > 0, 30, f"frames on {cid}")
    refused = ray.get(actors["porch"].ring.remote("porch"))
    assert refused == {"accepted": False, "reason": "camera is not a doorbell"}

    rung = datetime.now(UTC)
    assert ray.get(actors["bell"].ring.remote("bell")) == {"accepted": True}
    started = time.monotonic()
    rings = wait_for(
        lambda: [e for e in cams.events("bell") if e.is_doorbell_ring],
        5,
        "the ring event",
        interval=0.1,
    )
    assert time.monotonic() - started < 5
    assert len(rings) == 1 and rings[0].timestamp >= rung
    assert rings[0].analysis_mode == "single_frame"
    assert not [e for e in cams.events("porch") if e.is_doorbell_ring]


def test_slow_vlm_merges_motion_and_loses_none(cams: Cluster, clips: dict[str, Path]) -> None:
    config = cams.config(
        [
            {
                "id": "flow",
                "source": str(clips["flow"]),
                "detect_fps": 10,
                "max_pending_events": 2,
                "motion": {"end_after_s": 0.5},
            }
        ]
    )
    actor = cams.start(config)["flow"]
    st = wait_for(
        lambda: (s := camera_status(actor))["done"] and s, 90, "the flow camera to finish"
    )
    assert st["frames"] == 400  # every frame decoded: detection never waited for the VLM
    assert st["segments"] >= 15, st
    assert st["max_queue_depth"] <= 2 and st["max_pending_events"] == 2
    assert st["merged_pending"] > 0, st
    # every motion segment is either its own event or merged into one
    assert st["events"] + st["merged_pending"] == st["segments"]
    events = sorted(cams.events("flow"), key=lambda e: e.media_offset_s or 0.0)
    assert len(events) == st["events"]
    assert sum(e.merged_motion or 0 for e in events) >= st["merged_pending"]
    # together the events cover the clip's motion: the first window starts at 1 s, the last
    # at 37 s of media time (a merged event keeps its older start)
    offsets = [e.media_offset_s for e in events]
    assert offsets[0] is not None and offsets[0] <= 1.5, offsets
    # the last window (37 s) is its own event or was merged into the newest queued one, which
    # is the last event by start: either way the last event reaches the end of the motion.
    # A merged event keeps its first window's start and counts each later burst (one per
    # window: they are 1.2 s apart, end_after_s 0.5) in merged_motion, so the windows it
    # covers run from the one it starts in through merged_motion more.
    assert offsets[-1] is not None, offsets
    first = min(range(len(FLOW_WINDOWS)), key=lambda k: abs(FLOW_WINDOWS[k][0] - offsets[-1]))
    start, end = FLOW_WINDOWS[first]
    assert start - 0.5 <= offsets[-1] <= end, (offsets[-1], FLOW_WINDOWS[first])
    covered = first + (events[-1].merged_motion or 0)
    assert covered >= len(FLOW_WINDOWS) - 1, (
        f"the last event starts in window {first} and merged {events[-1].merged_motion} more: "
        f"the final window ({FLOW_WINDOWS[-1][0]:g} s) is not covered; offsets {offsets}"
    )
    merged = [e for e in events if e.merged_motion]
    assert any(e.frame_count > 10 for e in merged)  # one window is about 8 frames


def test_one_ingest_actor_runs_a_group_and_each_camera_stays_its_own(
    cams: Cluster, clips: dict[str, Path]
) -> None:
    """A run's fleet with `ray.cameras_per_actor: 3`: three cameras in one process; a ring
    found through the directory; one camera retired while its neighbours decode on; the
    process killed, restarted by Ray, and every camera resumed (the file without duplicates)."""
    import ray

    from cluster.directory import IngestDirectory
    from cluster.fleet import CameraFleet
    from cluster.peers import CameraPeers

    servers = [TSServer(clips["loop"], free_udp_port()) for _ in range(2)]
    for server in servers:
        server.start()
    live = {"detect_fps": 5, "stall_timeout_s": 3, "motion": {"end_after_s": 1.0}}
    config = make_config(
        cams.storage,
        [
            {"id": "grp_a", "source": f"udp://127.0.0.1:{servers[0].port}", **live},
            {"id": "grp_b", "source": f"udp://127.0.0.1:{servers[1].port}", **live},
            {"id": "grp_file", "source": str(clips["early"]), "doorbell": True},
        ],
        cams.model,
    )
    config = config.model_copy(
        update={"ray": config.ray.model_copy(update={"cameras_per_actor": 3})}
    )
    fleet = CameraFleet(config, CameraPeers.find(config))
    fleet.start([cam.id for cam in config.cameras])
    try:
        assert len(fleet.groups) == 1  # one ingest actor, reserving the three cameras' CPUs
        (group,) = fleet.groups.values()
        cams.actors.append(group.actor)

        def statuses() -> dict[str, dict[str, Any]]:
            fleet.follow_placement()
            return fleet.statuses(timeout_s=30)

        first = wait_for(
            lambda: (
                (s := statuses())["grp_a"]["status"] == "online"
                and s["grp_b"]["status"] == "online"
                and s["grp_file"]["done"]
                and s
            ),
            90,
            "both streams online and the file done",
        )
        pid = first["grp_a"]["pid"]
        assert {s["pid"] for s in first.values()} == {pid}
        stored = wait_for(lambda: cams.events("grp_file"), 30, "the file camera's event")

        # a ring, found as the API and the publisher find it
        directory = IngestDirectory(NAMESPACE)  # kept, as the API and the publisher keep theirs
        assert directory.ring("grp_file", 10) == {"accepted": True}
        wait_for(lambda: [e for e in cams.events("grp_file") if e.is_doorbell_ring], 30, "the ring")
        stored = cams.events("grp_file")

        # grp_b leaves the group; grp_a decodes on in the same process
        before = statuses()["grp_a"]["frames"]
        reports = fleet.retire(["grp_b"])
        assert set(reports) == {"grp_b"} and "events" in reports["grp_b"]
        assert group.ids == ["grp_a", "grp_file"] and fleet.ids() == ["grp_a", "grp_file"]
        after = wait_for(
            lambda: (s := statuses())["grp_a"]["frames"] > before + 10 and s, 30, "grp_a decoding"
        )
        assert after["grp_a"]["pid"] == pid and "grp_b" not in after
        assert ray.get(group.actor.ids.remote(), timeout=30) == ["grp_a", "grp_file"]

        # the process dies: Ray restarts it, and the fleet's next status calls resume both
        ray.kill(group.actor, no_restart=False)
        resumed = wait_for(
            lambda: (
                (s := statuses()).get("grp_a", {}).get("status") == "online"
                and s["grp_a"]["pid"] != pid
                and s["grp_file"].get("done")
                and s
            ),
            120,
            "the group back after its restart",
        )
        assert resumed["grp_a"]["restarted"] and resumed["grp_file"]["pid"] != pid
        assert resumed["grp_file"]["restarted"] and "grp_b" not in resumed
        again = {e.event_id for e in cams.events("grp_file")}
        assert again == {e.event_id for e in stored}  # the file replayed: no event twice

        # `apply` restarts the doorbell twice: it leaves the group for a group of its own, then
        # that group is killed for a third; the kept directory finds it each time
        def restart_bell() -> None:
            fleet.retire(["grp_file"])
            fleet.start(["grp_file"])
            cams.actors.extend(g.actor for g in fleet.groups.values())
            wait_for(lambda: statuses()["grp_file"].get("done"), 90, "the doorbell restarted")

        for times in (1, 2):
            restart_bell()
            assert len(fleet.groups) == 2 and group.ids == ["grp_a"]
            rung = wait_for(lambda: directory.ring("grp_file", 10), 30, "the ring delivered")
            assert rung == {"accepted": True}
            wait_for(
                lambda n=times: (
                    len([e for e in cams.events("grp_file") if e.is_doorbell_ring]) == 1 + n
                ),
                30,
                "the ring event from the new group",
            )

        reports = fleet.drain()
        assert set(reports) == {"grp_a", "grp_file"}
    finally:
        for server in servers:
            server.kill()
