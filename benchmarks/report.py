"""The results table as Markdown (latest.md) and the README section generated from it."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from benchmarks.harness import FAILED, MISS, NOT_RUN, PASS, Row

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
_SECTION = re.compile(re.escape(START) + r"\n(.*?)" + re.escape(END), re.DOTALL)


def fmt(value: float | None) -> str:
    """A number for people: thousands separators, about three significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    size = abs(value)
    if float(value).is_integer() and size < 1e15:
        return f"{int(value):,}"
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _result(row: Row) -> str:
    if row.status in (PASS, MISS):
        return f"**{row.status}**"
    return row.status


def table(rows: list[Row]) -> list[str]:
    """The table lines plus numbered notes (absolute numbers and why a row failed)."""
    lines = [
        "| stage | what (through the product) | ours | baseline | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for row in rows:
        what = row.what
        if row.note:
            notes.append(row.note)
            what += f" [{len(notes)}]"
        ours = f"{fmt(row.ours)} {row.unit}".strip() if row.ours is not None else "-"
        base = "-"
        if row.baseline is not None:
            base = f"{fmt(row.baseline)} {row.unit}".strip()
            if row.baseline_what:
                base += f" ({row.baseline_what})"
        target = row.target.text(row.unit) if row.target else ""
        cells = [row.group, what, ours, base, fmt(row.ratio), target, _result(row)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if notes:
        lines.append("")
        lines.extend(f"{i}. {_cell(note)}" for i, note in enumerate(notes, 1))
    return lines


def worst_ratio(rows: list[Row]) -> Row | None:
    """The row with a ratio target that is furthest below (or least above) its target."""
    scored = [
        (row.ratio / row.target.value, row)
        for row in rows
        if row.target is not None
        and row.target.on == "ratio"
        and row.ratio is not None
        and row.target.value > 0
        and row.status not in (FAILED, NOT_RUN)
    ]
    return min(scored, key=lambda item: item[0])[1] if scored else None


def render_markdown(rows: list[Row], meta: dict[str, Any], profile: dict[str, Any] | None) -> str:
    """latest.md: header (mode, machine, date, commit), the table, worst ratio, profile."""
    mode = (
        "QUICK MODE — small sizes, seconds each: a smoke run, not the figures to steer by"
        if meta.get("quick")
        else "full run"
    )
    lines = [
        f"### Benchmark results ({mode})",
        "",
        f"Machine: {meta.get('cpu')}, {meta.get('cores')} cores, GPU: {meta.get('gpu')} · "
        f"{meta.get('date')} · commit {meta.get('commit')} · `{meta.get('command')}` in "
        f"{float(meta.get('wall_s', 0)) / 60:.1f} min (load average at the end "
        f"{', '.join(str(x) for x in meta.get('loadavg_at_end', []))}). Every ratio is against "
        "a baseline measured in the same run on the same input; absolute numbers drift with the "
        "load of this shared machine.",
        *_reused_text(meta),
        "",
        *table(rows),
        "",
    ]
    counts = {s: sum(r.status == s for r in rows) for s in (PASS, MISS, FAILED, NOT_RUN)}
    lines.append(
        f"{counts[PASS]} passed, {counts[MISS]} missed, {counts[FAILED]} failed, "
        f"{counts[NOT_RUN]} not run."
    )
    worst = worst_ratio(rows)
    if worst is not None:
        lines.append(
            f"Worst ratio against its target: {worst.group} — {worst.what}: {fmt(worst.ratio)} "
            f"(target {worst.target.text(worst.unit) if worst.target else ''})."
        )
    if profile and profile.get("paragraph"):
        lines += ["", f"#### Where the time goes: {profile.get('stage', '')}", ""]
        lines.append(str(profile["paragraph"]))
    return "\n".join(lines).rstrip() + "\n"


def _reused_text(meta: dict[str, Any]) -> list[str]:
    """A line naming the benchmarks whose rows come from earlier runs (`run.py --reuse`)."""
    reused = {
        name: run["reused"]
        for name, run in (meta.get("runs") or {}).items()
        if isinstance(run, dict) and "reused" in run
    }
    if not reused:
        return []
    names = ", ".join(f"{name} ({when})" for name, when in reused.items())
    return ["", f"Not run this time; rows from their last runs: {names}."]


def readme_block(readme_text: str) -> str | None:
    """The text between the bench markers of README.md (None when the markers are missing)."""
    match = _SECTION.search(readme_text)
    return match.group(1) if match else None


def update_readme(readme: Path, markdown: str) -> bool:
    """Replace the README's bench section with markdown; False when the markers are missing."""
    text = readme.read_text()
    if readme_block(text) is None:
        print(f"README has no {START} … {END} section; left as it is")
        return False
    new = _SECTION.sub(lambda _m: f"{START}\n{markdown}{END}", text, count=1)
    if new != text:
        readme.write_text(new)
    return True
