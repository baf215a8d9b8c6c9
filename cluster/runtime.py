"""Start or join Ray, deploy the Serve apps and actors, and run until stopped or done."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import serve

from cluster.actors.camera import start_camera
from cluster.actors.publisher import get_publisher
from cluster.actors.store import get_store
from pipelines.broker import EmbeddedBroker, broker_reachable, start_embedded_broker
from pipelines.config import Config
from pipelines.naming import API_APP, PUBLISHER_ACTOR, STORE_ACTOR, VLM_APP, camera_actor_name
from serve_apps.api import build_api_app
from serve_apps.vlm import build_vlm_app

logger = logging.getLogger(__name__)

POLL_S = 1.0
ADDRESS_FILE = ".ray-address"  # under storage.path: how status/stop/replay find a local run


@dataclass
class Cluster:
    """What `run` started or joined, so that shutdown undoes exactly that."""

    config: Config
    started_local_ray: bool
    dashboard_url: str | None
    api_url: str
    store: Any
    publisher: Any
    cameras: dict[str, Any]
    broker: EmbeddedBroker | None = None
    published_before: int = 0
    started_at: float = field(default_factory=time.time)


def connect(config: Config, *, include_dashboard: bool = True) -> tuple[bool, str | None]:
    """Start a local Ray cluster (address empty) or join one; returns (started_local, dashboard)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False, None
    address = config.ray.address
    if address:
        context = ray.init(address=address, namespace=config.ray.namespace, log_to_driver=False)
        started_local = False
    else:
        context = ray.init(
            address="local",  # empty ray.address: always a new local cluster, never a stray one
            num_cpus=config.ray.num_cpus,  # type: ignore[arg-type]  # Ray accepts fractions
            namespace=config.ray.namespace,
            include_dashboard=include_dashboard,
            dashboard_host="127.0.0.1",
            dashboard_port=config.ray.dashboard_port,
            log_to_driver=False,
            configure_logging=False,
        )
        started_local = True
    dashboard = getattr(context, "dashboard_url", None) or None
    if dashboard and not dashboard.startswith("http"):
        dashboard = f"http://{dashboard}"
    return started_local, dashboard


def deploy(
    config: Config,
    *,
    include_dashboard: bool = True,
    after_connect: Callable[[], None] | None = None,
) -> Cluster:
    """Bring up every part: broker (demo), store, publisher, Serve apps, camera actors."""
    broker = None
    mqtt = config.mqtt
    if mqtt.enabled and mqtt.embedded_broker and not broker_reachable(mqtt.host, mqtt.port):
        broker = start_embedded_broker(mqtt.host, mqtt.port)
    started_local = False
    try:
        started_local, dashboard = connect(config, include_dashboard=include_dashboard)
        if after_connect is not None:
            after_connect()
        serve.start(http_options={"host": config.api.host, "port": config.api.port})
        _write_address_file(config)
        store = get_store(config)
        ray.get(store.counts.remote())  # the store is up before anything writes to it
        publisher = get_publisher(config) if mqtt.enabled else None
        published_before = ray.get(store.counts.remote()).get("published", 0)
        serve.run(build_vlm_app(config.vlm), name=VLM_APP, route_prefix=None)
        serve.run(build_api_app(config), name=API_APP, route_prefix="/")
        cameras = {cam.id: start_camera(config, cam.id) for cam in config.cameras if cam.enabled}
    except BaseException:
        if started_local:  # a failed or interrupted start leaves no Ray processes behind
            ray.shutdown()
        if broker is not None:
            broker.stop()
        raise
    host = "localhost" if config.api.host in ("0.0.0.0", "::") else config.api.host
    return Cluster(
        config=config,
        started_local_ray=started_local,
        dashboard_url=dashboard,
        api_url=f"http://{host}:{config.api.port}/api/v1",
        store=store,
        publisher=publisher,
        cameras=cameras,
        broker=broker,
        published_before=published_before,
    )


def snapshot(cluster: Cluster, timeout_s: float = 5.0) -> dict[str, Any]:
    """Camera, MQTT and store state gathered from the actors."""
    cams: dict[str, Any] = {}
    for cam_id, actor in cluster.cameras.items():
        try:
            cams[cam_id] = ray.get(actor.status.remote(), timeout=timeout_s)
        except Exception as exc:
            cams[cam_id] = {"camera_id": cam_id, "status": "unknown", "error": type(exc).__name__}
    mqtt: dict[str, Any] = {"enabled": False}
    if cluster.publisher is not None:
        try:
            mqtt = ray.get(cluster.publisher.status.remote(), timeout=timeout_s)
        except Exception as exc:
            mqtt = {"enabled": True, "connected": False, "error": type(exc).__name__}
    try:
        store = ray.get(cluster.store.counts.remote(), timeout=timeout_s)
    except Exception as exc:
        store = {"error": type(exc).__name__}
    return {"cameras": cams, "mqtt": mqtt, "store": store}


def all_done(snap: dict[str, Any]) -> bool:
    """True when every camera finished its source and analysed every queued event."""
    return all(cam.get("done") for cam in snap["cameras"].values())


def wait(
    cluster: Cluster,
    *,
    until_done: bool,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Block until done (file sources), a `liveobject stop`, or Ctrl-C; returns the last state."""
    snap = snapshot(cluster)
    try:
        while True:
            if on_tick is not None:
                on_tick(snap)
            if until_done and all_done(snap):
                break
            if stop is not None and stop.is_set():
                break
            if ray.get(cluster.store.stop_requested.remote(), timeout=10):
                logger.info("stop requested")
                break
            time.sleep(POLL_S)
            snap = snapshot(cluster)
    except KeyboardInterrupt:
        print("\ninterrupted: shutting down", file=sys.stderr)
    return snap


def finish(cluster: Cluster, *, flush_timeout_s: float = 60.0) -> tuple[int, int]:
    """Flush MQTT and Parquet; returns (events stored, events published) for this run."""
    stored = 0
    for actor in cluster.cameras.values():
        try:
            stored += int(ray.get(actor.status.remote(), timeout=10)["events"])
        except Exception:
            logger.warning("a camera actor did not answer at shutdown")
    if cluster.publisher is not None:
        try:
            ray.get(cluster.publisher.flush.remote(flush_timeout_s), timeout=flush_timeout_s + 10)
        except Exception as exc:
            logger.warning("MQTT flush did not complete: %s", type(exc).__name__)
    ray.get(cluster.store.flush.remote(), timeout=120)
    counts = ray.get(cluster.store.counts.remote(), timeout=30)
    published = max(0, int(counts.get("published", 0)) - cluster.published_before)
    return stored, min(published, stored) if stored else published


def shutdown(cluster: Cluster) -> None:
    """Graceful stop: cameras, `offline` on MQTT, store flushed; local Ray ended; broker ended."""
    for actor in cluster.cameras.values():
        try:
            ray.get(actor.stop.remote(), timeout=15)
        except Exception:
            logger.debug("camera actor already gone")
    if cluster.publisher is not None:
        try:
            ray.get(cluster.publisher.shutdown.remote(), timeout=15)
        except Exception:
            logger.warning("publisher did not shut down cleanly")
    try:
        ray.get(cluster.store.close.remote(), timeout=60)
    except Exception:
        logger.warning("store did not close cleanly")
    if cluster.started_local_ray:
        try:
            serve.shutdown()
        except Exception:
            logger.debug("serve already shut down")
        for name in [PUBLISHER_ACTOR, STORE_ACTOR, *map(camera_actor_name, cluster.cameras)]:
            try:
                ray.kill(ray.get_actor(name, namespace=cluster.config.ray.namespace))
            except Exception:
                logger.debug("actor %s already gone", name)
        ray.shutdown()
    if cluster.broker is not None:
        cluster.broker.stop()
    if cluster.started_local_ray:
        _address_file(cluster.config).unlink(missing_ok=True)


def _address_file(config: Config) -> Path:
    return Path(config.storage.path) / ADDRESS_FILE


def _write_address_file(config: Config) -> None:
    path = _address_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ray.get_runtime_context().gcs_address)


def join_running(config: Config | None) -> None:
    """Connect to the cluster a `liveobject run` started (for status, stop, replay)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = "auto"
    namespace = "liveobject"
    if config is not None:
        namespace = config.ray.namespace
        recorded = _address_file(config)
        if config.ray.address:
            address = config.ray.address
        elif recorded.exists():
            address = recorded.read_text().strip()
    if address != "auto" and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        if not broker_reachable(host or "127.0.0.1", int(port or 6379), timeout_s=3.0):
            # ray.init would retry for minutes against an address nothing listens on
            raise ConnectionError(f"nothing answers at {address}")
    ray.init(address=address, namespace=namespace, log_to_driver=False)
