"""Image helpers: downscale by long side and encode as JPEG (key frames, thumbnails), and the
small grey picture motion runs on."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["encode_jpeg", "fit_long_side", "grey_small", "one_thread", "resize_long_side"]


def one_thread() -> None:
    """OpenCV without its own thread pool in this process: on motion's small pictures its
    helper threads add CPU and no speed (a camera process's cameras run side by side)."""
    cv2.setNumThreads(1)


def fit_long_side(height: int, width: int, n: int) -> tuple[int, int]:
    """(width, height) of a height x width picture downscaled so its long side is at most n
    pixels (never upscaled)."""
    if n <= 0:
        raise ValueError("n must be positive")
    long_side = max(height, width)
    if long_side <= n:
        return width, height
    factor = n / long_side
    return max(1, round(width * factor)), max(1, round(height * factor))


def resize_long_side(image: np.ndarray, n: int) -> np.ndarray:
    """Downscale an image so its long side is at most n pixels (never upscales): halved while
    it is at least twice the size, then INTER_AREA the rest of the way (a little softer than
    one INTER_AREA step, and much cheaper: OpenCV's INTER_AREA is slow at fractional factors)."""
    height, width = image.shape[:2]
    size = fit_long_side(height, width, n)
    if size == (width, height):
        return np.ascontiguousarray(image)
    while width >= 2 * size[0] and height >= 2 * size[1] and width % 2 == 0 == height % 2:
        width, height = width // 2, height // 2
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if (width, height) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def grey_small(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """An RGB (H,W,3) or grey (H,W) uint8 image as a (height, width) grey one: shrink first,
    convert after (as Frigate does: bilinear sampling; INTER_AREA or a full-size grey
    conversion costs 4-10x more per frame)."""
    small = image
    if image.shape[:2] != (height, width):
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if small.ndim == 3 else small


def encode_jpeg(image: np.ndarray, quality: int = 85, max_side: int | None = None) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes, optionally downscaled to max_side first."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    if max_side is not None:
        image = resize_long_side(image, max_side)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())
