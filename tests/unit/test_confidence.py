"""Honest confidence: from generated-token probabilities, the model's stated value kept apart.

The tiny model's random weights give every token about 1/vocab probability, so one test
sharpens its output layer (weights x 60, saved as another model) to get confidences well
inside 0-100, and checks them against an independent teacher-forced forward pass.
"""

from __future__ import annotations

import asyncio
import io
import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipelines.config import BackendConfig
from pipelines.vlm.confidence import (
    logprobs_from_openai,
    mean_probability,
    token_probabilities,
)
from pipelines.vlm.parsing import (
    DEFAULT_CONFIDENCE_NO_OBJECTS,
    DEFAULT_CONFIDENCE_WITH_OBJECTS,
    parse_model_output,
)
from pipelines.vlm.tiny import build_tiny_vlm
from pipelines.vlm.transformers_backend import TransformersBackend
from pipelines.vlm.types import VLMRequest, fallback_result
from tests.support.media import jpeg


def sharpened_tiny(folder: Path, seed: int = 0) -> Path:
    """The tiny model with its output layer scaled up: peaked, seed-determined token choices."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    source = build_tiny_vlm(folder / "tiny", seed=seed)
    model = AutoModelForImageTextToText.from_pretrained(source)
    model.lm_head.weight.data *= 60.0
    target = folder / "sharp"
    model.save_pretrained(target)
    AutoProcessor.from_pretrained(source).save_pretrained(target)
    return target


def backend_for(model: Path) -> TransformersBackend:
    return TransformersBackend(
        BackendConfig(backend="transformers", model=str(model)), max_new_tokens=12, device="cpu"
    )


REQUESTS = [
    VLMRequest("a", "Porch", (jpeg((200, 30, 30)),), request_id="a"),
    VLMRequest("b", "Yard", (jpeg((20, 180, 40)), jpeg((10, 10, 220))), request_id="b"),
]


def test_mean_probability_and_openai_logprobs() -> None:
    assert mean_probability([]) is None
    assert mean_probability([0.0, 0.0]) == 100
    assert mean_probability([math.log(0.9), math.log(0.5)]) == 70
    assert mean_probability([-math.inf, 0.0]) == 50
    assert mean_probability([0.2]) == 100  # a server rounding above 0 is capped at p = 1
    choice = {
        "message": {"content": "{}"},
        "logprobs": {"content": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -2}]},
    }
    assert logprobs_from_openai(choice) == [-0.1, -2.0]
    for absent in ({}, {"logprobs": None}, {"logprobs": {"content": None}}, "x"):
        assert logprobs_from_openai(absent) is None
    assert logprobs_from_openai({"logprobs": {"content": [{"logprob": True}, {}]}}) is None


def test_confidence_precedence_and_the_documented_fallback() -> None:
    stated = '{"description": "A dog", "objects": ["dog"], "confidence": 85}'
    silent = '{"description": "A dog", "objects": ["dog"]}'
    nothing = '{"description": "Leaves move"}'
    # token probabilities win; the model's own value stays in ai_confidence only
    scored = parse_model_output(stated, token_confidence=41)
    assert (scored.confidence, scored.ai_confidence, scored.confidence_source) == (41, 85, "tokens")
    logged = parse_model_output(silent, token_confidence=77, scored_by="logprobs")
    assert (logged.confidence, logged.ai_confidence, logged.confidence_source) == (
        77,
        None,
        "logprobs",
    )
    # no token data: the stated value, labelled as such
    said = parse_model_output(stated)
    assert (said.confidence, said.ai_confidence, said.confidence_source) == (85, 85, "stated")
    # neither: the fixed defaults, labelled `default`, never presented as the model's
    with_objects, without = parse_model_output(silent), parse_model_output(nothing)
    assert (with_objects.confidence, with_objects.ai_confidence) == (
        DEFAULT_CONFIDENCE_WITH_OBJECTS,
        None,
    )
    assert (without.confidence, without.confidence_source) == (
        DEFAULT_CONFIDENCE_NO_OBJECTS,
        "default",
    )
    # no analysis at all: 0, source none
    fallback = fallback_result(REQUESTS[0])
    assert (fallback.confidence, fallback.confidence_source) == (0, "none")


def teacher_forced_probabilities(model: Any, processor: Any, request: VLMRequest) -> list[float]:
    """Greedy-generate, then score the generated tokens with one plain forward pass."""
    import torch

    images = [Image.open(io.BytesIO(f)).convert("RGB") for f in request.frames]
    from pipelines.vlm.prompt import build_prompt

    content: list[dict[str, str]] = [{"type": "image"} for _ in images]
    content.append({"type": "text", "text": build_prompt(request)})
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True
    )
    inputs = processor(text=[prompt], images=[images], return_tensors="pt")
    with torch.inference_mode():
        sequence = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        start = inputs["input_ids"].shape[1]
        mask = torch.ones_like(sequence)
        logits = model(
            input_ids=sequence, attention_mask=mask, pixel_values=inputs["pixel_values"]
        ).logits
    probs = torch.softmax(logits[0, start - 1 : -1].float(), dim=-1)
    tokens = sequence[0, start:]
    chosen = probs[torch.arange(len(tokens)), tokens].tolist()
    eos = model.generation_config.eos_token_id
    eos_ids = eos if isinstance(eos, list) else [eos]
    for i, token in enumerate(tokens.tolist()):
        if token in eos_ids:
            return chosen[: i + 1]
    return chosen


def test_tiny_model_confidence_is_the_mean_token_probability(tmp_path: Path) -> None:
    model_dir = sharpened_tiny(tmp_path)
    backend = backend_for(model_dir)
    results = asyncio.run(backend.describe(REQUESTS))
    confidences = []
    for request, result in zip(REQUESTS, results, strict=True):
        assert not isinstance(result, Exception)
        assert result.confidence_source == "tokens"
        expected = teacher_forced_probabilities(backend.hf_model, backend.processor, request)
        assert result.confidence == round(100 * sum(expected) / len(expected))
        confidences.append(result.confidence)
    # sharpened: clearly above the ~0 of a uniform guess, clearly below certainty
    assert all(5 <= c <= 99 for c in confidences), confidences


def test_tiny_model_confidence_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = asyncio.run(backend_for(sharpened_tiny(tmp_path / "one")).describe(REQUESTS))
    again = asyncio.run(backend_for(sharpened_tiny(tmp_path / "two")).describe(REQUESTS))
    assert [r.confidence for r in first] == [r.confidence for r in again]  # type: ignore[union-attr]
    assert [r.description for r in first] == [r.description for r in again]  # type: ignore[union-attr]
    other = asyncio.run(backend_for(sharpened_tiny(tmp_path / "three", seed=7)).describe(REQUESTS))
    assert [r.description for r in other] != [r.description for r in first]  # type: ignore[union-attr]


def test_without_scores_there_is_no_token_confidence() -> None:
    class Output:
        sequences = [[1, 2, 3]]
        scores = None

    assert token_probabilities(Output(), 1, [3]) is None


@pytest.mark.parametrize("eos_at", [0, 2])
def test_probabilities_stop_at_the_end_of_sequence(eos_at: int) -> None:
    import torch

    vocab, steps = 5, 4
    logits = torch.full((steps, 1, vocab), -5.0)
    tokens = [1, 2, 3, 1]
    tokens[eos_at] = 4  # eos
    for step, token in enumerate(tokens):
        logits[step, 0, token] = 5.0

    class Output:
        sequences = torch.tensor([[9, 9, *tokens]])
        scores = tuple(logits)

    rows = token_probabilities(Output(), 2, [4])
    assert rows is not None and len(rows[0]) == eos_at + 1
    top = math.exp(5) / (math.exp(5) + 4 * math.exp(-5))
    assert rows[0] == pytest.approx([top] * (eos_at + 1))
