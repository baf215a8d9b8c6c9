"""VLM backends (registered by name) and the engine that tries them in order.

The public names of the VLM stage, re-exported from the modules that hold them: the interface
and registry (`registry`), the prompt (`prompt`), one module per backend (`transformers_backend`,
`openai_backend`) and the engine with its fallback order (`engine`).
"""

from __future__ import annotations

from pipelines.vlm.engine import DEFAULT_COOLDOWN_S, VLMEngine, create_backend
from pipelines.vlm.openai_backend import (
    BACKOFF_BASE_S,
    DEFAULT_OPENAI_BASE_URL,
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER_S,
    OpenAIBackend,
)
from pipelines.vlm.prompt import JSON_INSTRUCTION, build_prompt
from pipelines.vlm.registry import (
    BACKENDS,
    Backend,
    BackendError,
    RequestError,
    register_backend,
)
from pipelines.vlm.transformers_backend import DEFAULT_TINY_DIR, TransformersBackend

__all__ = [
    "BACKENDS",
    "BACKOFF_BASE_S",
    "DEFAULT_COOLDOWN_S",
    "DEFAULT_OPENAI_BASE_URL",
    "DEFAULT_TINY_DIR",
    "JSON_INSTRUCTION",
    "MAX_ATTEMPTS",
    "MAX_RETRY_AFTER_S",
    "Backend",
    "BackendError",
    "OpenAIBackend",
    "RequestError",
    "TransformersBackend",
    "VLMEngine",
    "build_prompt",
    "create_backend",
    "register_backend",
]
