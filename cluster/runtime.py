"""Start or join Ray, deploy the Serve apps and actors, and run until stopped or done.

`deploy()` brings everything up and returns a `Deployment`; its ingest actors are a
`CameraFleet` (cluster.fleet), and a config from `liveobject apply` is carried out by
cluster.reconfigure during `Deployment.housekeeping`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.exceptions import GetTimeoutError, RayActorError

from cluster import joining
from cluster.actors.publisher import get_publisher
from cluster.actors.run import claim_run
from cluster.actors.store import get_store
from cluster.fleet import CameraFleet
from cluster.peers import CameraPeers
from cluster.placement import check_fit, demands
from cluster.reconfigure import apply_pending
from pipelines.broker import EmbeddedBroker, start_embedded_broker
from pipelines.config import Config, ConfigError
from pipelines.config.api import is_loopback
from pipelines.naming import API_APP, PUBLISHER_ACTOR, STORE_ACTOR, VLM_APP
from serve_apps.api import build_api_app
from serve_apps.vlm import build_vlm_app, replica_reports

logger = logging.getLogger(__name__)

POLL_S = 1.0
DRAIN_COUNTS = ("segments", "events", "merged_pending", "fallback_at_stop", "dropped", "unsaved")
EXTERNAL_APPS_WAIT_S = 600.0  # ray.deploy_serve_apps false: how long to wait for vlm and api
# the store's first answer: opening DuckDB, or moving a corrupt file aside and rebuilding it
# from Parquet (a year of exports takes a while)
STORE_START_TIMEOUT_S = 120.0
DASHBOARD_TRIES = 3  # a busy dashboard port is replaced by a free one, racing runs included


class Deployment:
    """What `run` started or joined — Serve apps, store, publisher, camera fleet — so that
    shutdown undoes exactly that.

    `deploy()` makes one. The run loop (`wait`) calls `housekeeping` and then `snapshot` each
    tick; `drain`, `finish` and `shutdown` end the run, in that order.
    """

    def __init__(
        self,
        *,
        fleet: CameraFleet,
        store: Any,
        publisher: Any,
        run: Any,
        started_local_ray: bool,
        dashboard_url: str | None,
        api_url: str,
        auth: str = "local",
        broker: EmbeddedBroker | None = None,
        published_before: int = 0,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.publisher = publisher
        self.run = run  # the namespace's run actor (cluster.actors.run), held while we run
        self.started_local_ray = started_local_ray
        self.dashboard_url = dashboard_url
        self.api_url = api_url
        self.auth = auth  # how Ray was joined: local | disabled | token | client
        self.broker = broker
        self.published_before = published_before
        self._drained = False  # drain() ran (it runs once, on the first stop path)

    @property
    def config(self) -> Config:
        """The config running now (`apply` replaces it)."""
        return self.fleet.config

    def housekeeping(self) -> None:
        """One step of the run's upkeep: camera placement, and a config handed in by `apply`."""
        try:
            self.fleet.follow_placement()
            if self.run is not None:
                apply_pending(self.run, self.fleet)
        except Exception:
            logger.exception("run housekeeping failed; retrying next tick")

    def snapshot(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """Camera, VLM replica, MQTT and store state gathered from the actors; changes nothing."""
        deadline = time.monotonic() + timeout_s
        calls = {"store": self.store.health.remote()}  # counts, and ok/detail (disk full)
        if self.publisher is not None:
            calls["mqtt"] = self.publisher.status.remote()
        cams = self.fleet.statuses(timeout_s)
        left = max(0.0, deadline - time.monotonic())
        ready, _ = ray.wait(list(calls.values()), num_returns=len(calls), timeout=left)
        answers: dict[str, Any] = {}
        for key, ref in calls.items():
            try:
                answers[key] = ray.get(ref) if ref in ready else TimeoutError()
            except Exception as exc:
                answers[key] = exc
        mqtt = answers.get("mqtt", {"enabled": False})
        if isinstance(mqtt, Exception):
            mqtt = {"enabled": True, "connected": False, "error": type(mqtt).__name__}
        store = answers["store"]
        if isinstance(store, Exception):
            store = {"error": type(store).__name__}
        return {"cameras": cams, "vlm": _vlm_replicas(), "mqtt": mqtt, "store": store}

    def wait(
        self,
        *,
        until_done: bool,
        on_tick: Callable[[dict[str, Any]], None] | None = None,
        stop: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Block until done (file sources), `liveobject stop` or Ctrl-C; returns the last state."""
        self.housekeeping()
        snap = self.snapshot()
        try:
            while True:
                if on_tick is not None:
                    on_tick(snap)
                if until_done and all_done(snap):
                    break
                if stop is not None and stop.is_set():
                    break
                if self.stop_requested():
                    logger.info("stop requested")
                    break
                time.sleep(POLL_S)
                self.housekeeping()
                snap = self.snapshot()
        except KeyboardInterrupt:
            print("\ninterrupted: shutting down", file=sys.stderr)
        return snap

    def stop_requested(self) -> bool:
        """Whether `liveobject stop` asked this run to stop (a run actor not answering: no)."""
        if self.run is None:
            return False
        try:
            return bool(ray.get(self.run.stop_requested.remote(), timeout=10))
        except Exception as exc:
            logger.warning("run actor did not answer (%s); still running", type(exc).__name__)
            return False

    def drain(self, *, hurry: threading.Event | None = None) -> dict[str, int]:
        """Stop every camera in data-flow order (see CameraFleet.drain), once; `hurry` set (a
        second Ctrl-C) stops waiting for the VLM. Returns the cameras' counts added up."""
        totals = dict.fromkeys(DRAIN_COUNTS, 0)
        if self._drained:
            return totals
        self._drained = True
        for report in self.fleet.drain(hurry=hurry).values():
            for key in DRAIN_COUNTS:
                totals[key] += int(report.get(key, 0))
        return totals

    def finish(self, *, flush_timeout_s: float = 60.0) -> tuple[int, int]:
        """Flush MQTT and Parquet; returns (events stored, events published) for this run."""
        stored = 0
        statuses = self.fleet.statuses(timeout_s=10)
        for cam_id in self.fleet.cameras:
            try:
                stored += int(statuses[cam_id]["events"])
            except (KeyError, TypeError, ValueError):
                logger.warning("camera %s did not answer at shutdown", cam_id)
        if self.publisher is not None:
            try:
                ray.get(self.publisher.flush.remote(flush_timeout_s), timeout=flush_timeout_s + 10)
            except Exception as exc:
                logger.warning("MQTT flush did not complete: %s", type(exc).__name__)
        ray.get(self.store.flush.remote(), timeout=120)
        counts = ray.get(self.store.counts.remote(), timeout=30)
        published = max(0, int(counts.get("published", 0)) - self.published_before)
        return stored, min(published, stored) if stored else published

    def shutdown(self) -> None:
        """Graceful stop: cameras drained, `offline` on MQTT, store flushed; local Ray and broker
        ended. The cameras drain first (when `drain` did not run yet), so nothing they hold is
        lost."""
        try:
            self.drain()
        except Exception as exc:
            logger.error("draining the cameras failed: %s", type(exc).__name__)
        if self.publisher is not None:
            try:
                ray.get(self.publisher.shutdown.remote(), timeout=15)
            except Exception:
                logger.warning("publisher did not shut down cleanly")
        try:
            ray.get(self.store.close.remote(), timeout=60)
        except Exception:
            logger.warning("store did not close cleanly")
        if self.started_local_ray:
            # The apps are deleted (their replicas end gracefully); the controller and proxies
            # end with the cluster. serve.shutdown() would kill the controller under this
            # driver's own long-poll, and Ray prints that as "(raylet) Task ... failed".
            joining.delete_apps((API_APP, VLM_APP))
            for name in [PUBLISHER_ACTOR, STORE_ACTOR, *self.fleet.actor_names()]:
                try:
                    ray.kill(ray.get_actor(name, namespace=self.config.ray.namespace))
                except Exception:
                    logger.debug("actor %s already gone", name)
            ray.shutdown()
        else:
            self._release_joined()
        if self.broker is not None:
            self.broker.stop()
        if self.started_local_ray:
            joining.address_file(self.config).unlink(missing_ok=True)

    def _release_joined(self) -> None:
        """A joined cluster stays up; what this run created in it goes (see cluster.joining)."""
        try:
            joining.release_joined(self.config, self.fleet.actor_names())
        except Exception as exc:
            logger.warning("removing this run's actors from the cluster failed: %s", exc)
        if self.run is not None:
            try:
                ray.kill(self.run)
            except Exception:
                logger.debug("run actor already gone")
        ray.shutdown()


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
    # Ray's GCS keeps the events of the last 100,000 tasks by default (for its state API and
    # dashboard): every actor call is one, so on a long run its memory grows by ~120 MB in
    # half an hour until that cap (benchmarks/bench_soak.py). 10,000 keeps recent history.
    for key, value in GCS_LIMITS.items():
        os.environ.setdefault(key, value)
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
    session = getattr(context, "address_info", {}).get("session_dir")
    if session:
        _SESSION["logs"] = str(Path(session) / "logs")
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


_SESSION: dict[str, str] = {}  # this process's local Ray session: where its logs are


def ray_logs_dir() -> str | None:
    """The log folder of the local Ray cluster this process started (None: joined or none)."""
    return _SESSION.get("logs")


GCS_LIMITS = {"RAY_task_events_max_num_task_in_gcs": "10000"}  # a user's setting stays


class StoreStartError(RuntimeError):
    """The event store did not come up; the message names it, its path and why."""


def store_counts(store: Any, config: Config, timeout_s: float = STORE_START_TIMEOUT_S) -> Any:
    """The store's first answer (its counts), within timeout_s, or StoreStartError."""
    where = f"the event store (`{STORE_ACTOR}` actor, storage.path {config.storage.path})"
    try:
        return ray.get(store.counts.remote(), timeout=timeout_s)
    except GetTimeoutError:
        raise StoreStartError(f"{where} did not answer within {timeout_s:g} s") from None
    except RayActorError as exc:
        cause = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        raise StoreStartError(f"{where} failed to start: {cause}") from None


def deploy(
    config: Config,
    *,
    include_dashboard: bool = True,
    after_connect: Callable[[], None] | None = None,
) -> Deployment:
    """Bring up every part: broker (demo), store, publisher, Serve apps, ingest actors.

    Before anything is created: the namespace is claimed (a second run is refused), what an
    earlier run left on a joined cluster is removed, and the config is checked against the
    cluster's resources (a VLM that cannot be placed fails here, with the reason).
    """
    own_apps = config.ray.deploy_serve_apps
    refusal = config.api.exposure_refusal() if own_apps else None
    if refusal is not None:
        raise ConfigError([refusal])
    if own_apps and config.api.allow_unauthenticated and not is_loopback(config.api.host):
        logger.warning(
            "API OPEN WITHOUT A KEY on %s:%d (api.allow_unauthenticated): anyone who reaches "
            "it reads every event and thumbnail and can ring the doorbell",
            config.api.host,
            config.api.port,
        )
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
        if not started_local:
            joining.replace_leftovers(config)
        wanted = [d for d in demands(config) if own_apps or d.kind not in ("vlm", "api")]
        fit = check_fit(config, wanted)
        for cameras, reason in fit.unplaceable_of("camera").items():
            what = "cameras" if ", " in cameras else "camera"
            print(f"{what} {cameras} cannot be placed now: {reason}", flush=True)
        if own_apps:
            serve.start(http_options={"host": config.api.host, "port": config.api.port})
        _write_address_file(config)
        store = get_store(config)
        # the store is up (or rebuilt from Parquet) before anything writes to it
        published_before = store_counts(store, config).get("published", 0)
        publisher = get_publisher(config, store) if mqtt.enabled else None
        if own_apps:  # both at once: the API starts while the VLM replica loads its model
            serve.run_many(
                [
                    serve.RunTarget(build_vlm_app(config.vlm), name=VLM_APP, route_prefix=None),
                    serve.RunTarget(build_api_app(config), name=API_APP, route_prefix="/"),
                ]
            )
        else:
            _await_external_apps()
    except BaseException:
        if started_local:  # a failed or interrupted start leaves no Ray processes behind
            ray.shutdown()
        if broker is not None:
            broker.stop()
        raise
    host = "localhost" if config.api.host in ("0.0.0.0", "::") else config.api.host
    fleet = CameraFleet(config, CameraPeers.of(config, store, publisher), run=run)
    deployment = Deployment(
        fleet=fleet,
        store=store,
        publisher=publisher,
        run=run,
        started_local_ray=started_local,
        dashboard_url=dashboard,
        api_url=f"http://{host}:{config.api.port}/api/v1",
        auth=auth,
        broker=broker,
        published_before=published_before,
    )
    fleet.start([cam.id for cam in config.cameras if cam.enabled])
    return deployment


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


def _write_address_file(config: Config) -> None:
    path = joining.address_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ray.get_runtime_context().gcs_address)
