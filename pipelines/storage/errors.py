"""Storage exceptions, and how a disk-full failure is recognised."""

from __future__ import annotations

import errno

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StorageError(Exception):
    """A storage operation failed; the database is left consistent (rolled back)."""


class StorageFullError(StorageError):
    """The disk (or quota/file-size limit) is full; retry once space returns."""


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    text = str(exc).lower()
    return "no space left" in text or "file too large" in text or "quota exceeded" in text
