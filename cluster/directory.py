"""Which ingest actor runs a camera, asked of the ingest actors themselves.

A run's fleet (cluster.fleet) forms the groups and knows them; whoever else needs a camera —
the API (its status, a doorbell ring), the MQTT publisher (a ring from Home Assistant),
`liveobject status` — lists the namespace's `ingest:` actors and asks them. There is no
registry to keep in step: a group that Ray restarted, or that `apply` emptied and killed,
answers for itself (or is gone from the list).

Every method blocks (Ray calls with timeouts): call it from a thread, never an event loop.
An actor that did not answer in time (not placed yet: its calls wait for resources) is not
waited on again: its pending call is kept and looked at without waiting, and the actor is asked
again once that call has answered.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray
from ray.exceptions import RayActorError

from pipelines.naming import INGEST_PREFIX, NOT_IN_GROUP

logger = logging.getLogger(__name__)

LIST_TTL_S = 5.0  # how long a listing of the ingest actors is used before listing again


def ingest_actor_names(namespace: str) -> list[str]:
    """The names of the namespace's ingest actors (blocking: one call to Ray's GCS)."""
    return sorted(
        info["name"]
        for info in ray.util.list_named_actors(all_namespaces=True)
        if info.get("namespace") == namespace and info["name"].startswith(INGEST_PREFIX)
    )


class IngestDirectory:
    """The ingest actors of a namespace and the cameras each runs (thread-safe)."""

    def __init__(self, namespace: str, list_ttl_s: float = LIST_TTL_S) -> None:
        self._namespace = namespace
        self._list_ttl_s = list_ttl_s
        self._lock = threading.Lock()
        self._actors: dict[str, Any] = {}  # name → handle
        self._listed_at = -float("inf")
        self._slow: dict[str, Any] = {}  # name → its call that did not answer in time
        self._where: dict[str, str] = {}  # camera id → actor name (from the last answers)

    def _list(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._listed_at < self._list_ttl_s:
            return
        names = ingest_actor_names(self._namespace)
        for gone in set(self._actors) - set(names):
            self._actors.pop(gone, None)
            self._slow.pop(gone, None)
        for name in names:
            if name not in self._actors:
                try:
                    self._actors[name] = ray.get_actor(name, namespace=self._namespace)
                except ValueError:  # killed between the listing and now
                    continue
        self._listed_at = time.monotonic()

    def statuses(
        self, timeout_s: float, skip: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, dict[str, Any]]:
        """Every camera's status, from every ingest actor that answers within timeout_s (one
        wait for all, the lock not held meanwhile); `skip`: actors not to ask (the run knows
        they are not placed)."""
        with self._lock:
            self._list()
            calls = {
                name: actor.status.remote()
                for name, actor in self._actors.items()
                if name not in skip and self._answered(name)
            }
        ready, _ = ray.wait(list(calls.values()), num_returns=len(calls), timeout=timeout_s)
        done = set(ready)
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for name, ref in calls.items():
                if ref not in done:
                    self._slow[name] = ref
                    continue
                try:
                    answer: dict[str, dict[str, Any]] = ray.get(ref)
                except Exception as exc:  # died (restarting, or killed): listed again next time
                    logger.debug("ingest actor %s: %s", name, type(exc).__name__)
                    self._drop(name)
                    continue
                for camera_id, status in answer.items():
                    if status.get("error") != NOT_IN_GROUP:  # else another actor runs it
                        self._where[camera_id] = name
                    out.setdefault(camera_id, status)
        return out

    def _drop(self, name: str) -> None:
        """Forget an actor that died or was killed (called with the lock held)."""
        self._actors.pop(name, None)
        self._slow.pop(name, None)
        self._where = {cid: where for cid, where in self._where.items() if where != name}
        self._listed_at = -float("inf")

    def _answered(self, name: str) -> bool:
        """False while an earlier call to this actor is still unanswered."""
        pending = self._slow.get(name)
        if pending is None:
            return True
        ready, _ = ray.wait([pending], timeout=0)
        if not ready:
            return False
        del self._slow[name]
        return True

    def locate(self, camera_id: str, timeout_s: float) -> Any | None:
        """The handle of the ingest actor that runs the camera (None: none does, or none of
        those that might answered in time)."""
        with self._lock:
            name = self._where.get(camera_id)
            if name is not None and name in self._actors:
                return self._actors[name]
            self._listed_at = -float("inf")  # a camera added since: list and ask again
        self.statuses(timeout_s)
        with self._lock:
            name = self._where.get(camera_id)
            return self._actors.get(name) if name is not None else None

    def ring(self, camera_id: str, timeout_s: float) -> dict[str, Any] | None:
        """Ring the camera's doorbell (see `Camera.ring`): its answer, or None when no ingest
        actor runs it (or none answered in time)."""
        for _attempt in range(2):  # the camera moved to another group, or its actor died
            actor = self.locate(camera_id, timeout_s)
            if actor is None:
                return None
            try:
                answer: dict[str, Any] = ray.get(actor.ring.remote(camera_id), timeout=timeout_s)
            except RayActorError:  # killed by `apply` (a new group runs it now) or crashed
                with self._lock:
                    self._drop(next((n for n, a in self._actors.items() if a is actor), ""))
                    self._where.pop(camera_id, None)
                continue
            if answer.get("reason") != NOT_IN_GROUP:
                return answer
            with self._lock:
                self._where.pop(camera_id, None)
        return None
