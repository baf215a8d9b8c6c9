"""One process hosting N live cameras in a `CameraGroup` (issue 18 item 1's first step, no Ray).

Run by bench_live.py in its own process, so that its CPU and RSS are the group's alone. The
cameras are the product's `Camera`s (StreamSource → motion → segments → analyser → outbox) on
the given stream URLs; the store accepts every save without writing (the store is its own
process in a run), and the VLM is down (each event gets the fallback text at once, as in
bench_live's camera actors, where no VLM is deployed). Prints one JSON line:
{"cameras", "cores", "rss_mb", "min_fps", "events"}.

    python -m benchmarks.group_probe --seconds 12 URL [URL ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import psutil

from pipelines.camera import CameraGroup, CameraPorts
from pipelines.config import Config
from pipelines.events import Event
from pipelines.vlm.types import VLMRequest, VLMResult


class _AcceptingStore:
    """Every save accepted, nothing written (the store's own cost is measured elsewhere)."""

    def __init__(self) -> None:
        self.saved = 0

    async def save_many(
        self, items: list[tuple[Event, bytes | None]]
    ) -> list[tuple[Event, bool] | None]:
        self.saved += len(items)
        return [(event, False) for event, _thumbnail in items]


async def _vlm_down(_request: VLMRequest) -> VLMResult:
    raise ConnectionError("no VLM in this probe")


async def _run(urls: list[str], seconds: float, detect_fps: float) -> dict[str, Any]:
    config = Config.model_validate(
        {
            "cameras": [
                {"id": f"g{i:02d}", "source": url, "detect_fps": detect_fps}
                for i, url in enumerate(urls)
            ],
            "mqtt": {"enabled": False},
        }
    )
    store = _AcceptingStore()
    group = CameraGroup(config, lambda _cid: CameraPorts(store=store, describe=_vlm_down))
    for camera in config.cameras:
        group.add(camera.id)
    me = psutil.Process()
    try:
        deadline = time.monotonic() + 120
        while any(s["status"] != "online" for s in group.status().values()):
            if time.monotonic() > deadline:
                raise TimeoutError("cameras did not come online")
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)  # warm
        cpu0, t0 = me.cpu_times(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, elapsed = me.cpu_times(), time.monotonic() - t0
        fps = [s["fps"] for s in group.status().values()]
        return {
            "cameras": len(urls),
            "cores": round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed, 3),
            "rss_mb": round(me.memory_info().rss / 2**20, 1),
            "min_fps": min(fps),
            "events": store.saved,
        }
    finally:
        await group.drain(timeout_s=5)


def main() -> None:
    """Parse the arguments, run the group, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--detect-fps", type=float, default=5.0)
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args.urls, args.seconds, args.detect_fps))), flush=True)


if __name__ == "__main__":
    main()
