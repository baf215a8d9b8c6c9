"""The `transformers` backend: a local Hugging Face image-text-to-text model, batched generate."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.vlm.parsing import ParsedOutput, parse_model_output
from pipelines.vlm.prompt import build_prompt
from pipelines.vlm.registry import Backend, BackendError, RequestError, error_text, register_backend

if TYPE_CHECKING:
    from pipelines.config import BackendConfig
    from pipelines.vlm.types import VLMRequest

logger = logging.getLogger(__name__)

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
                    self.load_error = error_text(exc)
                    raise
                self.load_error = None

    def _load_from(self, source: str, device: str, dtype: Any) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(source)
        processor.tokenizer.padding_side = "left"
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
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
