"""InboundHandler: what the publisher does with HA birth, camera registry and ring messages."""

from __future__ import annotations

from collections import Counter

import pytest

from pipelines.mqtt.inbound import InboundHandler, InboundHooks
from pipelines.mqtt.topics import COMPONENTS, Topics, camera_registry_payload


class Core:
    """Records what the handler asks of the publisher core."""

    def __init__(self, cameras: set[str], ring: bool = True) -> None:
        self.cameras = cameras
        self.published: list[tuple[str, str]] = []
        self.republished = 0
        self.counts: Counter[str] = Counter()
        self.rings: list[str] = []
        self.hooks = InboundHooks(
            publish_retained=lambda t, p: self.published.append((t, p)),
            current_cameras=lambda: set(self.cameras),
            republish_state=self._republish,
            count=lambda name, n: self.counts.update({name: n}),
            on_ring=self.rings.append if ring else None,
        )

    def _republish(self) -> None:
        self.republished += 1


TOPICS = Topics("lo", "ha")


def test_subscriptions_depend_on_discovery_and_ring() -> None:
    assert InboundHandler(TOPICS, Core(set()).hooks, discovery=True).subscriptions() == [
        ("ha/status", 1),
        ("lo/cameras", 1),
        ("lo/camera/+/ring", 1),
    ]
    assert (
        InboundHandler(TOPICS, Core(set(), ring=False).hooks, discovery=False).subscriptions() == []
    )


def test_ha_online_republishes_state() -> None:
    core = Core(set())
    handler = InboundHandler(TOPICS, core.hooks, discovery=True)
    handler.handle("ha/status", b"offline", False)
    handler.handle("ha/status", b"online", True)
    assert core.republished == 1


def test_registry_clears_only_removed_cameras() -> None:
    core = Core({"front_door"})
    handler = InboundHandler(TOPICS, core.hooks, discovery=True)
    handler.handle(
        "lo/cameras", camera_registry_payload(["front_door", "garage"], "ha").encode(), True
    )
    expected = {(TOPICS.discovery(c, "garage", o), "") for c, o in COMPONENTS}
    assert set(core.published) == expected and len(core.published) == len(COMPONENTS)
    assert core.counts["discovery_cleared"] == len(COMPONENTS)
    core.published.clear()
    handler.handle("lo/cameras", camera_registry_payload(["front_door"], "ha").encode(), True)
    assert core.published == []  # our own registry echoed back: nothing to clear


def test_registry_under_old_discovery_prefix_is_cleared_entirely() -> None:
    core = Core({"front_door"})
    handler = InboundHandler(TOPICS, core.hooks, discovery=True)
    handler.handle("lo/cameras", camera_registry_payload(["front_door"], "old").encode(), True)
    old = Topics("lo", "old")
    assert {t for t, _ in core.published} == {
        old.discovery(c, "front_door", o) for c, o in COMPONENTS
    }


@pytest.mark.parametrize(
    "payload", [b"", b"junk", b'{"cameras": ["a/b", "#"], "discovery_prefix": "ha"}']
)
def test_bad_registry_clears_nothing(payload: bytes) -> None:
    core = Core(set())
    InboundHandler(TOPICS, core.hooks, discovery=True).handle("lo/cameras", payload, True)
    assert core.published == []


def test_rings() -> None:
    core = Core(set())
    handler = InboundHandler(TOPICS, core.hooks, discovery=True)
    handler.handle("lo/camera/door/ring", b"PRESS", False)
    handler.handle("lo/camera/door/ring", b"PRESS", True)  # retained
    handler.handle("lo/camera/door/ring", b"", False)  # clearing a retained ring
    handler.handle("lo/camera/Door/ring", b"PRESS", False)  # not a camera id
    handler.handle("lo/camera/door/event", b"PRESS", False)  # not a ring topic
    assert core.rings == ["door"]
    assert core.counts == Counter(rings_received=1, rings_ignored=3)


def test_ring_callback_that_raises_is_contained() -> None:
    core = Core(set())

    def boom(_camera_id: str) -> None:
        raise RuntimeError("boom")

    hooks = InboundHooks(**{**core.hooks.__dict__, "on_ring": boom})
    InboundHandler(TOPICS, hooks, discovery=True).handle("lo/camera/door/ring", b"1", False)
    assert core.counts["rings_received"] == 1
