"""One real Ray cluster (with Serve) per integration test session, torn down at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.browser import browser  # noqa: F401 (the fixture, for every module here)
from tests.support.network import free_port
from tests.support.openai_server import PACED_ANSWER, FakeOpenAI, Reply, serve_fake
from tests.support.ray_cluster import RaySession


@pytest.fixture(scope="session")
def ray_session() -> Iterator[RaySession]:
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    port = free_port()
    ray.init(
        address="local",  # a new cluster even when another one runs on this machine
        num_cpus=4,
        namespace="liveobject",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield RaySession(namespace="liveobject", serve_port=port)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


@pytest.fixture
def fake_vlm() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible fake answering PACED_ANSWER at once: the VLM of the runs whose
    checks are not about the model (`tests/support/cli.py`'s `openai_vlm` says which)."""
    yield from serve_fake(Reply(PACED_ANSWER))
