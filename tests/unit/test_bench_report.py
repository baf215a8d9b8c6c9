"""The benchmark table: rows judged against targets, the runner's failure rows, the README."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.harness import FAILED, INFO, MISS, NOT_RUN, PASS, Row, Target, row_from_dict
from benchmarks.report import END, START, readme_block, render_markdown, update_readme, worst_ratio
from benchmarks.run import Bench, run_one

ROOT = Path(__file__).resolve().parents[2]
META = {"date": "2026-01-01T00:00:00+00:00", "commit": "abc", "cpu": "cpu", "cores": 2}


def test_rows_are_judged_against_their_targets() -> None:
    at_least = Target("ratio", ">=", 0.8)
    assert Row("MQTT", "a", "events/s", 80, 100, ratio=0.8, target=at_least).status == PASS
    assert Row("MQTT", "b", "events/s", 70, 100, ratio=0.7, target=at_least).status == MISS
    assert Row("API", "p99", "ms", 51.0, target=Target("ours", "<=", 50)).status == MISS
    assert Row("API", "p99", "ms", 12.0, target=Target("ours", "<=", 50)).status == PASS
    assert Row("VLM", "x", "%", 3.0).status == INFO
    assert Row("VLM", "ratio missing", "x", 1.0, target=at_least).status == FAILED


def test_a_row_read_back_is_judged_again() -> None:
    row = Row("MQTT", "a", "events/s", 70, 100, ratio=0.7, target=Target("ratio", ">=", 0.8))
    data = json.loads(json.dumps(row.to_dict()))
    data["status"] = PASS  # a script cannot declare a miss a pass
    assert row_from_dict(data).status == MISS


def _bench(name: str) -> Bench:
    return Bench(name, f"bench_{name}.py", "Test", 60, 60)


def test_runner_rows_for_missing_crashing_and_good_scripts(tmp_path: Path) -> None:
    scripts, results = tmp_path / "scripts", tmp_path / "results"
    scripts.mkdir()
    results.mkdir()
    (scripts / "bench_crash.py").write_text("raise SystemExit('broken on purpose')\n")
    rows = {"group": "Test", "what": "w", "unit": "x/s", "ours": 9.0, "baseline": 10.0}
    rows |= {"ratio": 0.9, "target": {"on": "ratio", "op": ">=", "value": 0.85}}
    good = {"benchmark": "good", "quick": True, "rows": [rows]}
    (scripts / "bench_good.py").write_text(
        f"import json, sys\nopen({str(results / 'good.json')!r}, 'w').write(json.dumps({good!r}))\n"
    )
    (scripts / "bench_silent.py").write_text("print('did nothing')\n")
    run = {
        n: run_one(_bench(n), True, tmp_path, scripts, results)[0]
        for n in ("missing", "crash", "good", "silent")
    }
    assert [r.status for r in run["missing"]] == [NOT_RUN]
    assert run["crash"][0].status == FAILED and "broken on purpose" in run["crash"][0].note
    assert run["silent"][0].status == FAILED and "wrote no" in run["silent"][0].note
    (good_row,) = run["good"]
    assert good_row.status == PASS and good_row.ratio == 0.9


def test_a_script_past_its_time_limit_is_a_failed_row(tmp_path: Path) -> None:
    (tmp_path / "bench_slow.py").write_text("import time\ntime.sleep(60)\n")
    bench = Bench("slow", "bench_slow.py", "Test", 1, 1)
    (row,), info = run_one(bench, False, tmp_path, tmp_path, tmp_path)
    assert row.status == FAILED and "timed out" in row.note
    assert info["exit_code"] is None


def test_markdown_names_quick_mode_machine_and_the_worst_ratio() -> None:
    rows = [
        Row("MQTT", "actor", "events/s", 50, 100, "raw", 0.5, Target("ratio", ">=", 0.8)),
        Row("VLM", "batched", "images/s", 40, 10, "unbatched", 4.0, Target("ratio", ">=", 3)),
        Row("Search", "p99", "ms", None, note="crashed", status=FAILED),
    ]
    text = render_markdown(rows, META | {"quick": True, "wall_s": 60}, None)
    assert "QUICK MODE" in text and "commit abc" in text and "2 cores" in text
    assert "Worst ratio against its target: MQTT" in text
    assert worst_ratio(rows) is rows[0]
    assert "| **miss** |" in text and "| failed |" in text and "crashed" in text
    assert "QUICK MODE" not in render_markdown(rows, META | {"quick": False}, None)


def test_update_readme_replaces_only_the_marked_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{START}\nold table\n{END}\nafter\n")
    assert update_readme(readme, "new table\n")
    text = readme.read_text()
    assert readme_block(text) == "new table\n"
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    unmarked = tmp_path / "OTHER.md"
    unmarked.write_text("no markers\n")
    assert not update_readme(unmarked, "t\n") and unmarked.read_text() == "no markers\n"


def test_readme_performance_section_is_generated_from_latest_md() -> None:
    latest = ROOT / "benchmarks" / "results" / "latest.md"
    block = readme_block((ROOT / "README.md").read_text())
    assert block is not None, "README.md lacks the bench markers"
    if not latest.exists():
        pytest.skip("no benchmarks/results/latest.md yet: `make bench` writes it")
    assert block == latest.read_text(), (
        "README's performance section differs from benchmarks/results/latest.md: "
        "run `python benchmarks/run.py` (or `make bench`) instead of editing it by hand"
    )


def test_reused_rows_say_when_they_were_measured(tmp_path: Path) -> None:
    from benchmarks.run import _reused_rows

    row = {"group": "Test", "what": "w", "unit": "ms", "ours": 5.0, "note": "five"}
    data = {"benchmark": "old", "started": "2026-01-02T03:04:05+00:00", "rows": [row]}
    (tmp_path / "old.json").write_text(json.dumps(data))
    (reused,) = _reused_rows(_bench("old"), tmp_path)
    assert (
        reused.status == INFO and reused.note == "(from its run of 2026-01-02T03:04:05+00:00) five"
    )
    (absent,) = _reused_rows(_bench("absent"), tmp_path)
    assert absent.status == NOT_RUN
    meta = META | {"runs": {"old": {"reused": data["started"]}, "soak": {"wall_s": 1}}}
    text = render_markdown([reused], meta, None)
    assert "rows from their last runs: old (2026-01-02T03:04:05+00:00)." in text
