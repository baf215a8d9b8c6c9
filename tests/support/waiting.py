"""Poll until something is true; fail with what was awaited and the last value seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    interval: float = 0.2,
    ignore: tuple[type[BaseException], ...] = (),
    abort: Callable[[], str | None] | None = None,
    context: Callable[[], str] | None = None,
) -> Any:
    """Return check()'s first truthy value; raise AssertionError naming `what` after timeout.

    `ignore`: exceptions from check() that count as "not yet" (a server still starting).
    `abort`: says why waiting is pointless (a process exited); it fails at once with that.
    `context`: text appended to any failure (a process's output).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        if abort is not None and (reason := abort()):
            raise AssertionError(f"{reason} while waiting for {what}{_extra(context)}")
        try:
            last = check()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r}){_extra(context)}"
            )
        time.sleep(interval)


def _extra(context: Callable[[], str] | None) -> str:
    return f"\n{context()}" if context is not None else ""
