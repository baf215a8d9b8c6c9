"""Fixtures shared by unit and integration tests: a real mosquitto on a free port, and the tiny
random-weight VLM, built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first (their `heavy` seconds). Under `make test`'s xdist (`--dist
    loadfile`), xdist then orders modules by their number of tests, keeping this order among
    equals; measured with two workers, they still ended within ~25 s of each other, and
    forcing this order (`--no-loadscope-reorder`) was not faster (707 s against 623-634 s)."""

    def seconds(item: pytest.Item) -> float:
        marker = item.get_closest_marker("heavy")
        return float(marker.args[0]) if marker and marker.args else 0.0

    items.sort(key=seconds, reverse=True)  # stable: a module's tests stay together, in order


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight VLM (`tiny-vlm`, seed 0), built once; tests only read it."""
    from pipelines.vlm.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-vlm")
