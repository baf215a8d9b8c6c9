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

from cluster import joining
from cluster.actors.camera import launch_camera
from cluster.actors.publisher import get_publisher
from cluster.actors.run import claim_run
from cluster.actors.store import get_store
from cluster.placement import CameraPlacement, camera_resources, check_fit, demands
from pipelines.broker import EmbeddedBroker, start_embedded_broker
from pipelines.config import Config
from pipelines.naming import API_APP, PUBLISHER_ACTOR, STORE_ACTOR, VLM_APP, camera_actor_name
from serve_apps.api import build_api_app
from serve_apps.vlm import build_vlm_app, replica_reports

logger = logging.getLogger(__name__)

POLL_S = 1.0
DRAIN_GRACE_S = 45.0  # past the drain deadline: decoding stops (10 s), fallback saves (15 s), slack
DRAIN_COUNTS = ("segments", "events", "merged_pending", "fallback_at_stop", "dropped", "unsaved")
EXTERNAL_APPS_WAIT_S = 600.0  # ray.deploy_serve_apps false: how long to wait for vlm and api
DASHBOARD_TRIES = 3  # a busy dashboard port is replaced by a free one, racing runs included
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
    drained: bool = False  # drain() ran (it runs once, on the first stop path)
    run: Any = None  # the namespace's run actor (cluster.actors.run), held while we run
    auth: str = "local"  # how Ray was joined: local | disabled | token | client
    # camera actors Ray has not placed yet (moved to `cameras` once they answer), and their
    # placement: `starting`, or `unplaceable` with what they need and what is free
    unplaced: dict[str, Any] = field(default_factory=dict)
    placement: CameraPlacement | None = None


def connect(config: Config, *, include_dashboard: bool = True) -> tuple[bool, str | None, str]:
    """Start a local Ray cluster (address empty) or join one.

    Returns (started_local, dashboard URL, auth): auth is how a joined head was reached
    (`disabled` or `token`, see cluster.joining; `client` for ray://) or `local`.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False, None, "local"
    if config.ray.address:
        return _join(config)
    port = joining.dashboard_port(config.ray.dashboard_port) if include_dashboard else 0
    for attempt in range(DASHBOARD_TRIES):
        before = joining.child_pids()
        try:
            context = ray.init(
                address="local",  # empty ray.address: always a new local cluster, never a stray
                num_cpus=config.ray.num_cpus,  # type: ignore[arg-type]  # Ray accepts fractions
                namespace=config.ray.namespace,
                include_dashboard=include_dashboard,
                dashboard_host="127.0.0.1",
                dashboard_port=port or None,
                _metrics_export_port=config.ray.metrics_export_port,
                log_to_driver=False,
                configure_logging=False,
            )
            break
        except Exception as exc:  # another run on this machine took the port a moment ago
            text = str(exc)
            lost_race = "already in use" in text or "Failed to bind" in text
            if attempt + 1 == DASHBOARD_TRIES or not include_dashboard or not lost_race:
                raise
            joining.end_children(before)  # what the failed start left (ray.shutdown does not)
            port = joining.dashboard_port(joining.free_port())
    return True, _dashboard_url(context), "local"


def _join(config: Config) -> tuple[bool, str | None, str]:
    """Join the cluster at ray.address with the auth mode its head accepts."""
    address = str(config.ray.address)
    gcs = joining.gcs_address(address)
    auth = "client" if gcs is None else joining.prepare_auth(gcs)
    runtime_env = config.ray.runtime_env.as_ray() if config.ray.runtime_env else None
    context = ray.init(
        address=gcs or address,
        namespace=config.ray.namespace,
        runtime_env=runtime_env or None,
        log_to_driver=False,
    )
    logger.info("joined Ray at %s (auth: %s)", gcs or address, auth)
    return False, _dashboard_url(context), auth


def _dashboard_url(context: Any) -> str | None:
    dashboard = getattr(context, "dashboard_url", None) or None
    if dashboard and not dashboard.startswith("http"):
        dashboard = f"http://{dashboard}"
    return dashboard


def deploy(
    config: Config,
    *,
    include_dashboard: bool = True,
    after_connect: Callable[[], None] | None = None,
) -> Cluster:
    """Bring up every part: broker (demo), store, publisher, Serve apps, camera actors.

    Before anything is created: the namespace is claimed (a second run is refused), what an
    earlier run left on a joined cluster is removed, and the config is checked against the
    cluster's resources (a VLM that cannot be placed fails here, with the reason).
    """
    broker = None
    mqtt = config.mqtt
    if mqtt.enabled and mqtt.embedded_broker and not joining.reachable(f"{mqtt.host}:{mqtt.port}"):
        broker = start_embedded_broker(mqtt.host, mqtt.port)
    started_local = False
    try:
        started_local, dashboard, auth = connect(config, include_dashboard=include_dashboard)
        if after_connect is not None:
            after_connect()
        run = claim_run(config)
        own_apps = config.ray.deploy_serve_apps
        if not started_local:
            joining.replace_leftovers(config)
        wanted = [d for d in demands(config) if own_apps or d.kind not in ("vlm", "api")]
        fit = check_fit(config, wanted)
        for camera_id, reason in fit.unplaceable_of("camera").items():
            print(f"camera {camera_id} cannot be placed now: {reason}", flush=True)
        if own_apps:
            serve.start(http_options={"host": config.api.host, "port": config.api.port})
        _write_address_file(config)
        store = get_store(config)
        ray.get(store.counts.remote())  # the store is up before anything writes to it
        publisher = get_publisher(config) if mqtt.enabled else None
        published_before = ray.get(store.counts.remote()).get("published", 0)
        if own_apps:
            serve.run(build_vlm_app(config.vlm), name=VLM_APP, route_prefix=None)
            serve.run(build_api_app(config), name=API_APP, route_prefix="/")
        else:
            _await_external_apps()
    except BaseException:
        if started_local:  # a failed or interrupted start leaves no Ray processes behind
            ray.shutdown()
        if broker is not None:
            broker.stop()
        raise
    host = "localhost" if config.api.host in ("0.0.0.0", "::") else config.api.host
    cluster = Cluster(
        config=config,
        started_local_ray=started_local,
        dashboard_url=dashboard,
        api_url=f"http://{host}:{config.api.port}/api/v1",
        store=store,
        publisher=publisher,
        cameras={},
        broker=broker,
        published_before=published_before,
        run=run,
        auth=auth,
        placement=CameraPlacement(config.ray.placement_timeout_s),
    )
    start_cameras(cluster, [cam.id for cam in config.cameras if cam.enabled])
    return cluster


def _await_external_apps(timeout_s: float = EXTERNAL_APPS_WAIT_S) -> None:
    """ray.deploy_serve_apps false: wait until whoever deploys `vlm` and `api` has them up."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            apps = serve.status().applications
            states = {name: str(apps[name].status) for name in (VLM_APP, API_APP) if name in apps}
        except Exception as exc:
            states = {"serve": type(exc).__name__}
        if all(states.get(name, "").endswith("RUNNING") for name in (VLM_APP, API_APP)):
            return
        time.sleep(2)
    logger.warning(
        "the Serve apps are not running yet (%s); cameras start anyway (events get the "
        "fallback text until the VLM answers)",
        states or "not deployed",
    )


def start_cameras(cluster: Cluster, camera_ids: list[str]) -> None:
    """Create camera actors; each stays in `unplaced` until Ray has placed it."""
    assert cluster.placement is not None
    for camera_id in camera_ids:
        actor, ready = launch_camera(cluster.config, camera_id)
        cluster.unplaced[camera_id] = actor
        cluster.placement.track(camera_id, ready, camera_resources(cluster.config, camera_id))


def follow_placement(cluster: Cluster) -> None:
    """Move placed cameras to `cameras`; say which cannot be placed (log, MQTT, run actor)."""
    if cluster.placement is None or not cluster.unplaced:
        return
    newly = cluster.placement.update()
    for camera_id in list(cluster.unplaced):
        if cluster.placement.placed(camera_id):
            cluster.cameras[camera_id] = cluster.unplaced.pop(camera_id)
    for camera_id, reason in newly.items():
        logger.warning("camera %s is unplaceable: %s", camera_id, reason)
        if cluster.publisher is not None:
            source_type = cluster.config.camera(camera_id).source_type
            cluster.publisher.set_camera_status.remote(
                camera_id, "unplaceable", source_type, reason
            )
    if newly or not cluster.unplaced:
        try:
            cluster.run.set_unplaceable.remote(cluster.placement.unplaceable())
        except Exception:
            logger.debug("run actor gone")


def maintain(cluster: Cluster) -> None:
    """One step of the run's housekeeping: placement, and a config handed in by `apply`."""
    from cluster.reconfigure import apply_pending

    try:
        follow_placement(cluster)
        apply_pending(cluster)
    except Exception:
        logger.exception("run housekeeping failed; retrying next tick")


def snapshot(cluster: Cluster, timeout_s: float = 5.0) -> dict[str, Any]:
    """Camera, VLM replica, MQTT and store state gathered from the actors (one wait for all)."""
    maintain(cluster)
    calls = {("camera", cid): actor.status.remote() for cid, actor in cluster.cameras.items()}
    if cluster.publisher is not None:
        calls["mqtt", ""] = cluster.publisher.status.remote()
    calls["store", ""] = cluster.store.counts.remote()
    ready, _ = ray.wait(list(calls.values()), num_returns=len(calls), timeout=timeout_s)
    done = set(ready)
    answers: dict[tuple[str, str], Any] = {}
    for key, ref in calls.items():
        try:
            answers[key] = ray.get(ref) if ref in done else TimeoutError()
        except Exception as exc:
            answers[key] = exc
    cams: dict[str, Any] = {}
    for cam_id in cluster.cameras:
        answer = answers["camera", cam_id]
        cams[cam_id] = (
            answer
            if isinstance(answer, dict)
            else {"camera_id": cam_id, "status": "unknown", "error": type(answer).__name__}
        )
    assert cluster.placement is not None
    for cam_id in cluster.unplaced:
        state, reason = cluster.placement.state(cam_id)
        cams[cam_id] = {"camera_id": cam_id, "status": state, "reason": reason}
    mqtt = answers.get(("mqtt", ""), {"enabled": False})
    if isinstance(mqtt, Exception):
        mqtt = {"enabled": True, "connected": False, "error": type(mqtt).__name__}
    store = answers["store", ""]
    if isinstance(store, Exception):
        store = {"error": type(store).__name__}
    return {"cameras": cams, "vlm": _vlm_replicas(), "mqtt": mqtt, "store": store}


def _vlm_replicas() -> list[dict[str, Any]]:
    try:
        return replica_reports()
    except Exception as exc:
        logger.debug("VLM replica reports unavailable: %s", exc)
        return []


def all_done(snap: dict[str, Any]) -> bool:
    """True when every camera finished its source and analysed every queued event (a camera
    the cluster cannot place counts as done: it was reported, and will not run)."""
    return all(
        cam.get("done") or cam.get("status") == "unplaceable" for cam in snap["cameras"].values()
    )


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
            if _stop_requested(cluster):
                logger.info("stop requested")
                break
            time.sleep(POLL_S)
            snap = snapshot(cluster)
    except KeyboardInterrupt:
        print("\ninterrupted: shutting down", file=sys.stderr)
    return snap


def _stop_requested(cluster: Cluster) -> bool:
    """Whether `liveobject stop` asked this run to stop (a store that does not answer: no)."""
    try:
        return bool(ray.get(cluster.store.stop_requested.remote(), timeout=10))
    except Exception as exc:
        logger.warning("event-store did not answer (%s); still running", type(exc).__name__)
        return False


def drain(cluster: Cluster, *, hurry: threading.Event | None = None) -> dict[str, int]:
    """Stop the cameras in data-flow order: decoding stops, then every queued and in-flight
    segment is analysed and saved (`shutdown.drain_timeout_s` bounds the wait for the VLM; then
    the fallback text is stored). `hurry` set (a second Ctrl-C) stops waiting for the VLM at
    once. Returns the cameras' counts added up (segments cut, events stored, ...)."""
    totals = dict.fromkeys(DRAIN_COUNTS, 0)
    if cluster.drained:
        return totals
    cluster.drained = True
    timeout_s = cluster.config.shutdown.drain_timeout_s
    pending = {actor.drain.remote(timeout_s): cam_id for cam_id, actor in cluster.cameras.items()}
    deadline = time.monotonic() + timeout_s + DRAIN_GRACE_S
    hurried = False
    while pending and time.monotonic() < deadline:
        if hurry is not None and hurry.is_set() and not hurried:
            hurried = True
            for cam_id in pending.values():
                cluster.cameras[cam_id].hurry.remote()
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.2)
        for ref in ready:
            cam_id = pending.pop(ref)
            try:
                report = ray.get(ref)
            except Exception as exc:
                logger.error("camera %s could not drain: %s", cam_id, type(exc).__name__)
                continue
            for key in DRAIN_COUNTS:
                totals[key] += int(report.get(key, 0))
    for cam_id in pending.values():
        logger.error("camera %s did not finish draining in time", cam_id)
    return totals


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
    """Graceful stop: cameras drained, `offline` on MQTT, store flushed; local Ray and broker
    ended. The cameras drain first (when `drain` did not run yet), so nothing they hold is lost."""
    try:
        drain(cluster)
    except Exception as exc:
        logger.error("draining the cameras failed: %s", type(exc).__name__)
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
    else:
        _release_joined(cluster)
    if cluster.broker is not None:
        cluster.broker.stop()
    if cluster.started_local_ray:
        _address_file(cluster.config).unlink(missing_ok=True)


def _release_joined(cluster: Cluster) -> None:
    """A joined cluster stays up; what this run created in it goes (see cluster.joining)."""
    try:
        joining.release_joined(cluster.config, [*cluster.cameras, *cluster.unplaced])
    except Exception as exc:
        logger.warning("removing this run's actors from the cluster failed: %s", exc)
    if cluster.run is not None:
        try:
            ray.kill(cluster.run)
        except Exception:
            logger.debug("run actor already gone")
    ray.shutdown()


def _address_file(config: Config) -> Path:
    return Path(config.storage.path) / ADDRESS_FILE


def _write_address_file(config: Config) -> None:
    path = _address_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ray.get_runtime_context().gcs_address)


def join_running(config: Config | None) -> None:
    """Connect to the cluster a `liveobject run` started or joined (for status, stop, replay)."""
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
    gcs = joining.gcs_address(address)
    if gcs is not None:
        joining.prepare_auth(gcs)  # also: nothing answering is an error now, not minutes later
    ray.init(address=gcs or address, namespace=namespace, log_to_driver=False)
