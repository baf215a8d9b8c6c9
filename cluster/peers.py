"""Collaborators' handles, resolved once by whoever creates an actor and passed in.

Ray keeps a restarted actor's identity, so a handle to the detached `event-store` or
`mqtt-publisher` stays valid across their restarts: actors are given handles at construction
(as Serve's `.bind()` composes deployments) and never look a peer up on each call.
`NamedActor` is the one fallback for a peer that did not exist yet when the handle was wanted,
or that died for good and was replaced under its name: it resolves the name in a worker thread
(never blocking an event loop), at most every `retry_s`, and keeps the handle once found.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import ray

from cluster.actors.budget import budget_spec, get_budget
from pipelines.config import Config
from pipelines.naming import PUBLISHER_ACTOR, STORE_ACTOR, VLM_APP, VLM_DEPLOYMENT

logger = logging.getLogger(__name__)

RESOLVE_RETRY_S = 5.0  # a missing peer is looked for again after this long, not on every call


class NamedActor:
    """A named actor's handle: given, or resolved off the event loop and cached."""

    def __init__(
        self, name: str, namespace: str, handle: Any = None, retry_s: float = RESOLVE_RETRY_S
    ) -> None:
        self.name = name
        self._namespace = namespace
        self._handle = handle
        self._retry_s = retry_s
        self._next_try = 0.0
        self._lookup: asyncio.Task[Any | None] | None = None  # held: a task nobody holds may go

    async def get(self) -> Any | None:
        """The handle, or None while no actor of that name exists."""
        if self._handle is None and time.monotonic() >= self._next_try:
            self._next_try = time.monotonic() + self._retry_s
            self._handle = await asyncio.to_thread(self.lookup)
        return self._handle

    def get_nowait(self) -> Any | None:
        """The handle if known; else schedule a lookup on the running loop and return None."""
        if self._handle is None and time.monotonic() >= self._next_try:
            if self._lookup is None or self._lookup.done():
                self._lookup = asyncio.get_running_loop().create_task(self.get())
        return self._handle

    def forget(self) -> None:
        """Drop the handle (its actor died for good): the next get() resolves the name again."""
        self._handle = None

    def lookup(self) -> Any | None:
        """Resolve the name now (blocking: call from a thread or the driver)."""
        try:
            return ray.get_actor(self.name, namespace=self._namespace)
        except ValueError:
            return None


@dataclass(frozen=True)
class CameraPeers:
    """What an ingest actor's cameras talk to: the store, the publisher, the VLM, the budget."""

    store: Any
    publisher: Any | None  # None: MQTT off, or not created yet (resolved later)
    vlm: Any | None  # a Serve DeploymentHandle; None: Serve not up yet (resolved later)
    # the `vlm-budget` actor, created here so that it lives as long as this process, not as
    # long as whichever camera used it first; None: no global budget
    budget: Any | None = None

    @classmethod
    def of(cls, config: Config, store: Any, publisher: Any | None) -> CameraPeers:
        """The peers for these store and publisher handles (blocking: the driver's call)."""
        return cls(store=store, publisher=publisher, vlm=vlm_handle(), budget=budget_for(config))

    @classmethod
    def find(cls, config: Config) -> CameraPeers:
        """Resolve the peers by name (blocking: for the driver and tests, not an event loop)."""
        namespace = config.ray.namespace
        store = NamedActor(STORE_ACTOR, namespace).lookup()
        publisher = NamedActor(PUBLISHER_ACTOR, namespace).lookup()
        return cls.of(config, store, publisher)

    def completed(self, config: Config) -> CameraPeers:
        """These peers with a VLM handle and budget looked for again where they are missing."""
        if self.vlm is not None and (self.budget is not None or budget_spec(config) is None):
            return self
        return replace(self, vlm=self.vlm or vlm_handle(), budget=self.budget or budget_for(config))


def budget_for(config: Config) -> Any | None:
    """The `vlm-budget` actor for this config, created if missing; None without a budget."""
    spec = budget_spec(config)
    return None if spec is None else get_budget(config, spec)


def vlm_handle() -> Any | None:
    """A handle to the `vlm` deployment, or None when Serve is not running here yet."""
    from ray import serve

    try:
        return serve.get_deployment_handle(VLM_DEPLOYMENT, app_name=VLM_APP, _check_exists=False)
    except Exception as exc:
        logger.debug("no VLM handle yet: %s", type(exc).__name__)
        return None
