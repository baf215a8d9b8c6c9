"""Joining a Ray cluster that outlives one `liveobject run`: auth, ports, leftovers.

Token auth: this Ray version starts a head with token authentication whenever a token exists
on that machine (`~/.ray/auth_token`, which any earlier local run creates), and a client only
sends its token when `RAY_AUTH_MODE=token`. Before `ray.init` joins, `prepare_auth` asks the
head's GCS directly (one quick RPC, no retries): first without a token, then — if the head
wants one — with this machine's token. The error says which side is missing what. A
`RAY_AUTH_MODE` set by the user is respected as is.

Leftovers: the `event-store` and `mqtt-publisher` are detached, so they outlive a run. A run
that joins a cluster holds the namespace's run actor (cluster.actors.run) before it touches
them, so any that exist belong to an earlier run: `replace_leftovers` closes and removes them
(and that run's cameras and Serve apps) so nothing stale — a closed store, a publisher with the
old camera list — is handed out. `release_joined` does the same at the end of a clean run.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from pipelines.config import Config
from pipelines.naming import (
    API_APP,
    BUDGET_ACTOR,
    PUBLISHER_ACTOR,
    STORE_ACTOR,
    VLM_APP,
)

logger = logging.getLogger(__name__)

AUTH_ENV = "RAY_AUTH_MODE"
ADDRESS_FILE = ".ray-address"  # under storage.path: how status/stop/replay find a local run
COPY_HELP = (
    "copy the head's token here (run `ray get-auth-token` on the head, then put it in "
    "~/.ray/auth_token or RAY_AUTH_TOKEN)"
)
GONE_WAIT_S = 15.0
APPS_DELETE_TIMEOUT_S = 60.0  # deleted Serve apps: their replicas' graceful shutdown


class JoinError(ConnectionError):
    """The cluster at ray.address cannot be joined; the message says why and what to do."""


def gcs_address(address: str) -> str | None:
    """host:port of the head's GCS for `address` ("auto" resolved); None for ray:// clients."""
    if address.startswith("ray://"):
        return None
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            found = canonicalize_bootstrap_address("auto")
        except Exception:
            found = None
        if not found:
            raise JoinError(
                "ray.address is 'auto' but no Ray cluster was started on this machine "
                "(`ray start --head`); set ray.address to the head's host:port"
            )
        return str(found)
    return address


def reachable(address: str, timeout_s: float = 3.0) -> bool:
    """Whether something accepts TCP connections at host:port."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _set_auth_mode(mode: str) -> None:
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]
    from ray._raylet import Config as RayletConfig  # type: ignore[attr-defined]

    os.environ[AUTH_ENV] = mode
    RayletConfig.initialize("")  # Ray reads the mode from its cached config
    AuthenticationTokenLoader.instance().reset_cache()


def _token_available() -> bool:
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

    return bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))


def _probe(gcs: str) -> None:
    """One GCS RPC with the current auth mode; AuthenticationError when the head refuses."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    GcsClient(address=gcs).cluster_id  # noqa: B018 (the call is the probe)


def prepare_auth(gcs: str) -> str:
    """Pick the auth mode the head at `gcs` accepts ("disabled" or "token") and set it.

    Raises JoinError naming the head's mode and what this machine lacks.
    """
    from ray.exceptions import AuthenticationError

    if not reachable(gcs):
        raise JoinError(f"nothing answers at {gcs} (is the Ray head running?)")
    chosen = os.environ.get(AUTH_ENV)
    if chosen:
        try:
            _set_auth_mode(chosen.lower())
            _probe(gcs)
        except AuthenticationError:
            raise JoinError(
                f"the Ray head at {gcs} refused this connection with {AUTH_ENV}={chosen} set "
                f"here: the head uses token authentication; {COPY_HELP}"
            ) from None
        return chosen.lower()
    try:
        _set_auth_mode("disabled")
        _probe(gcs)
        return "disabled"
    except AuthenticationError:
        pass
    if not _token_available():
        _set_auth_mode("disabled")
        raise JoinError(
            f"the Ray head at {gcs} uses token authentication and no token was found on "
            f"this machine: {COPY_HELP}"
        )
    try:
        _set_auth_mode("token")
        _probe(gcs)
        return "token"
    except AuthenticationError:
        raise JoinError(
            f"the Ray head at {gcs} uses token authentication and rejected this machine's "
            f"token (another cluster's): {COPY_HELP}"
        ) from None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound on `host` now."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_pids() -> set[int]:
    """The pids of this process's descendants now."""
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


def end_children(keep: set[int]) -> None:
    """End the descendants started since `keep` was taken (a Ray start that failed halfway)."""
    import psutil

    procs = [c for c in psutil.Process().children(recursive=True) if c.pid not in keep]
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            continue
    _gone, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            continue


def dashboard_port(wanted: int) -> int:
    """`wanted` when it is free, else a free port (said once, the way Ray says its own)."""
    if port_free(wanted):
        return wanted
    port = free_port()
    logger.warning("Ray dashboard port %d is busy; using %d", wanted, port)
    print(f"Ray dashboard port {wanted} is busy (another Ray?); using {port}", flush=True)
    return port


# ---- leftovers of an earlier run on a joined cluster ---------------------------------------
def _actor(name: str, namespace: str) -> Any | None:
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def _remove(name: str, namespace: str, closing: str | None, timeout_s: float) -> bool:
    """Call `closing` on a named actor (if it exists), kill it, wait until the name is free."""
    import ray

    actor = _actor(name, namespace)
    if actor is None:
        return False
    if closing is not None:
        try:
            ray.get(getattr(actor, closing).remote(), timeout=timeout_s)
        except Exception as exc:
            logger.warning("%s did not %s cleanly: %s", name, closing, type(exc).__name__)
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + GONE_WAIT_S
    while _actor(name, namespace) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def remove_deployment(config: Config, *, graceful: bool) -> list[str]:
    """Remove the named actors and Serve apps of the namespace; what was removed.

    graceful: stop cameras, shut the publisher (`offline`) and close the store first.
    """

    from cluster.directory import ingest_actor_names

    namespace = config.ray.namespace
    steps: list[tuple[str, str | None, float]] = [
        (name, "stop", 15.0) for name in ingest_actor_names(namespace)
    ]
    steps += [(PUBLISHER_ACTOR, "shutdown", 15.0), (STORE_ACTOR, "close", 60.0)]
    steps.append((BUDGET_ACTOR, None, 5.0))
    removed = [
        name
        for name, closing, timeout_s in steps
        if _remove(name, namespace, closing if graceful else None, timeout_s)
    ]
    if not config.ray.deploy_serve_apps:  # the apps are someone else's (KubeRay RayService)
        return removed
    removed += [f"serve app {app}" for app in delete_apps((VLM_APP, API_APP))]
    return removed


def delete_apps(names: tuple[str, ...], timeout_s: float = APPS_DELETE_TIMEOUT_S) -> list[str]:
    """Delete those of the Serve apps `names` that exist, all at once, and wait until they are
    gone (their replicas end gracefully); the names deleted. (`serve.delete` one by one
    waits for each in turn, a second or more apiece.)"""
    from ray import serve

    try:
        running = serve.status().applications
    except Exception:
        return []
    existing = [name for name in names if name in running]
    for name in existing:
        try:
            serve.delete(name, _blocking=False)
        except Exception as exc:  # the rest of a shutdown goes on (actors, Ray, the broker)
            logger.warning("deleting the Serve app %s failed: %s", name, type(exc).__name__)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if not set(existing) & set(serve.status().applications):
                return existing
        except Exception:
            logger.debug("Serve status unavailable while deleting the apps")
            return existing
        time.sleep(0.1)
    logger.warning("the Serve apps %s were not deleted within %.0f s", existing, timeout_s)
    return existing


def replace_leftovers(config: Config) -> None:
    """Before a run on a joined cluster: remove what an earlier run left in the namespace."""
    removed = remove_deployment(config, graceful=True)
    if removed:
        logger.info("removed leftovers of an earlier run: %s", ", ".join(removed))


def release_joined(config: Config, ingest_actors: list[str]) -> None:
    """After a run on a joined cluster (already drained and closed): leave the cluster up
    with nothing of this run in it, so the next run starts from its own config."""
    from ray import serve

    namespace = config.ray.namespace
    for name in ingest_actors:
        _remove(name, namespace, None, 5)
    remove_deployment(config, graceful=False)
    if not config.ray.deploy_serve_apps:
        return
    try:
        if not serve.status().applications:  # Serve ran only our apps: the next run's own
            serve.shutdown()  # http options (api.port) then apply
    except Exception as exc:
        logger.warning("shutting Serve down failed: %s", type(exc).__name__)


def address_file(config: Config) -> Path:
    """Where a run records the address of its cluster (a local one's port is chosen free)."""
    return Path(config.storage.path) / ADDRESS_FILE


def join_running(config: Config | None) -> None:
    """Connect to the cluster a `liveobject run` started or joined (for status, stop, replay;
    here, not in `cluster.runtime`, so that those commands import no more than they use)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = "auto"
    namespace = "liveobject"
    if config is not None:
        namespace = config.ray.namespace
        recorded = address_file(config)
        if config.ray.address:
            address = config.ray.address
        elif recorded.exists():
            address = recorded.read_text().strip()
    gcs = gcs_address(address)
    if gcs is not None:
        prepare_auth(gcs)  # also: nothing answering is an error now, not minutes later
    ray.init(address=gcs or address, namespace=namespace, log_to_driver=False)
