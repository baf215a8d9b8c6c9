"""A small, fillable disk for full-disk tests: a size-limited tmpfs (root on Linux)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of `size` at path (root on Linux only); whether it worked. The caller
    unmounts it (`umount -l`)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or sys.platform != "linux":
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def fill_disk(path: Path, keep_free: int) -> Path:
    """Fill the filesystem of path up to keep_free bytes with one file; that file."""
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    filler = path / "filler"
    with open(filler, "wb") as fh:
        chunk = b"\0" * (1 << 16)
        remaining = max(0, free - keep_free)
        try:
            while remaining > 0:
                remaining -= fh.write(chunk[: min(len(chunk), remaining)])
        except OSError:
            pass
    return filler
