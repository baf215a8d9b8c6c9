"""Import-time boundaries of the VLM stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_backends_import_does_not_load_the_tiny_demo_model_builder() -> None:
    # a fresh interpreter: this test session may already have imported pipelines.vlm.tiny
    code = (
        "import sys, pipelines.vlm.backends; "
        "print('pipelines.vlm.tiny' in sys.modules, 'pipelines.vlm.engine' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.stdout.split() == ["False", "True"]


def test_a_pinned_revision_reaches_from_pretrained(monkeypatch: pytest.MonkeyPatch) -> None:
    """vlm.revision (a Hub commit) is what the processor and the model are loaded at."""
    import transformers

    from pipelines.config import VLMConfig
    from pipelines.vlm.transformers_backend import TransformersBackend

    asked: list[tuple[str, dict[str, object]]] = []

    class Loaded:
        tokenizer = type("Tok", (), {})()

        def to(self, _device: str) -> None:
            return None

        def eval(self) -> Loaded:
            return self

    def loader(kind: str) -> object:
        def from_pretrained(source: str, **kwargs: object) -> Loaded:
            asked.append((kind, kwargs))
            return Loaded()

        return from_pretrained

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", loader("processor"))
    monkeypatch.setattr(
        transformers.AutoModelForImageTextToText, "from_pretrained", loader("model")
    )
    sha = "0123456789abcdef0123456789abcdef01234567"
    primary = VLMConfig(model="HuggingFaceTB/SmolVLM-256M-Instruct", revision=sha).primary()
    TransformersBackend(primary, device="cpu")._load_from(primary.model, "cpu", None)
    assert [(kind, kw.get("revision")) for kind, kw in asked] == [
        ("processor", sha),
        ("model", sha),
    ]
