"""The `Backend` interface, its errors, and the registry of backends by config name."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.redact import redact

if TYPE_CHECKING:
    from pipelines.config import BackendConfig
    from pipelines.vlm.parsing import ParsedOutput
    from pipelines.vlm.types import VLMRequest

BACKENDS: dict[str, type[Backend]] = {}
_DRIVE_RE = re.compile(r"^[A-Za-z]:[\\/]")


class BackendError(RuntimeError):
    """A backend could not answer (load failure, HTTP error, timeout, bad response)."""


class RequestError(BackendError):
    """This request cannot be answered (e.g. a corrupt frame); says nothing about the backend."""


def register_backend(kind: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator: make a Backend subclass available under `kind` in config files."""

    def decorate(cls: type[Backend]) -> type[Backend]:
        if kind in BACKENDS and BACKENDS[kind] is not cls:
            raise ValueError(f"VLM backend {kind!r} registered twice")
        cls.kind = kind
        BACKENDS[kind] = cls
        return cls

    return decorate


@lru_cache(maxsize=64)
def model_label(model: str) -> str:
    """The model as events name it: a hub id or server model name as is; of a local path
    (absolute, `~`, `./`, `../`, a Windows drive, or an existing directory) only its last
    component, so `provider_used` never leaks the filesystem layout."""
    text = model.strip()
    looks_like_path = (
        text.startswith(("/", "~", "./", "../", "\\"))
        or _DRIVE_RE.match(text) is not None
        or (("/" in text or "\\" in text) and Path(text).expanduser().is_dir())
    )
    if not looks_like_path:
        return text
    parts = [p for p in re.split(r"[\\/]+", text) if p not in ("", ".", "..", "~")]
    return parts[-1] if parts else "local-model"


def error_text(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """A short, redacted one-line description of `exc` for logs and stats."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact(text, secrets)[:300]


class Backend(ABC):
    """One way to run a VLM; `describe` answers a batch, an item is a ParsedOutput or an error."""

    kind: str = "abstract"

    def __init__(self, config: BackendConfig, *, max_new_tokens: int = 96) -> None:
        self.config = config
        self.model = config.model
        self.max_new_tokens = max_new_tokens
        self.generated_tokens = 0  # cumulative, for tokens/s metrics

    @property
    def name(self) -> str:
        """Provider label for events, e.g. "transformers:HuggingFaceTB/SmolVLM-256M-Instruct".

        Never a filesystem path: a local model directory is named by its last component.
        """
        return f"{self.kind}:{model_label(self.model)}"

    @property
    def busy(self) -> bool:
        """Whether work abandoned at a deadline still runs (the next call would wait for it)."""
        return False

    @property
    def broken(self) -> bool:
        """Whether it cannot work until fixed (e.g. its model failed to load): benched at once."""
        return False

    def counters(self) -> dict[str, int]:
        """Backend-specific counters for stats (e.g. generates run, at most at once)."""
        return {}

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load or connect ahead of the first request (raise on failure)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and models."""

    @abstractmethod
    async def describe(self, requests: Sequence[VLMRequest]) -> list[ParsedOutput | Exception]:
        """Answer each request (same order); raise when the whole batch failed."""
