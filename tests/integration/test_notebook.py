"""notebooks/event_analysis.ipynb runs clean (nbclient) on the data of a short real run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import nbformat
import pytest
from nbclient import NotebookClient

from pipelines.samples import generate_sample_video
from tests.support.cli import write_config
from tests.support.network import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "event_analysis.ipynb"


def test_notebook_runs_clean_on_a_real_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    model = tiny_model
    clips = [
        generate_sample_video(tmp_path / "a.mp4", seconds=6, motion_windows=[(1.0, 3.0)], seed=5),
        generate_sample_video(tmp_path / "b.mp4", seconds=6, motion_windows=[(2.0, 4.0)], seed=6),
    ]
    config = write_config(
        tmp_path,
        model,
        None,
        free_port(),
        1,
        clips,
        namespace="liveobject-notebook",
        storage_extra=", parquet_flush_interval_s: 2",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    command = ["run", "--config", str(config), "--until-done", "--no-dashboard"]
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    store = tmp_path / "store"
    with duckdb.connect(str(store / "events.duckdb"), read_only=True) as db:
        stored = db.execute("SELECT count(*) FROM events").fetchall()[0][0]
    assert stored > 0, "the run stored no event"

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # Not saved in the notebook: what the kernel counted, and that it is this venv's python.
    probe = 'import sys\nprint("PROBE", n_events, len(gallery), sys.executable)'
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    monkeypatch.setenv("LIVEOBJECT_DATA", str(store))  # the kernel inherits this environment
    client = NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError when any cell errors

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    probe_line = text.strip().splitlines()[-1].split(" ", 3)
    assert probe_line[0] == "PROBE"
    assert int(probe_line[1]) == stored  # the Parquet export holds every stored event
    assert int(probe_line[2]) > 0  # the gallery found thumbnails
    assert probe_line[3] == sys.executable
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3, "expected the hourly plot, the latency histogram and the gallery"
    assert "of the" in text and "have a thumbnail" in text
