"""A camera with a detect sub-stream and a main stream (`cameras[].detect_source`): two live
MPEG-TS/UDP streams of the same scene at two sizes, the camera's plain code with fake ports
(no Ray). Motion runs on the sub-stream; the thumbnail is the main stream's (its size says
so); with the main stream down, events still come, from the sub-stream's frames."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipelines.camera import Camera, CameraPorts
from pipelines.config import Config
from pipelines.ingest.opening import DetectSource, MainStream
from pipelines.ingest.sources import StreamSource
from pipelines.samples import generate_sample_video
from tests.support.camera_ports import FakeCameraStore, FakeVLM
from tests.support.network import free_port, free_udp_port
from tests.support.streams import TSServer

SUB, MAIN = (320, 180), (640, 360)
WINDOWS = ((1.0, 2.5),)  # a 4 s loop: still, an object crosses, still


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TSServer]]:
    folder = tmp_path_factory.mktemp("detect")
    servers = {}
    for name, size in (("sub", SUB), ("main", MAIN)):
        clip = generate_sample_video(
            folder / f"{name}.mp4", seconds=4, fps=10, size=size, motion_windows=WINDOWS
        )
        servers[name] = TSServer(clip, free_udp_port())
        servers[name].start()
    yield servers
    for server in servers.values():
        server.kill()


def make_config(source: str, detect_source: str, tmp: Path) -> Config:
    camera = {
        "id": "gate",
        "source": source,
        "detect_source": detect_source,
        "detect_fps": 5,
        "stall_timeout_s": 3,
        "motion": {"end_after_s": 1.0},
    }
    return Config.model_validate(
        {
            "cameras": [camera],
            # key frames at 480 px: the main stream's are 480x270, the sub-stream's 320x180
            "vlm": {"image_size": 480, "deadline_s": 5, "dedupe": {"enabled": False}},
            "storage": {"path": str(tmp / "data")},
            "mqtt": {"enabled": False},
        }
    )


def run_until(
    camera: Camera, store: FakeCameraStore, events: int, *, main_online: bool = False
) -> tuple[dict[str, Any], datetime]:
    """Run the camera until `events` events were saved (with `main_online`: events that
    started after the main stream came online); its status then, and when it came online."""
    online_at = datetime.now(UTC)

    async def scenario() -> dict[str, Any]:
        nonlocal online_at
        camera.start()
        try:
            async with asyncio.timeout(45):
                if main_online:
                    while (camera.status().main_stream or {}).get("status") != "online":
                        await asyncio.sleep(0.1)
                    online_at = datetime.now(UTC)
                while sum(e.timestamp >= online_at for e in store.events.values()) < events:
                    await asyncio.sleep(0.1)
            return camera.status().as_dict()
        finally:
            await camera.drain(timeout_s=5)

    return asyncio.run(scenario()), online_at


def jpeg_size(jpeg: bytes | None) -> tuple[int, int]:
    assert jpeg is not None
    with Image.open(io.BytesIO(jpeg)) as image:
        return image.size


def test_motion_on_the_sub_stream_gives_events_with_the_main_streams_thumbnail(
    streams: dict[str, TSServer], tmp_path: Path
) -> None:
    main_url = f"udp://127.0.0.1:{streams['main'].port}?user=viewer&password=Main-Secret-5"
    config = make_config(main_url, f"udp://127.0.0.1:{streams['sub'].port}", tmp_path)
    store, vlm = FakeCameraStore(), FakeVLM()
    camera = Camera(config, "gate", CameraPorts(store=store, describe=vlm))
    status, online_at = run_until(camera, store, events=2, main_online=True)

    saved = list(store.events.values())  # in the order analysed, as the VLM's requests
    assert len(saved) == len(vlm.requests)
    later = [(e, r) for e, r in zip(saved, vlm.requests, strict=True) if e.timestamp >= online_at]
    assert len(later) >= 2
    for event, request in later:  # events that began once the main stream was up
        assert event.frames_from == "main", event
        assert jpeg_size(store.thumbnails[event.event_id]) == MAIN
        # what the VLM saw came from the main stream too (the sub-stream's is 320 wide)
        assert {jpeg_size(frame) for frame in request.frames} == {(480, 270)}
    main = status["main_stream"]
    assert status["status"] == "online" and main["status"] == "online", status
    # while nothing moved, only the main stream's key frames were decoded (GOP: 5 frames)
    assert main["skipped"] > 0 and main["decoded"] > 0, main
    assert status["detect_source"] == config.cameras[0].detect_source
    assert "Main-Secret-5" not in json.dumps(status)


def test_with_the_main_stream_down_events_come_from_the_sub_stream(
    streams: dict[str, TSServer], tmp_path: Path
) -> None:
    down = f"http://viewer:Main-Secret-7@127.0.0.1:{free_port()}/main.ts"  # nothing listens
    config = make_config(down, f"udp://127.0.0.1:{streams['sub'].port}", tmp_path)
    store = FakeCameraStore()
    camera = Camera(config, "gate", CameraPorts(store=store, describe=FakeVLM()))
    status, _ = run_until(camera, store, events=1)

    event = next(iter(store.events.values()))
    assert event.frames_from == "detect" and jpeg_size(store.thumbnails[event.event_id]) == SUB
    main = status["main_stream"]
    assert main["status"] == "unavailable" and main["failures"] >= 1 and main["decoded"] == 0
    assert "Main-Secret-7" not in json.dumps(status) and "127.0.0.1" in main["last_error"]


def test_a_main_stream_lost_mid_run_falls_back_then_comes_back(
    streams: dict[str, TSServer], tmp_path: Path
) -> None:
    config = make_config(
        f"udp://127.0.0.1:{streams['main'].port}",
        f"udp://127.0.0.1:{streams['sub'].port}",
        tmp_path,
    )
    store = FakeCameraStore()
    camera = Camera(config, "gate", CameraPorts(store=store, describe=FakeVLM()))
    seen: dict[str, Any] = {}

    async def events_since(at: datetime, frames_from: str) -> None:
        while not any(
            e.timestamp > at and e.frames_from == frames_from for e in store.events.values()
        ):
            await asyncio.sleep(0.1)

    async def scenario() -> None:
        camera.start()
        try:
            async with asyncio.timeout(90):
                await events_since(datetime.min.replace(tzinfo=UTC), "main")
                streams["main"].kill()  # the camera's main stream goes away
                lost = datetime.now(UTC)
                await events_since(lost, "detect")  # events go on, from the sub-stream
                seen["down"] = (camera.status().main_stream or {}).get("status")
                streams["main"].start()
                back = datetime.now(UTC)
                await events_since(back, "main")  # reconnected by itself
                seen["up"] = camera.status().as_dict()["main_stream"]
        finally:
            if streams["main"].proc is None:
                streams["main"].start()
            await camera.drain(timeout_s=5)

    asyncio.run(scenario())
    assert seen["down"] in ("behind", "offline"), seen
    assert seen["up"]["status"] == "online" and seen["up"]["failures"] >= 1, seen


def test_the_main_stream_decodes_every_frame_only_while_an_event_is_open(
    streams: dict[str, TSServer],
) -> None:
    main = MainStream(f"udp://127.0.0.1:{streams['main'].port}", stall_timeout_s=3)
    sub = StreamSource(f"udp://127.0.0.1:{streams['sub'].port}", 5, stall_timeout_s=3)
    source = DetectSource(sub, main)

    def decoded_in(seconds: float) -> tuple[int, int]:
        frames = source.frames()
        decoded, skipped = main.decoded, main.skipped
        for _ in range(int(seconds * 5)):
            frame = next(frames)
            assert frame.width == SUB[0] and frame.grey(80, 45).shape == (45, 80)
        return main.decoded - decoded, main.skipped - skipped

    with source:
        decoded_in(2.0)  # both streams joined
        idle, idle_skipped = decoded_in(3.0)
        source.set_active(True)
        active, active_skipped = decoded_in(3.0)
        frame = next(source.frames())
        assert frame.from_main and frame.image.shape == (MAIN[1], MAIN[0], 3)
        assert frame.fitted(320).shape == (180, 320, 3)
    # a key frame every 5 frames: idle, about 1 packet in 5 is decoded; active, all but those
    # before the first key frame
    assert idle / (idle + idle_skipped) <= 0.4, (idle, idle_skipped)
    assert active / (active + active_skipped) >= 0.75, (active, active_skipped)
