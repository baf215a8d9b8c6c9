"""`liveobject demo`: generated clips, a tiny VLM when no model can be loaded, a broker if none."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from cluster.console import run_cluster
from pipelines.config import Config, load_config
from pipelines.samples import generate_sample_video

logger = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
HUB_HOST = "huggingface.co"

# (file name, seconds, motion windows in seconds, seed) for each demo camera
DEMO_CLIPS: tuple[tuple[str, float, list[tuple[float, float]], int], ...] = (
    ("driveway.mp4", 8.0, [(1.0, 3.5)], 1),
    ("front_door.mp4", 10.0, [(1.0, 3.0), (6.0, 8.0)], 2),
)


def make_samples(folder: Path) -> list[Path]:
    """Generate the demo clips (once) with PyAV."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, seconds, windows, seed in DEMO_CLIPS:
        path = folder / name
        if not path.exists() or path.stat().st_size == 0:
            generate_sample_video(path, seconds=seconds, motion_windows=windows, seed=seed)
        paths.append(path)
    return paths


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the model hub answers at all (it does not on offline machines)."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def demo_config(
    data_dir: Path, mqtt_port: int | None = None, api_port: int | None = None
) -> Config:
    """configs/demo.yaml with the data folder and optional port overrides applied."""
    os.environ["LIVEOBJECT_DEMO_DIR"] = str(data_dir.resolve())
    config = load_config(DEMO_CONFIG)
    updates: dict[str, Any] = {}
    if mqtt_port is not None:
        updates["mqtt"] = config.mqtt.model_copy(update={"port": mqtt_port})
    if api_port is not None:
        api = config.api.model_copy(
            update={"port": api_port, "base_url": f"http://localhost:{api_port}"}
        )
        updates["api"] = api
    return config.model_copy(update=updates) if updates else config


class EventPrinter:
    """A real MQTT subscriber that prints each published event (what Home Assistant sees)."""

    def __init__(self, config: Config) -> None:
        import paho.mqtt.client as mqtt

        self._topic = f"{config.mqtt.topic_prefix}/camera/+/event"
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect_async(config.mqtt.host, config.mqtt.port)
        self._client.loop_start()

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, _rc: Any, _p: Any) -> None:
        client.subscribe(self._topic, qos=1)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        try:
            event = json.loads(message.payload)
            print(
                f"MQTT {message.topic}: [{event.get('smart_detection_type', 'motion')}] "
                f"conf={event.get('confidence')} {event.get('description', '')[:80]!r} "
                f"thumbnail={event.get('thumbnail_url')}",
                flush=True,
            )
        except Exception:
            logger.warning("unreadable event payload on %s", message.topic)

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def run_demo(
    *,
    data_dir: Path,
    until_done: bool,
    mqtt_port: int | None = None,
    api_port: int | None = None,
    dashboard: bool = True,
) -> int:
    """Run configs/demo.yaml on generated clips, fully offline."""
    make_samples(data_dir / "samples")
    if not hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"
        print(
            "model hub unreachable: a tiny random-weight VLM is used (descriptions are gibberish)"
        )
    config = demo_config(data_dir, mqtt_port, api_port)
    printer: EventPrinter | None = None

    def start_printer() -> None:
        nonlocal printer
        if config.mqtt.enabled:
            printer = EventPrinter(config)

    try:
        return run_cluster(
            config, until_done=until_done, dashboard=dashboard, on_ready=start_printer
        )
    finally:
        if printer is not None:
            printer.stop()
