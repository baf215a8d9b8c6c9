"""Frames for tests: small JPEGs whose pixels differ by colour."""

from __future__ import annotations

import io

from PIL import Image


def jpeg(
    color: tuple[int, int, int] = (128, 128, 128),
    size: tuple[int, int] = (96, 64),
    *,
    stripe: bool = True,
    quality: int = 90,
) -> bytes:
    """A small solid JPEG; with `stripe` a band on the left, so colours give different pixels."""
    img = Image.new("RGB", size, color)
    if stripe:
        img.paste((255 - color[0], 128, color[2] // 2), (0, 0, size[0] // 3, size[1]))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
