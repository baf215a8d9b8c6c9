"""`VLMEngine`: ordered backends (primary, then fallbacks) tried in turn, with lazy retry.

A small circuit breaker per backend: a batch it fails (an error, or no answer by the deadline)
counts one failure; `bench_after` failures in a row bench it for a cool-down, after which the
next request retries it lazily (one more failure benches it again, one success resets the
count). One slow batch therefore never benches the primary; a broken backend (its model
failed to load) is benched at its first failure. When every backend fails, `fallback_result`
answers.

Deadlines: a request may carry a deadline (set by the camera when it sends the request, as a
duration that the replica turns into its own monotonic instant on arrival: wall clocks of two
nodes are never compared); the engine stops waiting then, so the camera and the engine count the
same interval. `deadline_s` (config) caps the engine's own wait from the batch's start as well.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pipelines.vlm.openai_backend  # noqa: F401 - importing a backend registers it
from pipelines.vlm.parsing import ParsedOutput
from pipelines.vlm.registry import BACKENDS, Backend, RequestError, error_text
from pipelines.vlm.transformers_backend import TransformersBackend
from pipelines.vlm.types import VLMRequest, VLMResult, fallback_result

if TYPE_CHECKING:
    from pipelines.config import BackendConfig, VLMConfig

logger = logging.getLogger(__name__)

DEFAULT_COOLDOWN_S = 30.0
DEFAULT_BENCH_AFTER = 3  # failed batches in a row before a backend is benched


def create_backend(
    config: BackendConfig,
    *,
    max_new_tokens: int = 96,
    build_tiny_if_missing: bool = False,
    tiny_dir: Path | None = None,
) -> Backend:
    """Instantiate the registered backend named by `config.backend`."""
    try:
        cls = BACKENDS[config.backend]
    except KeyError:
        raise ValueError(
            f"unknown VLM backend {config.backend!r}; known: {', '.join(sorted(BACKENDS))}"
        ) from None
    if cls is TransformersBackend:
        return TransformersBackend(
            config,
            max_new_tokens=max_new_tokens,
            build_tiny_if_missing=build_tiny_if_missing,
            tiny_dir=tiny_dir,
        )
    return cls(config, max_new_tokens=max_new_tokens)


class _Slot:
    """A backend plus its health: failed backends sit out `cooldown_s`, then get retried."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.failed_until = 0.0
        self.failures = 0
        self.consecutive = 0  # failures since the last success (the breaker's count)
        self.benched = 0
        self.served = 0
        self.last_error: str | None = None

    def available(self, now: float) -> bool:
        return now >= self.failed_until

    def stats(self, now: float) -> dict[str, Any]:
        return {
            "state": "failed" if now < self.failed_until else "ok",
            "served": self.served,
            "failures": self.failures,
            "consecutive_failures": self.consecutive,
            "benched": self.benched,
            "last_error": self.last_error,
            **self.backend.counters(),
        }


@dataclass(frozen=True, slots=True)
class _Deadline:
    """When a batch must be answered (monotonic), and which requests had already run out."""

    at: float | None
    expired: frozenset[int]


class VLMEngine:
    """Ordered backends (primary, fallbacks) with lazy retry; one result per request, always."""

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        deadline_s: float | None = None,
        bench_after: int = DEFAULT_BENCH_AFTER,
    ) -> None:
        self.slots = [_Slot(b) for b in backends]
        self.cooldown_s = cooldown_s
        self.deadline_s = deadline_s
        self.bench_after = max(1, bench_after)
        self.counters = {"requests": 0, "batches": 0, "images": 0, "max_batch_seen": 0}
        self.counters |= {"fallbacks": 0, "deadline_exceeded": 0, "skipped_busy": 0}

    @classmethod
    def from_config(
        cls,
        config: VLMConfig,
        *,
        chain: str | None = None,
        tiny_dir: Path | None = None,
        cooldown_s: float | None = None,
    ) -> VLMEngine:
        """An engine for one chain of the `vlm:` config (None: the section's own backend, then
        `fallback`; a name: `vlm.backends.NAME`), its backends in order."""
        backends = [
            create_backend(
                bc,
                max_new_tokens=config.max_new_tokens,
                build_tiny_if_missing=config.build_tiny_if_missing,
                tiny_dir=tiny_dir,
            )
            for bc in config.chain_of(chain)
        ]
        return cls(
            backends,
            cooldown_s=DEFAULT_COOLDOWN_S if cooldown_s is None else cooldown_s,
            deadline_s=config.deadline_of(chain),
            bench_after=config.bench_after_failures,
        )

    @property
    def backends(self) -> list[Backend]:
        """The backends in the order they are tried."""
        return [slot.backend for slot in self.slots]

    def _mark_failed(self, slot: _Slot, error: str) -> None:
        """Count one failed batch; bench the backend after `bench_after` in a row."""
        slot.failures += 1
        slot.consecutive += 1
        if slot.backend.broken:  # e.g. its model failed to load: no use asking it again soon
            slot.consecutive = max(slot.consecutive, self.bench_after)
        slot.last_error = error
        if slot.consecutive < self.bench_after:
            logger.warning(
                "VLM backend %s failed (%s); %d of %d failures in a row before it is benched",
                slot.backend.name,
                error,
                slot.consecutive,
                self.bench_after,
            )
            return
        slot.benched += 1
        slot.failed_until = time.monotonic() + self.cooldown_s
        logger.warning(
            "VLM backend %s failed %d times in a row (%s); using the next one for %.0f s",
            slot.backend.name,
            slot.consecutive,
            error,
            self.cooldown_s,
        )

    @staticmethod
    def _mark_ok(slot: _Slot) -> None:
        slot.consecutive = 0

    async def start(self) -> None:
        """Load the primary backend now (replica start); a failure marks it failed, never raises."""
        if not self.slots:
            return
        slot = self.slots[0]
        try:
            await slot.backend.start()
        except Exception as exc:
            self._mark_failed(slot, error_text(exc))

    async def describe(self, request: VLMRequest) -> VLMResult:
        """Describe one request."""
        return (await self.describe_batch([request]))[0]

    async def describe_batch(self, requests: Sequence[VLMRequest]) -> list[VLMResult]:
        """One result per request, same order, request_id echoed; backend trouble never raises."""
        started = time.monotonic()
        requests = list(requests)
        self.counters["requests"] += len(requests)
        self.counters["batches"] += 1
        self.counters["images"] += sum(len(r.frames) for r in requests)
        self.counters["max_batch_seen"] = max(self.counters["max_batch_seen"], len(requests))
        results: list[VLMResult | None] = [None] * len(requests)
        deadline = self._deadline(requests, started)
        if deadline.expired:
            self.counters["deadline_exceeded"] += len(deadline.expired)
        await self._run(requests, results, started, deadline)
        latency = (time.monotonic() - started) * 1000.0
        out: list[VLMResult] = []
        for request, result in zip(requests, results, strict=True):
            if result is None:
                self.counters["fallbacks"] += 1
                result = fallback_result(request, latency_ms=latency)
            out.append(result)
        return out

    def _deadline(self, requests: list[VLMRequest], started: float) -> _Deadline:
        """The batch's deadline: the latest of its requests' own (monotonic, this process),
        capped by `deadline_s` from `started`; requests whose deadline has passed sit out."""
        limits = [started + self.deadline_s] if self.deadline_s else []
        own = {i: left for i, r in enumerate(requests) if (left := r.left_s(started)) is not None}
        expired = frozenset(i for i, left in own.items() if left <= 0)
        live = [left for i, left in own.items() if i not in expired]
        if len(own) == len(requests) and live:  # nobody waits past the latest caller's deadline
            limits.append(started + max(live))
        return _Deadline(min(limits) if limits else None, expired)

    def _try_now(self, index: int, now: float) -> bool:
        """Whether slot `index` is worth asking now: not benched, and not still busy with work
        abandoned at a deadline while a later backend could answer instead."""
        slot = self.slots[index]
        if not slot.available(now):
            return False
        if slot.backend.busy and any(s.available(now) for s in self.slots[index + 1 :]):
            self.counters["skipped_busy"] += 1
            return False
        return True

    async def _run(
        self,
        requests: list[VLMRequest],
        results: list[VLMResult | None],
        started: float,
        deadline: _Deadline,
    ) -> None:
        # requests without frames have nothing to show a model
        pending = [i for i, r in enumerate(requests) if r.frames and i not in deadline.expired]
        deadline_at = deadline.at
        for index, slot in enumerate(self.slots):
            if not pending:
                return
            now = time.monotonic()
            if not self._try_now(index, now):
                continue
            if deadline_at is not None and now >= deadline_at:
                self.counters["deadline_exceeded"] += 1
                logger.warning(
                    "VLM deadline of %.1f s passed; fallback descriptions", self.deadline_s
                )
                return
            batch = [requests[i] for i in pending]
            try:
                answers = await self._ask(slot.backend, batch, now, deadline_at)
            except TimeoutError:
                # late counts as failed for the breaker: a backend late `bench_after` times in
                # a row is benched, so later batches go straight to the fallbacks
                self.counters["deadline_exceeded"] += 1
                self._mark_failed(slot, "no answer within the deadline")
                return
            except Exception as exc:
                self._mark_failed(slot, error_text(exc))
                continue
            pending = self._take_answers(slot, requests, pending, answers, results, started)

    @staticmethod
    async def _ask(
        backend: Backend, batch: list[VLMRequest], now: float, deadline_at: float | None
    ) -> list[ParsedOutput | Exception]:
        if deadline_at is None:
            return await backend.describe(batch)
        # each backend gets what is left of the per-event deadline, no more
        return await asyncio.wait_for(backend.describe(batch), deadline_at - now)

    def _take_answers(
        self,
        slot: _Slot,
        requests: list[VLMRequest],
        pending: list[int],
        answers: list[ParsedOutput | Exception],
        results: list[VLMResult | None],
        started: float,
    ) -> list[int]:
        """Store `slot`'s answers into `results`; returns the indexes still unanswered."""
        backend = slot.backend
        latency = (time.monotonic() - started) * 1000.0
        still: list[int] = []
        errors: list[Exception] = []
        for i, answer in zip(pending, answers, strict=True):
            if isinstance(answer, Exception):
                still.append(i)
                errors.append(answer)
                continue
            request = requests[i]
            results[i] = VLMResult(
                description=answer.description,
                objects=answer.objects,
                confidence=answer.confidence,
                ai_confidence=answer.ai_confidence,
                provider_used=backend.name,
                analysis_mode=request.analysis_mode,
                request_id=request.request_id,
                latency_ms=latency,
                confidence_source=answer.confidence_source,
            )
            slot.served += 1
        if len(still) < len(pending):
            self._mark_ok(slot)
        backend_errors = [e for e in errors if not isinstance(e, RequestError)]
        if backend_errors and len(still) == len(pending):
            self._mark_failed(slot, error_text(backend_errors[0]))
        elif errors:
            slot.last_error = error_text(errors[0])
            logger.warning(
                "VLM backend %s: %d request(s) failed: %s",
                backend.name,
                len(errors),
                slot.last_error,
            )
        return still

    def generated_tokens(self) -> int:
        """Tokens generated so far by every backend (where the backend reports them)."""
        return sum(slot.backend.generated_tokens for slot in self.slots)

    def stats(self) -> dict[str, Any]:
        """Counters plus each backend's state (ok/failed), served and failure counts."""
        now = time.monotonic()
        return dict(self.counters) | {
            "generated_tokens": self.generated_tokens(),
            "backends": {slot.backend.name: slot.stats(now) for slot in self.slots},
        }

    def load_errors(self) -> dict[str, str]:
        """Local backends whose model failed to load, with the error (restarting may help)."""
        return {
            b.name: b.load_error
            for b in self.backends
            if isinstance(b, TransformersBackend) and b.load_error is not None
        }

    async def close(self) -> None:
        """Close every backend."""
        for slot in self.slots:
            await slot.backend.close()
