"""InboundHandler: what the publisher does with HA birth, camera registry and ring messages."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from pipelines.mqtt.inbound import MAX_REGISTRY_IDS, InboundHandler, InboundHooks
from pipelines.mqtt.topics import COMPONENTS, Topics, camera_registry_payload
from tests.support.waiting import wait_for


class Core:
    """Records what the handler asks of the publisher core."""

    def __init__(
        self, cameras: set[str], ring: bool = True, doorbells: set[str] | None = None
    ) -> None:
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
            is_doorbell=(lambda cid: cid in doorbells) if doorbells is not None else lambda _: True,
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
    wait_for(lambda: len(core.published) == len(COMPONENTS), 10, "the clears (a worker sends)")
    assert set(core.published) == expected
    assert core.counts["discovery_cleared"] == len(COMPONENTS)
    core.published.clear()
    handler.handle("lo/cameras", camera_registry_payload(["front_door"], "ha").encode(), True)
    time.sleep(0.2)
    assert core.published == []  # our own registry echoed back: nothing to clear
    handler.stop()


@pytest.mark.parametrize(
    ("payload", "retained"),
    [
        (camera_registry_payload(["front_door"], "other").encode(), True),  # another instance's
        (b" " * (1 << 20) + b"{}", True),  # 1 MiB
        (
            json.dumps(
                {
                    "cameras": [f"c{i}" for i in range(MAX_REGISTRY_IDS + 1)],
                    "discovery_prefix": "ha",
                }
            ).encode(),
            True,
        ),
    ],
    ids=["other-prefix", "1MiB", "too-many-ids"],
)
def test_a_registry_that_is_not_ours_clears_nothing(payload: bytes, retained: bool) -> None:
    core = Core({"front_door"})
    handler = InboundHandler(TOPICS, core.hooks, discovery=True)
    handler.handle("lo/cameras", payload, retained)
    wait_for(lambda: core.counts["registry_ignored"] == 1, 10, "the registry ignored")
    assert core.published == []
    handler.stop()


def test_a_live_registry_is_not_acted_on() -> None:
    """Only the previous run's registry, handed over retained on subscribe, clears anything;
    a live one is our own echo or somebody else's."""
    core = Core({"front_door"})
    handler = InboundHandler(TOPICS, core.hooks, discovery=True)
    handler.handle("lo/cameras", camera_registry_payload(["garage"], "ha").encode(), False)
    time.sleep(0.2)
    assert core.published == []
    handler.stop()


def test_ha_births_are_coalesced() -> None:
    core = Core(set())
    handler = InboundHandler(TOPICS, core.hooks, discovery=True)
    handler.birth_debounce_s = 0.5
    for _ in range(100):
        handler.handle("ha/status", b"online", False)
    assert core.republished == 1  # the first at once
    wait_for(lambda: core.republished == 2, 10, "one re-send when the debounce ends")
    time.sleep(0.7)
    assert core.republished == 2 and core.counts["births_coalesced"] == 99
    handler.stop()


@pytest.mark.parametrize(
    "payload", [b"", b"junk", b'{"cameras": ["a/b", "#"], "discovery_prefix": "ha"}']
)
def test_bad_registry_clears_nothing(payload: bytes) -> None:
    core = Core(set())
    handler = InboundHandler(TOPICS, core.hooks, discovery=True)
    handler.handle("lo/cameras", payload, True)
    time.sleep(0.2)
    assert core.published == []
    handler.stop()


def test_made_up_ring_ids_do_not_reset_the_doorbells_limit() -> None:
    core = Core(set(), doorbells={"door"})
    handler = InboundHandler(TOPICS, core.hooks, discovery=True, ring_rate_per_min=2)
    for _ in range(3):
        handler.handle("lo/camera/door/ring", b"PRESS", False)
    assert core.rings == ["door", "door"] and core.counts["rings_rate_limited"] == 1
    for i in range(1024):
        handler.handle(f"lo/camera/fake{i}/ring", b"PRESS", False)
    handler.handle("lo/camera/door/ring", b"PRESS", False)
    assert core.rings == ["door", "door"]  # still limited: its bucket was not evicted
    assert core.counts["rings_rate_limited"] == 2 and core.counts["rings_ignored"] == 1024


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
