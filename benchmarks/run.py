"""`make bench`: run every benchmark, one subprocess each, and write one table.

Each benchmark script writes `results/<name>.json` with rows (see benchmarks/harness.py). A
script that crashes, times out or writes nothing becomes a `failed` row naming why; a script that
is not there becomes a `not run` row; the table is written whatever happens. Output:
`results/latest.md`, `results/latest.json`, and the README's performance section (between
`<!-- bench:start -->` and `<!-- bench:end -->`), which is generated from latest.md, never
edited by hand.

    .venv/bin/python benchmarks/run.py [--quick] [--only mqtt,store] [--no-readme] [--reuse]
    BENCH_QUICK=1 make bench      # the same as --quick: small sizes, seconds each
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (
    FAILED,
    MISS,
    NOT_RUN,
    REPO,
    RESULTS,
    Row,
    cpu_model,
    quick_requested,
    row_from_dict,
)
from benchmarks.report import render_markdown, update_readme

README = REPO / "README.md"


@dataclass(frozen=True)
class Bench:
    """One benchmark script: its result name, the group its rows go in, and its time limits."""

    name: str
    script: str
    group: str
    timeout_s: float
    quick_timeout_s: float
    runs: bool = True  # False: only its committed results are read (the GPU run)


BENCHES: tuple[Bench, ...] = (
    Bench("mqtt", "bench_mqtt.py", "MQTT", 180, 120),
    Bench("ingest", "bench_ingest.py", "Ingest", 270, 90),
    Bench("live", "bench_live.py", "Ingest", 720, 150),
    Bench("capacity", "bench_capacity.py", "Ingest", 900, 150),
    Bench("vlm", "bench_vlm.py", "VLM", 150, 120),
    Bench("store", "bench_store.py", "Store/API", 240, 120),
    Bench("e2e", "bench_e2e.py", "End to end", 180, 150),
    Bench("search", "bench_search.py", "Search", 300, 90),
    Bench("noise_control", "bench_noise_control.py", "Noise control", 180, 120),
    Bench("soak", "bench_soak.py", "Long run", 2400, 480),
    Bench("vlm_gpu", "bench_vlm_gpu.py", "VLM (GPU)", 0, 0, runs=False),
)


def git_commit() -> str:
    """HEAD's short hash, with `+dirty` when the working tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _accepts_quick(script: Path) -> bool:
    """Whether a script (ours or another issue's) takes --quick: read, not run."""
    return "--quick" in script.read_text(errors="replace")


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _fail_row(bench: Bench, status: str, why: str) -> Row:
    return Row(bench.group, f"{bench.name} benchmark", "", None, note=why, status=status)


def _repo_relative(path: Path) -> str:
    """A path as committed results may hold it: relative to the repository, never absolute."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return path.name


def run_one(
    bench: Bench,
    quick: bool,
    logs: Path,
    scripts: Path = REPO / "benchmarks",
    results: Path = RESULTS,
) -> tuple[list[Row], dict[str, Any]]:
    """Run one script as a subprocess (own process group) and read its rows back."""
    script = scripts / bench.script
    result = results / f"{bench.name}.json"
    info: dict[str, Any] = {"script": bench.script}
    if not bench.runs:
        return _read_rows(bench, result, since=None), info
    if not script.exists():
        return [_fail_row(bench, NOT_RUN, f"{bench.script} does not exist (yet)")], info
    command = [sys.executable, str(script)]
    if quick and _accepts_quick(script):
        command.append("--quick")
    env = dict(os.environ, BENCH_QUICK="1" if quick else "0", PYTHONUNBUFFERED="1")
    timeout = bench.quick_timeout_s if quick else bench.timeout_s
    started = time.time()
    log_path = logs / f"{bench.name}.log"
    print(f"== {bench.name}: {' '.join(command[1:])} (limit {timeout:.0f} s)", flush=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            _stop_group(proc)
    info |= {
        "wall_s": round(time.time() - started, 1),
        "exit_code": code,
        "log": _repo_relative(log_path),
    }
    output = log_path.read_text(errors="replace")
    print(_tail(output, 12).replace(" | ", "\n"), flush=True)
    if code is None:
        why = f"timed out after {timeout:.0f} s; last output: {_tail(output)}"
        return [_fail_row(bench, FAILED, why)], info
    if code != 0:
        return [_fail_row(bench, FAILED, f"exit {code}: {_tail(output)}")], info
    return _read_rows(bench, result, since=started), info


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the script's process group (its finally blocks stop Ray and brokers), then kill."""
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _read_rows(bench: Bench, path: Path, since: float | None) -> list[Row]:
    if not path.exists():
        if not bench.runs:
            return [_fail_row(bench, NOT_RUN, f"no results/{path.name}")]
        return [_fail_row(bench, FAILED, f"exited 0 but wrote no results/{path.name}")]
    if since is not None and path.stat().st_mtime < since:
        return [_fail_row(bench, FAILED, f"results/{path.name} is older than this run")]
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        return [_fail_row(bench, FAILED, f"results/{path.name} is not JSON: {exc}")]
    if data.get("status") == NOT_RUN:
        return [_fail_row(bench, NOT_RUN, str(data.get("reason", "not run")))]
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        keys = ", ".join(sorted(data)[:12])
        return [_fail_row(bench, FAILED, f"results/{path.name} has no rows (keys: {keys})")]
    out = []
    for item in rows:
        row = row_from_dict(item)
        row.group = row.group if row.group not in ("", "?") else bench.group
        out.append(row)
    return out


def main() -> int:
    """Run the benchmarks, write latest.md/latest.json and the README section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds each")
    parser.add_argument("--only", default="", help="comma-separated names (others: not run)")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --only: the others' rows are read from their last results/<name>.json",
    )
    args = parser.parse_args()
    quick = quick_requested(args.quick)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    started = time.time()
    commit = git_commit()  # before the scripts rewrite the committed results
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    runs: dict[str, Any] = {}
    for bench in BENCHES:
        if only and bench.name not in only:
            if args.reuse:
                rows.extend(_reused_rows(bench))
                runs[bench.name] = {"reused": _started_of(RESULTS / f"{bench.name}.json")}
            else:
                rows.append(_fail_row(bench, NOT_RUN, "left out by --only"))
            continue
        bench_rows, runs[bench.name] = run_one(bench, quick, logs)
        rows.extend(bench_rows)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "quick": quick,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": _gpu_name(rows),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.time() - started, 1),
        "command": _command(args, quick),
        "runs": runs,
    }
    profile_path = RESULTS / "profile.json"  # written by bench_e2e.py: only this run's counts
    fresh = profile_path.exists() and profile_path.stat().st_mtime >= started
    profile = _read_json(profile_path) if fresh else None
    markdown = render_markdown(rows, meta, profile)
    (RESULTS / "latest.md").write_text(markdown)
    latest = {"meta": meta, "rows": [row.to_dict() for row in rows], "profile": profile}
    (RESULTS / "latest.json").write_text(json.dumps(latest, indent=2, default=str) + "\n")
    if not args.no_readme:
        update_readme(README, markdown)
    print(markdown)
    misses = sum(row.status == MISS for row in rows)
    broken = sum(row.status == FAILED for row in rows)
    print(f"{len(rows)} rows, {misses} missed, {broken} failed; {meta['wall_s']:.0f} s")
    return 1 if broken else 0  # a miss is a result; a benchmark that broke is not


def _command(args: Any, quick: bool) -> str:
    """How this table was made, as a person would type it."""
    if not args.only:
        return "make bench" + (" (BENCH_QUICK=1)" if quick else "")
    flags = ["--quick"] if quick else []
    flags += ["--only", args.only] + (["--reuse"] if args.reuse else [])
    return "python benchmarks/run.py " + " ".join(flags)


def _started_of(path: Path) -> str:
    data = _read_json(path) or {}
    return str(data.get("started", "?"))


def _reused_rows(bench: Bench, results: Path = RESULTS) -> list[Row]:
    """A benchmark not run now: its last results, each row saying when they were measured."""
    path = results / f"{bench.name}.json"
    rows = _read_rows(replace(bench, runs=False), path, since=None)
    when = _started_of(path)
    for row in rows:
        if row.status != NOT_RUN:
            row.note = f"(from its run of {when}) {row.note}".strip()
    return rows


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _gpu_name(rows: list[Row]) -> str:
    for row in rows:
        card = row.detail.get("device") if row.group == "VLM (GPU)" else None
        if card and row.status not in (FAILED, NOT_RUN):
            return str(card)
    return "none used"


if __name__ == "__main__":
    sys.exit(main())
