"""The `liveobject-run` actor: the one running `liveobject run` of a namespace.

`liveobject run` creates it by name and owns it (it is not detached), so it lives exactly as
long as that process: while it exists a second `run` in the namespace is refused, and when the
run ends — cleanly or killed — Ray removes it and the name is free again. It also carries what
other processes need from the run: which cameras could not be placed (for `status` and the API),
the configs that `liveobject apply` hands over for a reconfigure in place, and a stop request
from `liveobject stop`.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import ray

from pipelines.config import Config
from pipelines.naming import RUN_ACTOR

MAX_RESULTS = 16  # apply results kept for their callers (older ones are dropped)


class AlreadyRunningError(RuntimeError):
    """Another `liveobject run` holds this namespace on this cluster."""


@ray.remote(num_cpus=0, max_restarts=0)
class RunActor:
    """Who runs the namespace, its unplaceable cameras, the apply mailbox, a stop request."""

    def __init__(self, owner: dict[str, Any]) -> None:
        self._owner = owner
        self._unplaceable: dict[str, str] = {}
        self._waiting: dict[str, list[str]] = {}
        self._next_ticket = 1
        self._pending: tuple[int, Config] | None = None
        self._results: dict[int, dict[str, Any]] = {}
        self._stop_requested = False

    def owner(self) -> dict[str, Any]:
        """host, pid and start time of the `liveobject run` that owns the namespace."""
        return dict(self._owner)

    def set_unplaceable(
        self, cameras: dict[str, str], waiting: dict[str, list[str]] | None = None
    ) -> None:
        """The cameras Ray cannot place now, each with what it needs and what is free; and
        the ingest actors not placed yet with their cameras (asking them would wait)."""
        self._unplaceable = dict(cameras)
        self._waiting = dict(waiting or {})

    def waiting(self) -> dict[str, list[str]]:
        """Ingest actor name → its cameras, for every ingest actor not placed yet."""
        return dict(self._waiting)

    def unplaceable(self) -> dict[str, str]:
        """Camera id → reason, for every camera that cannot be placed now."""
        return dict(self._unplaceable)

    def request_stop(self) -> None:
        """Ask the run to stop gracefully (`liveobject stop`): it drains, then shuts down."""
        self._stop_requested = True

    def stop_requested(self) -> bool:
        """Whether a stop was requested (the run polls this)."""
        return self._stop_requested

    def submit(self, config: Config) -> int:
        """Queue a new config for the run to apply; the ticket to ask `result` with.

        One at a time: a second submit before the run took the first replaces it (the newest
        config wins), and its caller gets the same answer.
        """
        ticket = self._next_ticket
        self._next_ticket += 1
        self._pending = (ticket, config)
        return ticket

    def take(self) -> tuple[int, Config] | None:
        """The config waiting to be applied (the run polls this), or None."""
        pending, self._pending = self._pending, None
        return pending

    def report(self, ticket: int, result: dict[str, Any]) -> None:
        """What applying the config of `ticket` did (or why it was refused)."""
        self._results[ticket] = result
        while len(self._results) > MAX_RESULTS:
            self._results.pop(min(self._results))

    def result(self, ticket: int) -> dict[str, Any] | None:
        """The report of `ticket` once the run applied it; replaced tickets say so."""
        if ticket in self._results:
            return self._results[ticket]
        if self._pending is not None and self._pending[0] > ticket:
            return {"ok": False, "error": "replaced by a newer apply before it was taken"}
        return None


def claim_run(config: Config) -> Any:
    """Create this namespace's run actor; AlreadyRunningError when another run holds it.

    A run in another namespace of the same cluster is refused too: the Serve apps `vlm` and
    `api` (and the HTTP port) are cluster-wide, so two runs would replace each other's apps.
    """
    namespace = config.ray.namespace
    for info in ray.util.list_named_actors(all_namespaces=True):
        if info["name"] == RUN_ACTOR and info["namespace"] != namespace:
            raise AlreadyRunningError(
                f"a `liveobject run` is already running on this cluster in Ray namespace "
                f"{info['namespace']!r}{_who(info['namespace'])}; its Serve apps `vlm` and "
                "`api` are cluster-wide, so one run per cluster: stop it first "
                "(`liveobject stop`) or use another cluster"
            )
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time()}
    try:
        actor = RunActor.options(  # type: ignore[attr-defined]
            name=RUN_ACTOR, namespace=namespace
        ).remote(owner)
        ray.get(actor.owner.remote(), timeout=60)
        return actor
    except ValueError:  # the name is taken: a live `liveobject run` holds it
        pass
    raise AlreadyRunningError(
        f"another `liveobject run` is already running in Ray namespace {namespace!r} on this "
        f"cluster{_who(namespace)}: change it with `liveobject apply --config FILE`, end it "
        "with `liveobject stop`, or use another ray.namespace"
    )


def _who(namespace: str) -> str:
    """` (pid P on HOST, since HH:MM:SS)` of the run holding a namespace, if it answers."""
    try:
        other: Any = ray.get(
            ray.get_actor(RUN_ACTOR, namespace=namespace).owner.remote(), timeout=10
        )
    except Exception:
        return ""
    since = time.strftime("%H:%M:%S", time.localtime(other["started_at"]))
    return f" (pid {other['pid']} on {other['host']}, since {since})"


def find_run(namespace: str) -> Any | None:
    """The run actor of a namespace, or None when no `liveobject run` is running there."""
    try:
        return ray.get_actor(RUN_ACTOR, namespace=namespace)
    except ValueError:
        return None
