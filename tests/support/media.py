"""Frames for tests: small JPEGs whose pixels differ by colour; the decoder threads running."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

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


def ffmpeg_threads() -> list[str]:
    """Names of this process's FFmpeg worker threads (FFmpeg names them `av:<codec>:…`)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended while listed
            names.append((task / "comm").read_text().strip())
    return sorted(name for name in names if name.startswith("av:"))
