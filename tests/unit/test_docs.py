"""The project's own reference stays true: links resolve, config reference matches the models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.config import reference

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(path: Path) -> list[str]:
    """Every relative link target in a Markdown file, without its #fragment."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    targets = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_docs_exist() -> None:
    for name in ("architecture.md", "config.md", "mqtt.md", "http-api.md"):
        assert (ROOT / "docs" / name).is_file(), name


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc: Path) -> None:
    missing = [t for t in relative_links(doc) if not (doc.parent / t).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"


def test_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("[ok](x.md) [web](https://example.com) [gone](nowhere.md#part)\n")
    assert relative_links(doc) == ["x.md", "nowhere.md"]


def test_config_reference_matches_the_models() -> None:
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == reference.render(), (
        "docs/config.md is stale: run `python -m pipelines.config.reference > docs/config.md`"
    )


def test_config_reference_names_every_key() -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    paths = reference.field_paths()
    assert "cameras[].motion.threshold" in paths
    for path in paths:
        section, _, key = path.rpartition(".")
        assert f"## `{section or 'top level'}`" in text, section
        assert f"| `{key}` |" in text, path
