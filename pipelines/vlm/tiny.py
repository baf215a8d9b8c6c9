"""A tiny random-weight SmolVLM-architecture model (Idefics3) for offline demos, tests, benchmarks.

The model has the real architecture and processor pipeline (chat template, image tokens, image
processor, left padding, generate) but random weights and a tokenizer trained on the spot, so it
loads through ``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained`` like a hub model
and runs in milliseconds on a CPU. What it writes is gibberish: it is a stand-in, not a model.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Idefics3: image_seq_len = (image_size // patch_size) ** 2 // scale_factor ** 2
IMAGE_SIZE = 64
PATCH_SIZE = 16
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2

BOS, EOS, PAD, UNK = "<|im_start|>", "<end_of_utterance>", "<|im_end|>", "<unk>"
IMAGE, FAKE_IMAGE, GLOBAL_IMAGE = "<image>", "<fake_token_around_image>", "<global-img>"
ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]

# SmolVLM's chat template (content is a list of {"type": "text"|"image"} parts).
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_WORDS = (
    "a person man woman child people walking standing near the front door porch driveway car "
    "truck van bus bicycle motorcycle package box parcel delivery dog cat bird animal yard street "
    "garden gate garage window night day light dark camera motion detected moving left right "
    "description objects confidence json high low medium user assistant image frame frames of "
    "in on at with and is are was one two three carrying holding leaving arriving"
).split()


def _corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = [
        '{"description": "a person near the door", "objects": ["person"], "confidence": 85}',
        "User: Describe what happens in this camera image.",
        "Assistant:",
    ]
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
        lines.append(" ".join(words) + rng.choice([".", ",", ":", '"', "}", "]", "!", "?"]))
    lines.append("0123456789 {}[]\":,.%'-_()/\n")
    return lines


def train_bpe(special_tokens: list[str], unk_token: str, vocab_size: int = 512) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` trained on the spot on a generated corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def _build_tokenizer() -> Any:
    """A byte-level BPE tokenizer trained on a generated corpus, with Idefics3 special tokens."""
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe([UNK, BOS, EOS, PAD, IMAGE, FAKE_IMAGE, GLOBAL_IMAGE, *ROW_COL], unk_token=UNK)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[FAKE_IMAGE, IMAGE, EOS, GLOBAL_IMAGE, *ROW_COL],
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )


def _is_built(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "processor_config.json").is_file()


def _build_processor(tokenizer: Any) -> Any:
    """An Idefics3 processor (no image splitting, tiny images) around `tokenizer`."""
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    image_processor = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=False,
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )


def _build_model(tokenizer: Any, seed: int) -> Any:
    """A random-weight Idefics3 model (one vision layer, two text layers) for `tokenizer`."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    config = Idefics3Config(
        image_token_id=ids(IMAGE),
        scale_factor=SCALE_FACTOR,
        tie_word_embeddings=False,
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
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
            "bos_token_id": ids(BOS),
            "eos_token_id": ids(EOS),
            "pad_token_id": ids(PAD),
            "tie_word_embeddings": False,
        },
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.bos_token_id = ids(BOS)
    model.generation_config.eos_token_id = ids(EOS)
    model.generation_config.pad_token_id = ids(PAD)
    return model


def _move_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished `tmp` to `path`; if another process got there first, keep its copy."""
    try:
        os.rename(tmp, path)
    except OSError:
        if not _is_built(path):
            raise
        # another process won the race; its copy is complete
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def build_tiny_vlm(path: Path | str, *, seed: int = 0) -> Path:
    """Build (once) a tiny random-weight Idefics3 model + processor under `path`; returns it."""
    path = Path(path).expanduser()
    if _is_built(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temp dir next to `path` and rename: a half-written model is never visible and
    # two processes racing to build both end with one complete copy.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    tokenizer = _build_tokenizer()
    processor = _build_processor(tokenizer)
    model = _build_model(tokenizer, seed)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "liveobject-tiny.json").write_text(
        json.dumps({"note": "random weights: descriptions are gibberish", "seed": seed})
    )
    tmp.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
    _move_into_place(tmp, path)
    logger.info("built tiny random-weight VLM at %s (vocab %d)", path, len(tokenizer))
    return path
