"""Storage exceptions, and how a disk-full failure is recognised."""

from __future__ import annotations

import errno

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StorageError(Exception):
    """A storage operation failed; the database is left consistent (rolled back)."""


class StorageFullError(StorageError):
    """The disk (or quota/file-size limit) is full; retry once space returns."""


class DuplicateEventError(StorageError):
    """A batch held an event id the lookup before it had not found stored (rolled back)."""


class StoreBusyError(StorageError):
    """The store's write queue is full (or it is closing): nothing was stored; retry later.

    The push-back of a bounded write queue: the caller keeps the event and retries with
    backoff, so that memory stays bounded where the event was made, not in the store.
    """


class ReadTimeoutError(StorageError):
    """A read ran past its deadline and was interrupted (nothing changed); ask again later."""


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    text = str(exc).lower()
    return "no space left" in text or "file too large" in text or "quota exceeded" in text
