"""Several cameras in one process (`pipelines.camera.group.CameraGroup`), without Ray: real
live MPEG-TS/UDP streams and fake ports. One camera's source refuses, one stalls and one is
removed, while the others keep producing events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.camera import CameraPorts
from pipelines.camera.group import CameraGroup
from pipelines.config import Config
from pipelines.samples import generate_sample_video
from tests.support.camera_ports import FakeCameraStore, FakeVLM
from tests.support.network import free_port, free_udp_port
from tests.support.streams import TSServer

LIVE = ("steady", "stays", "stalls")  # each on its own live stream


@pytest.fixture
def streams(tmp_path: Path) -> Iterator[dict[str, TSServer]]:
    clip = generate_sample_video(
        tmp_path / "loop.mp4", seconds=4, fps=10, motion_windows=[(1.0, 2.5)]
    )
    servers = {name: TSServer(clip, free_udp_port()) for name in LIVE}
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.kill()


def make_config(streams: dict[str, TSServer], tmp: Path) -> Config:
    cameras = [  # a short stall timeout for the one that stalls; slack for the others
        {
            "id": name,
            "source": f"udp://127.0.0.1:{server.port}",
            "stall_timeout_s": 2 if name == "stalls" else 5,
        }
        for name, server in streams.items()
    ]
    refused = f"http://viewer:Group-Secret-3@127.0.0.1:{free_port()}/stream.ts"
    cameras.append({"id": "refused", "source": refused})
    return Config.model_validate(
        {
            "cameras": [{**c, "detect_fps": 5, "motion": {"end_after_s": 1.0}} for c in cameras],
            "vlm": {"image_size": 96, "deadline_s": 5, "dedupe": {"enabled": False}},
            "storage": {"path": str(tmp / "data")},
            "mqtt": {"enabled": False},
        }
    )


def test_one_cameras_failure_or_removal_leaves_the_others_producing_events(
    streams: dict[str, TSServer], tmp_path: Path
) -> None:
    config = make_config(streams, tmp_path)
    store = FakeCameraStore()
    group = CameraGroup(config, lambda _cid: CameraPorts(store=store, describe=FakeVLM()))

    def events_of(camera_id: str, after: datetime) -> int:
        return sum(e.camera_id == camera_id and e.timestamp > after for e in store.events.values())

    async def until(check: object, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not check():  # type: ignore[operator]
                await asyncio.sleep(0.1)

    async def scenario() -> dict[str, object]:
        # fewer pooled threads than cameras: each camera's decode loop must hold its own
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
        seen: dict[str, object] = {}
        for camera_id in (*LIVE, "refused"):
            group.add(camera_id)
        try:
            start = datetime.min.replace(tzinfo=UTC)
            await until(lambda: all(events_of(c, start) for c in LIVE))
            streams["stalls"].kill()  # that camera's stream stops sending: it stalls
            seen["removed"] = await group.remove("stays", timeout_s=5)  # `apply` removed it
            failed_at = datetime.now(UTC)
            await until(lambda: group.status(["stalls"])["stalls"]["status"] == "offline")
            await until(lambda: events_of("steady", failed_at) >= 2)  # the neighbour goes on
            seen["status"] = group.status()
            seen["ids"] = group.ids()
            assert group.add("stays")  # `apply` restarted it: the same id, a new camera
            back = datetime.now(UTC)
            await until(lambda: events_of("stays", back) >= 1)
        finally:
            seen["drained"] = await group.drain(timeout_s=5)
        return seen

    seen = asyncio.run(scenario())
    status = seen["status"]
    assert isinstance(status, dict)
    assert seen["ids"] == ["steady", "stalls", "refused"] and "stays" not in status
    assert status["steady"]["status"] == "online" and status["steady"]["failures"] == 0
    assert status["stalls"]["status"] == "offline" and "stall" in status["stalls"]["last_error"]
    refused = status["refused"]
    assert refused["status"] == "unavailable" and refused["failures"] >= 1
    assert "Group-Secret-3" not in str(status)
    removed = seen["removed"]
    assert isinstance(removed, dict) and removed["events"] >= 1 and removed["unsaved"] == 0
    drained = seen["drained"]
    assert isinstance(drained, dict) and set(drained) == {"steady", "stalls", "refused", "stays"}
    # nothing a removed or drained camera had seen is lost: every segment became an event (or
    # was merged into one while the VLM was behind), and every event was saved
    for report in (removed, *drained.values()):
        assert report["segments"] == report["events"] + report["merged_pending"], report
        assert report["unsaved"] == 0 and report["dropped"] == 0, report


def test_a_call_about_a_camera_the_group_does_not_have_is_answered_for_that_camera(
    tmp_path: Path,
) -> None:
    config = Config.model_validate(
        {
            "cameras": [{"id": "door", "source": "rtsp://cam/door", "doorbell": True}],
            "storage": {"path": str(tmp_path / "data")},
            "mqtt": {"enabled": False},
        }
    )
    group = CameraGroup(
        config, lambda _cid: CameraPorts(store=FakeCameraStore(), describe=FakeVLM())
    )
    assert group.ring("nope") == {"accepted": False, "reason": "not in this group"}
    assert group.status(["nope"])["nope"]["status"] == "unknown"
    assert asyncio.run(group.drain(["nope"])) == {"nope": {"error": "not in this group"}}
    assert asyncio.run(group.drain([])) == {} and group.status([]) == {}  # none is not all
    assert asyncio.run(group.remove("nope", timeout_s=1)) == {}
    with pytest.raises(KeyError):
        group.add("not-configured")
