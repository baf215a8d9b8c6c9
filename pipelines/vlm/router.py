"""`VLMRouter`: one `VLMEngine` per backend chain, and a batch split by the chain each request
names (`cameras[].vlm`, carried as `VLMRequest.chain`).

A batch that mixes cameras of several chains runs as one sub-batch per chain, concurrently, so
each backend still gets its requests batched together; each chain has its own breaker state,
deadline and fallbacks. A request naming a chain this replica does not have (a config changed
under a running camera) goes to the default chain, logged once per name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.vlm.engine import DEFAULT_COOLDOWN_S, VLMEngine, create_backend
from pipelines.vlm.registry import Backend
from pipelines.vlm.types import VLMRequest, VLMResult

if TYPE_CHECKING:
    from pipelines.config import BackendConfig, VLMConfig

logger = logging.getLogger(__name__)


class VLMRouter:
    """Engines by chain name (None: the default chain); one result per request, in order."""

    def __init__(self, engines: Mapping[str | None, VLMEngine]) -> None:
        if None not in engines:
            raise ValueError("a router needs the default chain (None)")
        self.engines = dict(engines)
        self._unknown: set[str] = set()

    @classmethod
    def from_config(
        cls, config: VLMConfig, *, tiny_dir: Path | None = None, cooldown_s: float | None = None
    ) -> VLMRouter:
        """The default chain and every `vlm.backends` chain of the config. A backend that
        several chains list (the same model as a fallback, say) is built once and shared: a
        local model is loaded once; each chain keeps its own breaker state for it."""
        built: dict[str, Backend] = {}

        def backend(bc: BackendConfig) -> Backend:
            key = bc.model_dump_json()  # secrets dump masked: compare them by value below
            key += "\0" + (bc.api_key.get_secret_value() if bc.api_key else "")
            if key not in built:
                built[key] = create_backend(
                    bc,
                    max_new_tokens=config.max_new_tokens,
                    build_tiny_if_missing=config.build_tiny_if_missing,
                    tiny_dir=tiny_dir,
                )
            return built[key]

        names: list[str | None] = [None, *config.backends]
        return cls(
            {
                name: VLMEngine(
                    [backend(bc) for bc in config.chain_of(name)],
                    cooldown_s=DEFAULT_COOLDOWN_S if cooldown_s is None else cooldown_s,
                    deadline_s=config.deadline_of(name),
                    bench_after=config.bench_after_failures,
                )
                for name in names
            }
        )

    @property
    def backends(self) -> list[Backend]:
        """Every distinct backend of every chain (the default chain's first)."""
        every = [b for engine in self.engines.values() for b in engine.backends]
        return list({id(b): b for b in every}.values())

    def _engine_of(self, request: VLMRequest) -> str | None:
        name = request.chain
        if name is None or name in self.engines:
            return name
        if name not in self._unknown:
            self._unknown.add(name)
            logger.warning("VLM: no backend chain %r here; the default chain answers", name[:32])
        return None

    async def start(self) -> None:
        """Load every chain's first backend (failures mark it failed; never raises)."""
        await asyncio.gather(*(engine.start() for engine in self.engines.values()))

    async def describe(self, request: VLMRequest) -> VLMResult:
        """Describe one request on its chain."""
        return (await self.describe_batch([request]))[0]

    async def describe_batch(self, requests: Sequence[VLMRequest]) -> list[VLMResult]:
        """One result per request, same order: a sub-batch per chain, run concurrently."""
        groups: dict[str | None, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(self._engine_of(request), []).append(index)
        answers = await asyncio.gather(
            *(
                self.engines[name].describe_batch([requests[i] for i in indexes])
                for name, indexes in groups.items()
            )
        )
        results: list[VLMResult | None] = [None] * len(requests)
        for indexes, answered in zip(groups.values(), answers, strict=True):
            for index, result in zip(indexes, answered, strict=True):
                results[index] = result
        return [r for r in results if r is not None]

    def generated_tokens(self) -> int:
        """Tokens generated so far by every backend (each counted once)."""
        return sum(backend.generated_tokens for backend in self.backends)

    def stats(self) -> dict[str, Any]:
        """The default chain's stats, with each named chain's under `chains`."""
        stats = self.engines[None].stats()
        named = {n: e.stats() for n, e in self.engines.items() if n is not None}
        return stats | ({"chains": named} if named else {})

    def load_errors(self) -> dict[str, str]:
        """Local backends (of any chain) whose model failed to load."""
        errors: dict[str, str] = {}
        for engine in self.engines.values():
            errors |= engine.load_errors()
        return errors

    async def close(self) -> None:
        """Close every backend once (chains may share one)."""
        await asyncio.gather(*(backend.close() for backend in self.backends))
