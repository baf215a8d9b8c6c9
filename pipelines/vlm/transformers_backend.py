"""The `transformers` backend: a local Hugging Face image-text-to-text model, batched generate."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipelines.vlm.confidence import token_confidences
from pipelines.vlm.parsing import ParsedOutput, parse_model_output
from pipelines.vlm.prompt import build_prompt
from pipelines.vlm.registry import Backend, BackendError, RequestError, error_text, register_backend

if TYPE_CHECKING:
    from pipelines.config import BackendConfig
    from pipelines.vlm.types import VLMRequest

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# where the offline demo model is built when `build_tiny_if_missing` is set and no dir is given
DEFAULT_TINY_DIR = Path("~/.cache/liveobject/tiny-vlm")


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
        self._loading: asyncio.Future[None] | None = None
        self._generate_lock = asyncio.Lock()
        # set while a generate whose caller gave up (deadline) still runs; see _run_exclusive
        self._orphan: asyncio.Future[Any] | None = None
        self._count_lock = threading.Lock()
        self._counts = {"generates": 0, "generates_running": 0, "max_generates_running": 0}
        self._counts["generates_abandoned"] = 0

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self.hf_model is not None

    async def start(self) -> None:
        """Load processor and model (in a thread) unless already loaded.

        Callers share one load: a caller that gives up (deadline) leaves it running, and the
        next caller waits for that same load instead of starting a second one.
        """
        if self.loaded:
            return
        if self._loading is None or self._loading.done():
            self._loading = asyncio.get_running_loop().run_in_executor(None, self._load)
        try:
            await asyncio.shield(self._loading)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.load_error = error_text(exc)
            raise
        self.load_error = None

    def _load_from(self, source: str, device: str, dtype: Any) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        # a pinned Hub revision (vlm.revision) loads exactly that commit, not whatever the
        # default branch holds at this pod's start
        pinned = {"revision": self.config.revision} if self.config.revision else {}
        processor = AutoProcessor.from_pretrained(source, **pinned)
        processor.tokenizer.padding_side = "left"
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, **pinned)
        model.to(device)  # type: ignore[arg-type]  # transformers' stub wants a model here
        self.processor, self.hf_model = processor, model.eval()

    def _load_tiny(self, device: str, dtype: Any, cause: Exception) -> None:
        # the demo model's builder (tokenizer trainer, random weights) is imported only here:
        # a production replica never loads it
        from pipelines.vlm.tiny import build_tiny_vlm

        logger.warning(
            "cannot load VLM model %r (%s); build_tiny_if_missing is set, so a TINY "
            "RANDOM-WEIGHT model is used instead: EVENT DESCRIPTIONS WILL BE GIBBERISH",
            self.model,
            error_text(cause),
        )
        tiny = build_tiny_vlm(self.tiny_dir)
        self._load_from(str(tiny), device, dtype)
        self.model = str(tiny)

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
                raise BackendError(f"cannot load model {self.model!r}: {error_text(exc)}") from exc
            self._load_tiny(device, dtype, exc)
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
                results.append(RequestError(f"bad frame: {error_text(exc)}"))
                continue
            results.append(BackendError("not run"))
        if batch:
            texts = await self._run_exclusive(self._generate, batch)
            for (i, _request, _images), (text, scored) in zip(batch, texts, strict=True):
                results[i] = parse_model_output(text, token_confidence=scored)
        return results

    @property
    def broken(self) -> bool:
        """True while the model failed to load (the engine benches it at once)."""
        return self.load_error is not None

    @property
    def busy(self) -> bool:
        """True while a generate abandoned at a deadline still runs on the model."""
        return self._orphan is not None and not self._orphan.done()

    def counters(self) -> dict[str, int]:
        """generates run, running now, most ever running at once (1 by design), abandoned."""
        with self._count_lock:
            return dict(self._counts)

    async def _run_exclusive(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run `fn(*args)` in a thread, one at a time on this model.

        The lock is released when the thread ends, not when the caller stops waiting: a caller
        cancelled at its deadline leaves the generate running (a thread cannot be stopped) and
        the next batch waits for it instead of starting a second generate on the same model.
        """
        await self._generate_lock.acquire()
        try:
            future = asyncio.get_running_loop().run_in_executor(None, self._counted, fn, *args)
        except BaseException:
            self._generate_lock.release()
            raise
        future.add_done_callback(self._generate_finished)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                self._orphan = future
                with self._count_lock:
                    self._counts["generates_abandoned"] += 1
            raise

    def _generate_finished(self, future: asyncio.Future[Any]) -> None:
        self._generate_lock.release()
        error = None if future.cancelled() else future.exception()  # retrieved: no asyncio noise
        if error is not None and future is self._orphan:
            logger.warning("an abandoned generate failed: %s", error_text(error))

    def _counted(self, fn: Callable[..., _T], *args: Any) -> _T:
        with self._count_lock:
            self._counts["generates"] += 1
            self._counts["generates_running"] += 1
            running = self._counts["generates_running"]
            self._counts["max_generates_running"] = max(
                self._counts["max_generates_running"], running
            )
        try:
            return fn(*args)
        finally:
            with self._count_lock:
                self._counts["generates_running"] -= 1

    def _generate(
        self, batch: list[tuple[int, VLMRequest, list[Any]]]
    ) -> list[tuple[str, int | None]]:
        """(text, mean token probability 0-100) per request (pipelines.vlm.confidence)."""
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
        kwargs |= {"output_scores": True, "return_dict_in_generate": True}  # for confidence
        kwargs.update(self.generate_kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            output = self.hf_model.generate(**inputs, **kwargs)
            scored = token_confidences(output, prompt_len, self._eos_ids())
        new_tokens = getattr(output, "sequences", output)[:, prompt_len:]
        pad_id = self.processor.tokenizer.pad_token_id
        counted = new_tokens.numel() if pad_id is None else int((new_tokens != pad_id).sum())
        self.generated_tokens += int(counted)
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        if len(scored) != len(texts):
            scored = [None] * len(texts)
        return list(zip((str(t) for t in texts), scored, strict=True))

    def _eos_ids(self) -> list[int]:
        """The ids that end a generated answer (generation config, else the tokenizer's)."""
        eos = getattr(self.hf_model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        if eos is None:
            return []
        return [int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])]

    async def close(self) -> None:
        """Drop the model (frees GPU memory once nothing else holds it)."""
        self.processor = self.hf_model = None
