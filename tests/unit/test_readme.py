"""The Python snippets in README.md run as written (against a real store export)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.events import Event
from pipelines.storage import EventStore

README = Path(__file__).resolve().parents[2] / "README.md"


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_snippets() -> None:
    assert python_snippets()


@pytest.mark.parametrize("snippet", python_snippets())
def test_snippet_runs_on_a_real_export(
    snippet: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EventStore(tmp_path / "data")
    events = [
        Event(
            camera_id=camera,
            camera_name=camera.title(),
            description="A person walks by.",
            objects_detected=("person",),
            confidence=70,
            source_type="file",
            timestamp=datetime.now(UTC),
        )
        for camera in ("porch", "porch", "drive")
    ]
    store.append(events, {})
    assert store.export_parquet() == 3
    store.close()
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    duckdb = namespace["duckdb"]
    counts = dict(
        duckdb.sql(  # type: ignore[attr-defined]
            "SELECT camera_id, count(*) FROM read_parquet('data/parquet/**/*.parquet', "
            "hive_partitioning=true) GROUP BY 1"
        ).fetchall()
    )
    assert counts == {"porch": 2, "drive": 1}
