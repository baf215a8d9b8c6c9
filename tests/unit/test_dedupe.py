"""Near-duplicate suppression: fingerprints, the default threshold, and the reference logic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest

from pipelines.config import DedupeConfig
from pipelines.imaging import encode_jpeg
from pipelines.samples import _draw_object, sample_background
from pipelines.vlm.dedupe import Analysed, Deduper, distance, fingerprint

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT = DedupeConfig()
SIZES = [(320, 240), (640, 480), (1280, 720)]


def jpeg_noisy(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The image with sensor-like noise, through JPEG quality 60 and back."""
    noise = rng.standard_normal(image.shape, dtype=np.float32)  # float32: 3x faster at 720p
    noise *= sigma
    noise += image
    data = encode_jpeg(np.clip(noise, 0, 255, out=noise).astype(np.uint8), quality=60)
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def with_object(scene: np.ndarray, kind: int, fx: float, fy: float, scale: int) -> np.ndarray:
    image = scene.copy()
    _draw_object(image, kind, fx * image.shape[1], fy * image.shape[0], scale)
    return image


@pytest.mark.parametrize("size", SIZES)
def test_the_same_scene_stays_within_the_default_distance(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(4)
    for seed in range(3):
        scene = sample_background(size, seed)
        base = fingerprint(scene)
        variants = [jpeg_noisy(scene, sigma, rng) for sigma in (2, 4, 8, 12, 16)]
        variants.append(np.clip(scene.astype(np.float32) * 1.3 + 10, 0, 255).astype(np.uint8))
        variants.append((scene * 0.6).astype(np.uint8))  # dusk: darker, less contrast
        for image in variants:
            assert distance(base, fingerprint(image)) <= DEFAULT.max_distance


@pytest.mark.parametrize("size", SIZES)
def test_a_changed_scene_is_never_within_the_default_distance(size: tuple[int, int]) -> None:
    """Every new object (car or person, 3 sizes, 9 places, 3 scenes) is a new scene, also
    through noise and JPEG: the default never reuses a description for it."""
    rng = np.random.default_rng(5)
    for seed in range(3):
        scene = sample_background(size, seed)
        base = fingerprint(jpeg_noisy(scene, 4, rng))
        height = scene.shape[0]
        for kind in (0, 1):
            for scale in (height // 5, height // 8, height // 10):
                for fx in (0.1, 0.5, 0.9):
                    for fy in (0.2, 0.5, 0.8):
                        changed = jpeg_noisy(with_object(scene, kind, fx, fy, scale), 4, rng)
                        d = distance(base, fingerprint(changed))
                        assert d > DEFAULT.max_distance, (seed, kind, scale, fx, fy, d)
        # the same object somewhere else is a changed scene too
        left = fingerprint(with_object(scene, 1, 0.2, 0.5, height // 5))
        right = fingerprint(with_object(scene, 1, 0.7, 0.5, height // 5))
        assert distance(left, right) > DEFAULT.max_distance


def analysed(event_id: str, image: np.ndarray, at: datetime) -> Analysed:
    return Analysed(
        event_id=event_id,
        at=at,
        signature=fingerprint(image),
        description=f"described {event_id}",
        objects=("vehicle",),
        confidence=61,
        ai_confidence=None,
        confidence_source="tokens",
    )


def test_reuse_within_the_window_and_distance_only() -> None:
    scene = sample_background((320, 240), 1)
    changed = with_object(scene, 0, 0.5, 0.5, 48)

    async def flow() -> None:
        dedupe = Deduper(window_s=60, max_distance=1)
        first = await dedupe.lookup(scene, T0)
        assert first.reuse is None and first.ticket is not None
        dedupe.done(first, analysed("e1", scene, T0))
        same = await dedupe.lookup(scene.copy(), T0 + timedelta(seconds=30))
        assert same.reuse is not None and same.reuse.event_id == "e1" and same.distance == 0
        dedupe.done(same, None)  # a reuse is never a reference itself
        assert dedupe.last is not None and dedupe.last.event_id == "e1"
        other = await dedupe.lookup(changed, T0 + timedelta(seconds=31))
        assert other.reuse is None and (other.distance or 0) > 1
        dedupe.done(other, None)  # e.g. the VLM was down: no new reference
        late = await dedupe.lookup(scene, T0 + timedelta(seconds=61))
        assert late.reuse is None  # out of the window: described afresh
        dedupe.done(late, analysed("e2", scene, T0 + timedelta(seconds=61)))
        assert dedupe.reused == 1 and dedupe.last.event_id == "e2"
        off = Deduper(window_s=60, max_distance=1, enabled=False)
        assert (await off.lookup(scene, T0)).reuse is None and off.last is None

    asyncio.run(flow())


def test_a_near_duplicate_waits_for_the_analysis_in_flight() -> None:
    scene = sample_background((320, 240), 2)
    changed = with_object(scene, 1, 0.3, 0.5, 48)

    async def flow() -> None:
        dedupe = Deduper(window_s=60, max_distance=1)
        first = await dedupe.lookup(scene, T0)
        waiting = asyncio.create_task(dedupe.lookup(scene, T0 + timedelta(seconds=1)))
        different = await dedupe.lookup(changed, T0 + timedelta(seconds=2))
        assert different.ticket is not None  # a different scene does not wait
        await asyncio.sleep(0.01)
        assert not waiting.done() and dedupe.waited == 1
        dedupe.done(first, analysed("e1", scene, T0))
        second = await asyncio.wait_for(waiting, 5)
        assert second.reuse is not None and second.reuse.event_id == "e1"
        dedupe.done(different, None)
        assert dedupe.last is not None and dedupe.last.event_id == "e1"

    async def waits_then_claims() -> None:
        # an analysis that ends without an answer lets the waiter analyse itself
        dedupe = Deduper(window_s=60, max_distance=1)
        first = await dedupe.lookup(changed, T0)
        waiting = asyncio.create_task(dedupe.lookup(changed, T0 + timedelta(seconds=1)))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        dedupe.done(first, None)
        claimed = await asyncio.wait_for(waiting, 5)
        assert claimed.reuse is None and claimed.ticket is not None

    asyncio.run(asyncio.wait_for(flow(), 10))
    asyncio.run(asyncio.wait_for(waits_then_claims(), 10))
