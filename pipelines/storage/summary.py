"""Period summaries: counts per camera, object and hour, rings, and representative events.

Everything is counted by DuckDB over the events in ``[since, until]`` (optionally one camera);
`summarize` returns a frozen `Summary`, `plain_text` writes it as a short paragraph (the text
used when no language model is asked, or when it does not answer in time).

Counts that depend on columns another part of the pipeline may not have written yet
(``filtered``, ``throttled``) are read when the events table has the column and are 0 otherwise;
``reused`` is the events whose ``provider_used`` is ``"reused"``; ``fallback`` the events stored
with the fallback text (no ``provider_used``: over a VLM budget, or every backend failed).

Representative events: the descriptions of the period are grouped (case and surrounding space
ignored), and up to ``examples`` of the most frequent ones are taken greedily so that each next
one is the least like those already taken (largest smallest Jaccard distance between word sets;
the more frequent wins a tie). Each comes with its newest event and how many events share it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from pipelines.events import Event, as_utc, format_timestamp
from pipelines.storage.connection import StoreBase
from pipelines.storage.schema import _SELECT_EVENT, _row_to_event

MAX_EXAMPLES = 20
CANDIDATES = 200  # most frequent distinct descriptions considered for the examples
_WORD_RE = re.compile(r"\w+")
# Flags some pipeline stages add: counted when the events table has the (BOOLEAN) column.
OPTIONAL_FLAGS = ("filtered", "throttled")


@dataclass(frozen=True)
class Summary:
    """What happened in a period: counts, busiest hour, first/last and representative events."""

    since: datetime
    until: datetime
    camera_id: str | None
    total: int
    cameras: tuple[tuple[str, str, int], ...]  # (camera_id, camera_name, events), most first
    objects: tuple[tuple[str, int], ...]  # (object, events), most first
    hours: tuple[tuple[datetime, int], ...]  # (hour start UTC, events), hours with events only
    rings: int
    reused: int
    fallback: int
    filtered: int
    throttled: int
    first_event: Event | None
    last_event: Event | None
    examples: tuple[tuple[Event, int], ...]  # (newest event of a description, events sharing it)

    @property
    def busiest_hour(self) -> tuple[datetime, int] | None:
        """The hour with the most events (the earliest of equals), or None."""
        if not self.hours:
            return None
        return max(self.hours, key=lambda item: (item[1], -item[0].timestamp()))

    def facts(self) -> dict[str, Any]:
        """The summary as plain JSON facts (no URLs): what a language model is shown."""
        busiest = self.busiest_hour
        return {
            "period_utc": [format_timestamp(self.since), format_timestamp(self.until)],
            "camera_id": self.camera_id,
            "events": self.total,
            "per_camera": {name: n for _cid, name, n in self.cameras},
            "per_object": dict(self.objects),
            "busiest_hour_utc": None if busiest is None else format_timestamp(busiest[0]),
            "busiest_hour_events": None if busiest is None else busiest[1],
            "doorbell_rings": self.rings,
            "first_event": _brief(self.first_event),
            "last_event": _brief(self.last_event),
            "examples": [{**_brief(ev), "similar_events": n} for ev, n in self.examples],
        }


def _brief(event: Event | None) -> dict[str, Any]:
    if event is None:
        return {}
    return {
        "time_utc": format_timestamp(event.timestamp),
        "camera": event.camera_name,
        "description": event.description,
    }


def summarize(
    store: StoreBase,
    since: datetime,
    until: datetime,
    camera_id: str | None = None,
    examples: int = 5,
) -> Summary:
    """The Summary of the events with since <= timestamp <= until (of one camera if given)."""
    since, until = as_utc(since), as_utc(until)
    period = _Period('"timestamp" >= ? AND "timestamp" <= ?', [since, until])
    if camera_id is not None:
        period = _Period(period.where + " AND camera_id = ?", [*period.params, camera_id])
    examples = max(0, min(int(examples), MAX_EXAMPLES))
    with store.reading() as con:
        flags = _flag_columns(con)
        counts = [
            "count(*)",
            "count(*) FILTER (WHERE is_doorbell_ring)",
            "count(*) FILTER (WHERE provider_used = 'reused')",
            "count(*) FILTER (WHERE provider_used IS NULL)",
            *[f'count(*) FILTER (WHERE "{flag}")' for flag in flags],
        ]
        row = period.rows(con, ", ".join(counts))[0]
        flag_counts = dict(zip(flags, row[4:], strict=True))
        cameras = period.rows(
            con,
            'camera_id, arg_max(camera_name, "timestamp"), count(*)',
            "GROUP BY camera_id ORDER BY 3 DESC, 1",
        )
        objects = period.rows(
            con, "o, count(*)", "GROUP BY o ORDER BY 2 DESC, 1", "unnest(objects_detected) AS o"
        )
        hours = period.rows(
            con, "date_trunc('hour', \"timestamp\") AS h, count(*)", "GROUP BY h ORDER BY h"
        )
        first, last = (
            period.rows(con, _SELECT_EVENT, f'ORDER BY "timestamp" {o}, event_id {o} LIMIT 1')
            for o in ("ASC", "DESC")
        )
        picked = _examples(con, period, examples) if examples else ()
    return Summary(
        since=since,
        until=until,
        camera_id=camera_id,
        total=int(row[0]),
        cameras=tuple((str(c), str(name), int(n)) for c, name, n in cameras),
        objects=tuple((str(o), int(n)) for o, n in objects),
        hours=tuple((as_utc(h), int(n)) for h, n in hours),
        rings=int(row[1]),
        reused=int(row[2]),
        fallback=int(row[3]),
        filtered=int(flag_counts.get("filtered", 0)),
        throttled=int(flag_counts.get("throttled", 0)),
        first_event=_row_to_event(first[0]) if first else None,
        last_event=_row_to_event(last[0]) if last else None,
        examples=picked,
    )


@dataclass(frozen=True)
class _Period:
    """The WHERE condition selecting the period's events, and its bound values."""

    where: str
    params: list[Any]

    def rows(
        self, con: duckdb.DuckDBPyConnection, select: str, tail: str = "", inner: str | None = None
    ) -> list[tuple[Any, ...]]:
        """`SELECT select FROM <the period's events> tail`; with `inner`, from a subquery
        selecting `inner` of those events (e.g. unnested objects)."""
        source = f"events WHERE {self.where}"
        if inner is not None:
            source = f"(SELECT {inner} FROM {source})"  # noqa: S608
        sql = f"SELECT {select} FROM {source} {tail}"  # noqa: S608 - constants; values bound
        return con.execute(sql, self.params).fetchall()


def _flag_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Which OPTIONAL_FLAGS the events table has as BOOLEAN columns."""
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'events' AND data_type = 'BOOLEAN'"
    ).fetchall()
    present = {str(r[0]) for r in rows}
    return [flag for flag in OPTIONAL_FLAGS if flag in present]


def _examples(
    con: duckdb.DuckDBPyConnection, period: _Period, count: int
) -> tuple[tuple[Event, int], ...]:
    """Up to `count` (event, events sharing its description), as different from each other as
    the period allows (see the module docstring)."""
    candidates = period.rows(
        con,
        'lower(trim(description)) AS d, count(*), arg_max(event_id, "timestamp")',
        f"GROUP BY d ORDER BY 2 DESC, 1 LIMIT {CANDIDATES}",
    )
    chosen = pick_diverse([str(c[0]) for c in candidates], count)
    ids = [str(candidates[i][2]) for i in chosen]
    if not ids:
        return ()
    marks = ", ".join("?" * len(ids))
    rows = con.execute(
        f"SELECT {_SELECT_EVENT} FROM events WHERE event_id IN ({marks})",  # noqa: S608
        ids,
    ).fetchall()
    by_id = {ev.event_id: ev for ev in map(_row_to_event, rows)}
    return tuple(
        (by_id[candidates[i][2]], int(candidates[i][1]))
        for i in chosen
        if candidates[i][2] in by_id
    )


def pick_diverse(texts: Sequence[str], count: int) -> list[int]:
    """Indices of up to `count` texts, the first first, then each least like those picked.

    `texts` come most important first; distance is 1 - Jaccard similarity of the word sets.
    """
    words = [frozenset(_WORD_RE.findall(t.lower())) for t in texts]
    picked: list[int] = []
    left = list(range(len(texts)))
    while left and len(picked) < count:
        best = max(
            left,
            key=lambda i: (min((_distance(words[i], words[j]) for j in picked), default=1.0), -i),
        )
        picked.append(best)
        left.remove(best)
    return picked


def _distance(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 0.0
    return 1.0 - len(a & b) / len(a | b)


def plain_text(summary: Summary) -> str:
    """A short factual paragraph over the summary (no language model involved)."""
    span = f"{format_timestamp(summary.since)} to {format_timestamp(summary.until)}"
    if summary.total == 0:
        return f"No events from {span}."
    cams = ", ".join(f"{name} {n}" for _cid, name, n in summary.cameras[:5])
    parts = [f"{summary.total} event{'s' * (summary.total != 1)} from {span} ({cams})."]
    if summary.objects:
        seen = ", ".join(f"{obj} {n}" for obj, n in summary.objects[:5])
        parts.append(f"Seen: {seen}.")
    busiest = summary.busiest_hour
    if busiest is not None:
        parts.append(f"Busiest hour: {format_timestamp(busiest[0])} with {busiest[1]}.")
    if summary.rings:
        parts.append(f"Doorbell rings: {summary.rings}.")
    if summary.last_event is not None:
        last = summary.last_event
        parts.append(
            f"Last: {last.camera_name} at {format_timestamp(last.timestamp)}: {last.description}"
        )
    return " ".join(parts)
