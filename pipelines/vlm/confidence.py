"""`confidence` from the probabilities of the tokens a model generated (see docs/events.md).

The number is the arithmetic mean, over the answer's generated tokens, of the probability the
model gave the token it emitted, as a percentage rounded to an integer:

    confidence = round(100 * mean(p_1, ..., p_n)),   p_i = exp(logprob_i)

- transformers backend: `generate(..., output_scores=True, return_dict_in_generate=True)`;
  each step's scores (the logits after the generation config's logits processors) are
  soft-maxed and the emitted token's log probability is read off: its probability under the
  distribution it was picked from (what `compute_transition_scores(..., normalize_logits=True)`
  gives, without stacking every step's scores at once). The tokens are those generated up to
  and including the first end-of-sequence token; the padding a finished row gets in a batch is
  left out.
- OpenAI-compatible servers: the request asks for `logprobs`; when the answer carries
  `choices[0].logprobs.content[*].logprob`, those are the logprob_i.

A model's own stated confidence ("confidence": 85 in its JSON) is `ai_confidence`, never this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "logprobs_from_openai",
    "mean_probability",
    "token_confidences",
    "token_probabilities",
]


def mean_probability(logprobs: Iterable[float]) -> int | None:
    """round(100 * mean(exp(lp))) over the tokens' log probabilities; None when there are none."""
    probs = [math.exp(min(0.0, float(lp))) for lp in logprobs if lp is not None and lp == lp]
    if not probs:
        return None
    return max(0, min(100, round(100.0 * sum(probs) / len(probs))))


def logprobs_from_openai(choice: Any) -> list[float] | None:
    """The generated tokens' logprobs of a chat completion choice, or None when absent."""
    if not isinstance(choice, dict):
        return None
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    values = [
        float(item["logprob"])
        for item in content
        if isinstance(item, dict)
        and isinstance(item.get("logprob"), int | float)
        and not isinstance(item.get("logprob"), bool)
    ]
    return values or None


def token_probabilities(
    output: Any, prompt_len: int, eos_ids: Sequence[int]
) -> list[list[float]] | None:
    """Per batch row, the probability of each generated token up to and including the first
    end-of-sequence token; None when `output` has no scores.

    Step by step (a log-softmax of one (batch, vocab) score tensor at a time, the chosen tokens
    gathered from it), so no (batch x steps x vocab) copy is ever made.
    """
    import torch

    sequences = getattr(output, "sequences", None)
    scores = getattr(output, "scores", None)
    if sequences is None or not scores:
        return None
    generated = sequences[:, prompt_len:]
    steps = min(len(scores), generated.shape[1])
    columns = []
    for step in range(steps):
        logp = torch.log_softmax(scores[step].float(), dim=-1)
        columns.append(logp.gather(1, generated[:, step : step + 1]).squeeze(1))
    chosen = torch.stack(columns, dim=1).exp().tolist() if columns else []
    rows: list[list[float]] = []
    for row_tokens, row_probs in zip(generated[:, :steps].tolist(), chosen, strict=True):
        end = len(row_probs)
        for index, token in enumerate(row_tokens):
            if token in eos_ids:
                end = index + 1  # the end-of-sequence token is part of the answer
                break
        rows.append(row_probs[:end])
    return rows


def token_confidences(output: Any, prompt_len: int, eos_ids: Sequence[int]) -> list[int | None]:
    """Per batch row, the mean probability (0-100) of its generated tokens (see module doc).

    `output` is what `generate(..., output_scores=True, return_dict_in_generate=True)` returned;
    without scores every row gets None.
    """
    rows = token_probabilities(output, prompt_len, eos_ids)
    if rows is None:
        sequences = getattr(output, "sequences", output)
        return [None] * len(sequences)
    return [mean_probability(math.log(p) if p > 0 else -math.inf for p in row) for row in rows]
