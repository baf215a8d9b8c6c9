"""A second architecture (LLaVA: CLIP vision + Llama) through the same TransformersBackend path.

The backend promises any Hugging Face image-text-to-text model; the Idefics3 tiny model covers
SmolVLM. Here a tiny random-weight LLaVA is built in the test and loaded by directory, like a
hub model, through AutoProcessor + AutoModelForImageTextToText. (Qwen2-VL would be the next one,
but its processor needs torchvision for its video processor, which this environment lacks.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipelines.config import VLMConfig
from pipelines.vlm.backends import TransformersBackend, VLMEngine
from pipelines.vlm.tiny import train_bpe
from pipelines.vlm.types import VLMRequest
from tests.support.media import jpeg

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
# LLaVA-1.5 style: "USER: <image>\n... ASSISTANT:"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_llava(path: Path) -> Path:
    """A random-weight LLaVA (CLIP 32 px, 16 image tokens) with a tokenizer trained on the spot."""
    import torch
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = train_bpe(SPECIALS, unk_token="<unk>")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<image>"],
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 32,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "bos_token_id": ids("<s>"),
            "eos_token_id": ids("</s>"),
            "pad_token_id": ids("<pad>"),
        },
        image_token_id=ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids("</s>")
    model.generation_config.pad_token_id = ids("<pad>")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llava_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "tiny-llava")


def test_llava_mixed_batch_through_the_transformers_backend(llava_path: Path) -> None:
    engine = VLMEngine.from_config(VLMConfig(model=str(llava_path), max_new_tokens=12))
    backend = engine.backends[0]
    requests = [
        VLMRequest(
            f"cam{i}",
            f"Camera {i}",
            tuple(
                jpeg(((61 * i + 29 * k) % 256, (97 * i) % 256, (43 * k) % 256)) for k in range(n)
            ),
            prompt="Watch the gate." if i == 1 else None,
            request_id=f"req-{i}",
        )
        for i, n in enumerate([1, 2, 1, 3])
    ]

    async def both() -> tuple[list, list]:  # type: ignore[type-arg]
        batched = await engine.describe_batch(requests)
        alone = [await engine.describe(r) for r in reversed(requests)][::-1]
        return batched, alone

    batched, alone = asyncio.run(both())
    assert isinstance(backend, TransformersBackend)
    assert type(backend.hf_model).__name__ == "LlavaForConditionalGeneration"
    assert [r.request_id for r in batched] == [r.request_id for r in requests]
    assert [r.analysis_mode for r in batched] == [r.analysis_mode for r in requests]
    assert {r.provider_used for r in batched} == {f"transformers:{Path(llava_path).name}"}
    assert all(0 <= r.confidence <= 100 and "</s>" not in r.description for r in batched)
    # left padding keeps greedy answers independent of batch neighbours
    assert [r.description for r in batched] == [r.description for r in alone]
    assert len({r.description for r in batched}) > 1
