"""The `Backend` interface, its errors, and the registry of backends by config name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pipelines.redact import redact

if TYPE_CHECKING:
    from pipelines.config import BackendConfig
    from pipelines.vlm.parsing import ParsedOutput
    from pipelines.vlm.types import VLMRequest

BACKENDS: dict[str, type[Backend]] = {}


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
        """Provider label for events, e.g. "transformers:HuggingFaceTB/SmolVLM-256M-Instruct"."""
        return f"{self.kind}:{self.model}"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load or connect ahead of the first request (raise on failure)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and models."""

    @abstractmethod
    async def describe(self, requests: Sequence[VLMRequest]) -> list[ParsedOutput | Exception]:
        """Answer each request (same order); raise when the whole batch failed."""
