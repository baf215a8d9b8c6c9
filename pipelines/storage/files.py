"""Crash-safe file operations: atomic writes, directory fsync, atomic directory exchange."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import uuid
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange_dirs(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    except (AttributeError, OSError):
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL):  # old kernel or a filesystem without exchange
        return False
    raise OSError(err, os.strerror(err), str(a))
