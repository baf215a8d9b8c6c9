"""The Parquet queries users copy (the README's, the notebook's) read a column that was added
after a day's first file was written: DuckDB takes the first file's columns unless
`union_by_name=true`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _day_with_a_new_column(root: Path) -> Path:
    """parquet/date=…/ with an older file (no `zone`) and a newer one that has it."""
    day = root / "parquet" / "date=2026-12-01"
    day.mkdir(parents=True)
    with duckdb.connect() as con:
        first = day / "part-1-1-a.parquet"
        con.execute(f"COPY (SELECT 'e1' AS event_id, 'porch' AS camera_id) TO '{first}'")
        con.execute(
            "COPY (SELECT 'e2' AS event_id, 'porch' AS camera_id, 'driveway' AS zone) "
            f"TO '{day / 'part-2-2-b.parquet'}'"
        )
    return root


def _readme_query() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r'duckdb\.sql\("(SELECT [^"]*read_parquet[^"]*)"\)', text)
    assert match, "README's Parquet snippet not found"
    return match.group(1)


def _notebook_view() -> str:
    notebook = json.loads((ROOT / "notebooks" / "event_analysis.ipynb").read_text())
    source = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    match = re.search(r"read_parquet\('\{PARQUET\}', \"[^\n]*\n\s*\"([^\"]*)\"", source)
    assert match, "the notebook's read_parquet call not found"
    return match.group(1)  # its options, e.g. "hive_partitioning=true, union_by_name=true)"


@pytest.mark.parametrize("where", ["README", "notebook"])
def test_snippets_read_columns_added_after_a_days_first_file(tmp_path: Path, where: str) -> None:
    data = _day_with_a_new_column(tmp_path / "data")
    glob = str(data / "parquet" / "**" / "*.parquet")
    with duckdb.connect() as con:
        if where == "README":
            query = _readme_query().replace("data/parquet/**/*.parquet", glob)
            assert con.sql(query).fetchall() == [("porch", 2)]
            options = re.search(r"read_parquet\([^)]*\)", query).group(0)  # type: ignore[union-attr]
        else:
            options = f"read_parquet('{glob}', {_notebook_view()}"
        rows = con.sql(f"SELECT event_id, zone FROM {options} ORDER BY 1").fetchall()
    assert rows == [("e1", None), ("e2", "driveway")]
