"""VLM backends (registered by name) and the engine that tries them in order.

A backend turns a list of `VLMRequest` into parsed answers. `VLMEngine` owns an ordered list
(primary, then fallbacks): a backend that fails is marked failed and skipped for a cool-down,
then retried lazily by the next request; when every backend fails, `fallback_result` answers.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.redact import redact
from pipelines.vlm.parsing import ParsedOutput, parse_model_output
from pipelines.vlm.tiny import DEFAULT_TINY_DIR, build_tiny_vlm
from pipelines.vlm.types import VLMRequest, VLMResult, fallback_result

if TYPE_CHECKING:
    import httpx

    from pipelines.config import BackendConfig, VLMConfig

logger = logging.getLogger(__name__)

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_COOLDOWN_S = 30.0
MAX_ATTEMPTS = 3
BACKOFF_BASE_S = 0.5
MAX_RETRY_AFTER_S = 10.0

JSON_INSTRUCTION = (
    "Reply with one JSON object and nothing else: "
    '{"description": "<one short sentence about what happens>", '
    '"objects": ["<person|vehicle|package|animal|other noun>", ...], '
    '"confidence": <integer 0-100>}'
)

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


def build_prompt(request: VLMRequest) -> str:
    """The text sent with a request's frames: camera, frame layout, optional prompt, JSON ask."""
    n = len(request.frames)
    if n > 1:
        intro = (
            f"These {n} images are key frames (oldest first) of one motion event "
            f'seen by the camera "{request.camera_name}".'
        )
    else:
        intro = (
            "This image is a key frame of a motion event "
            f'seen by the camera "{request.camera_name}".'
        )
    parts = [intro, "Describe what is happening and which objects are involved."]
    if request.prompt:
        parts.append(request.prompt.strip())
    parts.append(JSON_INSTRUCTION)
    return " ".join(parts)


def _error_text(exc: BaseException, secrets: Sequence[str] = ()) -> str:
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


def _decode_images(request: VLMRequest) -> list[Any]:
    from PIL import Image

    images = []
    for frame in request.frames:
        with Image.open(io.BytesIO(frame)) as img:
            images.append(img.convert("RGB"))
    return images


@register_backend("transformers")
class TransformersBackend(Backend):
    """A local Hugging Face image-text-to-text model (SmolVLM by default), batched generate."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        max_new_tokens: int = 96,
        build_tiny_if_missing: bool = False,
        tiny_dir: Path | None = None,
        device: str | None = None,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(config, max_new_tokens=max_new_tokens)
        self.build_tiny_if_missing = build_tiny_if_missing
        self.tiny_dir = Path(tiny_dir) if tiny_dir is not None else DEFAULT_TINY_DIR
        self.device = device
        self.generate_kwargs = dict(generate_kwargs or {})
        self.processor: Any = None
        self.hf_model: Any = None
        self.load_error: str | None = None
        self._load_lock = asyncio.Lock()
        self._generate_lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self.hf_model is not None

    async def start(self) -> None:
        """Load processor and model (in a thread) unless already loaded."""
        async with self._load_lock:
            if not self.loaded:
                try:
                    await asyncio.to_thread(self._load)
                except Exception as exc:
                    self.load_error = _error_text(exc)
                    raise
                self.load_error = None

    def _load_from(self, source: str, device: str, dtype: Any) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(source)
        processor.tokenizer.padding_side = "left"
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
        model.to(device)  # type: ignore[arg-type]  # transformers' stub wants a model here
        self.processor, self.hf_model = processor, model.eval()

    def _load(self) -> None:
        import torch

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        elif device.startswith("cuda"):
            dtype = torch.float16
        else:
            dtype = torch.float32
        started = time.monotonic()
        try:
            self._load_from(self.model, device, dtype)
        except Exception as exc:
            if not self.build_tiny_if_missing:
                raise BackendError(f"cannot load model {self.model!r}: {_error_text(exc)}") from exc
            logger.warning(
                "cannot load VLM model %r (%s); build_tiny_if_missing is set, so a TINY "
                "RANDOM-WEIGHT model is used instead: EVENT DESCRIPTIONS WILL BE GIBBERISH",
                self.model,
                _error_text(exc),
            )
            tiny = build_tiny_vlm(self.tiny_dir)
            self._load_from(str(tiny), device, dtype)
            self.model = str(tiny)
        self.device = device
        params = sum(p.numel() for p in self.hf_model.parameters())
        logger.info(
            "loaded VLM %s (%s, %.1fM params) on %s as %s in %.1f s",
            self.model,
            type(self.hf_model).__name__,
            params / 1e6,
            device,
            str(dtype).removeprefix("torch."),
            time.monotonic() - started,
        )

    async def describe(self, requests: Sequence[VLMRequest]) -> list[ParsedOutput | Exception]:
        """Run one batched generate over every request (frames as several images per message)."""
        await self.start()
        results: list[ParsedOutput | Exception] = []
        batch: list[tuple[int, VLMRequest, list[Any]]] = []
        for i, request in enumerate(requests):
            try:
                batch.append((i, request, _decode_images(request)))
            except Exception as exc:  # a corrupt JPEG fails that request only
                results.append(RequestError(f"bad frame: {_error_text(exc)}"))
                continue
            results.append(BackendError("not run"))
        if batch:
            async with self._generate_lock:
                texts = await asyncio.to_thread(self._generate, batch)
            for (i, _request, _images), text in zip(batch, texts, strict=True):
                results[i] = parse_model_output(text)
        return results

    def _generate(self, batch: list[tuple[int, VLMRequest, list[Any]]]) -> list[str]:
        import torch

        prompts, images = [], []
        for _i, request, frames in batch:
            content: list[dict[str, str]] = [{"type": "image"} for _ in frames]
            content.append({"type": "text", "text": build_prompt(request)})
            messages = [{"role": "user", "content": content}]
            prompts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True))
            images.append(frames)
        inputs = self.processor(text=prompts, images=images, return_tensors="pt", padding=True)
        dtype = next(self.hf_model.parameters()).dtype
        inputs = {
            k: (v.to(self.device, dtype=dtype) if k == "pixel_values" else v.to(self.device))
            for k, v in inputs.items()
        }
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        kwargs.update(self.generate_kwargs)
        with torch.inference_mode():
            output = self.hf_model.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        pad_id = self.processor.tokenizer.pad_token_id
        counted = new_tokens.numel() if pad_id is None else int((new_tokens != pad_id).sum())
        self.generated_tokens += int(counted)
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [str(t) for t in texts]

    async def close(self) -> None:
        """Drop the model (frees GPU memory once nothing else holds it)."""
        self.processor = self.hf_model = None


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@register_backend("openai")
class OpenAIBackend(Backend):
    """Any OpenAI-compatible chat completions server (vLLM, Ollama, cloud) over httpx."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        max_new_tokens: int = 96,
        backoff_base_s: float = BACKOFF_BASE_S,
    ) -> None:
        super().__init__(config, max_new_tokens=max_new_tokens)
        self.backoff_base_s = backoff_base_s
        self.base_url = (config.base_url or DEFAULT_OPENAI_BASE_URL).rstrip("/")
        self.timeout_s = float(config.timeout_s)
        self._api_key = config.api_key.get_secret_value() if config.api_key else None
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        import httpx

        loop = asyncio.get_running_loop()
        # an AsyncClient's connection pool belongs to one event loop
        if self._client is None or self._client_loop is not loop:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(timeout=self.timeout_s, headers=headers)
            self._client_loop = loop
        return self._client

    def _body(self, request: VLMRequest) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": build_prompt(request)}]
        for frame in request.frames:
            url = "data:image/jpeg;base64," + base64.b64encode(frame).decode("ascii")
            content.append({"type": "image_url", "image_url": {"url": url}})
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_new_tokens,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = f"{self.base_url}/chat/completions"
        secrets = [self._api_key] if self._api_key else []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = await self._http().post(url, json=body)
            except httpx.TimeoutException as exc:  # a hung server: no retry, the deadline matters
                raise BackendError(f"timeout after {self.timeout_s:g} s") from exc
            except httpx.TransportError as exc:
                if attempt == MAX_ATTEMPTS:
                    raise BackendError(_error_text(exc, secrets)) from exc
                await asyncio.sleep(self.backoff_base_s * 2 ** (attempt - 1))
                continue
            status = response.status_code
            if status == 429 or status >= 500:
                if attempt == MAX_ATTEMPTS:
                    raise BackendError(f"HTTP {status} after {attempt} attempts")
                delay = self.backoff_base_s * 2 ** (attempt - 1)
                retry_after = _retry_after_s(response.headers.get("retry-after"))
                if retry_after is not None:
                    delay = max(delay, retry_after)
                delay = min(delay, MAX_RETRY_AFTER_S)
                logger.info("%s: HTTP %d, retry %d in %.2f s", self.name, status, attempt, delay)
                await asyncio.sleep(delay)
                continue
            if status >= 400:
                raise BackendError(f"HTTP {status}")
            try:
                data = response.json()
            except ValueError as exc:
                raise BackendError("response is not JSON") from exc
            if not isinstance(data, dict):
                raise BackendError("response is not a JSON object")
            return data
        raise BackendError("unreachable")  # pragma: no cover

    async def _describe_one(self, request: VLMRequest) -> ParsedOutput:
        data = await self._post(self._body(request))
        usage = data.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.generated_tokens += usage["completion_tokens"]
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError("response has no choices[0].message.content") from exc
        if isinstance(content, list):  # some servers return content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise BackendError("message content is not text")
        return parse_model_output(content)

    async def describe(self, requests: Sequence[VLMRequest]) -> list[ParsedOutput | Exception]:
        """One chat completion per request, all in flight at once."""
        answers = await asyncio.gather(
            *(self._describe_one(r) for r in requests), return_exceptions=True
        )
        out: list[ParsedOutput | Exception] = []
        for answer in answers:
            if isinstance(answer, ParsedOutput | Exception):
                out.append(answer)
            else:  # CancelledError and other BaseExceptions propagate
                raise answer
        return out

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


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
        self.served = 0
        self.last_error: str | None = None

    def available(self, now: float) -> bool:
        return now >= self.failed_until

    def stats(self, now: float) -> dict[str, Any]:
        return {
            "state": "failed" if now < self.failed_until else "ok",
            "served": self.served,
            "failures": self.failures,
            "last_error": self.last_error,
        }


class VLMEngine:
    """Ordered backends (primary, fallbacks) with lazy retry; one result per request, always."""

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        deadline_s: float | None = None,
    ) -> None:
        self.slots = [_Slot(b) for b in backends]
        self.cooldown_s = cooldown_s
        self.deadline_s = deadline_s
        self.counters = {"requests": 0, "batches": 0, "images": 0, "max_batch_seen": 0}
        self.counters |= {"fallbacks": 0, "deadline_exceeded": 0}

    @classmethod
    def from_config(
        cls, config: VLMConfig, *, tiny_dir: Path | None = None, cooldown_s: float | None = None
    ) -> VLMEngine:
        """An engine for `vlm:` config: primary backend first, then `fallback` in order."""
        backends = [
            create_backend(
                bc,
                max_new_tokens=config.max_new_tokens,
                build_tiny_if_missing=config.build_tiny_if_missing,
                tiny_dir=tiny_dir,
            )
            for bc in config.backends()
        ]
        return cls(
            backends,
            cooldown_s=DEFAULT_COOLDOWN_S if cooldown_s is None else cooldown_s,
            deadline_s=config.deadline_s,
        )

    @property
    def backends(self) -> list[Backend]:
        """The backends in the order they are tried."""
        return [slot.backend for slot in self.slots]

    def _mark_failed(self, slot: _Slot, error: str) -> None:
        slot.failures += 1
        slot.last_error = error
        slot.failed_until = time.monotonic() + self.cooldown_s
        logger.warning(
            "VLM backend %s failed (%s); using the next one for %.0f s",
            slot.backend.name,
            error,
            self.cooldown_s,
        )

    async def start(self) -> None:
        """Load the primary backend now (replica start); a failure marks it failed, never raises."""
        if not self.slots:
            return
        slot = self.slots[0]
        try:
            await slot.backend.start()
        except Exception as exc:
            self._mark_failed(slot, _error_text(exc))

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
        deadline_at = started + self.deadline_s if self.deadline_s else None
        await self._run(requests, results, started, deadline_at)
        latency = (time.monotonic() - started) * 1000.0
        out: list[VLMResult] = []
        for request, result in zip(requests, results, strict=True):
            if result is None:
                self.counters["fallbacks"] += 1
                result = fallback_result(request, latency_ms=latency)
            out.append(result)
        return out

    async def _run(
        self,
        requests: list[VLMRequest],
        results: list[VLMResult | None],
        started: float,
        deadline_at: float | None,
    ) -> None:
        # requests without frames have nothing to show a model
        pending = [i for i, r in enumerate(requests) if r.frames]
        for slot in self.slots:
            if not pending:
                return
            now = time.monotonic()
            if not slot.available(now):
                continue
            if deadline_at is not None and now >= deadline_at:
                self.counters["deadline_exceeded"] += 1
                logger.warning(
                    "VLM deadline of %.1f s passed; fallback descriptions", self.deadline_s
                )
                return
            backend = slot.backend
            batch = [requests[i] for i in pending]
            try:
                if deadline_at is None:
                    answers = await backend.describe(batch)
                else:
                    # each backend gets what is left of the per-event deadline, no more
                    answers = await asyncio.wait_for(backend.describe(batch), deadline_at - now)
            except TimeoutError:
                # a backend that blows the deadline sits out its cool-down like a failed one,
                # so the next batches go straight to the fallbacks instead of waiting again
                self.counters["deadline_exceeded"] += 1
                self._mark_failed(slot, f"no answer within the {self.deadline_s:g} s deadline")
                return
            except Exception as exc:
                self._mark_failed(slot, _error_text(exc))
                continue
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
                )
                slot.served += 1
            backend_errors = [e for e in errors if not isinstance(e, RequestError)]
            if backend_errors and len(still) == len(pending):
                self._mark_failed(slot, _error_text(backend_errors[0]))
            elif errors:
                slot.last_error = _error_text(errors[0])
                logger.warning(
                    "VLM backend %s: %d request(s) failed: %s",
                    backend.name,
                    len(errors),
                    slot.last_error,
                )
            pending = still

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

    def healthy(self) -> bool:
        """Whether at least one backend is not in its failure cool-down."""
        now = time.monotonic()
        return any(slot.available(now) for slot in self.slots)

    async def close(self) -> None:
        """Close every backend."""
        for slot in self.slots:
            await slot.backend.close()
