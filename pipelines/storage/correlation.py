"""Correlation groups: events of different cameras that start within a window share a group id.

Recent starts are remembered in memory (``_starts``, one index over every camera in start
order: `starts.RememberedStarts`) so that an event correlated before it is stored gets its group
at append time; the table is read too, since after a restart the memory is empty. Stored rows
that join a group are updated in place, once per batch, in the transaction of the batch's insert
(a failed insert leaves neither them nor the remembered starts changed). Starts and windows are
integer microseconds here (`cursors.micros`): integers compare ten times faster than aware
datetimes. An event's neighbours, remembered or stored, are found by bisecting one list of every
camera's starts, so the cost grows with the starts in its window, not with the number of cameras.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from operator import itemgetter
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from pipelines.events import Event
from pipelines.storage.connection import StoreBase
from pipelines.storage.cursors import from_micros, micros
from pipelines.storage.starts import RememberedStarts, between

# (starts, rows): stored rows [event_id, start, group, camera_id] of every camera ordered by
# start, and their starts apart for bisecting. A row's group is filled in when the batch gives
# it one.
_Stored = tuple[list[int], list[list[Any]]]
# stored event_id -> the group a batch gave it, and the time span the rows lie in; or None
GroupUpdate = tuple[dict[str, str], tuple[datetime, datetime]] | None
HORIZON_US = 300_000_000  # remembered starts kept this far (or two windows) around a batch
MAX_SPANS = 64  # time spans one batch's lookup of stored starts reads at most
_STARTS_SQL = (
    'SELECT event_id, camera_id, epoch_us("timestamp"), correlation_group_id FROM events '
    'WHERE "timestamp" BETWEEN ? AND ? ORDER BY "timestamp"'
)


class CorrelationMixin(StoreBase):
    """assign_correlation and the in-memory/stored start bookkeeping behind it."""

    def assign_correlation(self, events: list[Event], window_s: float) -> list[Event]:
        """The events with their correlation groups, as if each were correlated in turn.

        An event gets a group shared with other cameras' events starting within window_s (the
        nearest existing group among them, else a new one); every other-camera start in the
        window that has no group yet gets the id too: rows already stored are updated in place,
        starts not stored yet are remembered and get it at append time. Events of the same
        batch on different cameras within window_s share a group too; the table is read once and
        updated once for the whole batch. An event that already has a group keeps it (and takes
        no part).
        """
        with self._lock:
            out, update = self._assign(events, window_s)
            if update is not None:
                self._set_groups(*update)
            return out

    def _assign(self, events: list[Event], window_s: float) -> tuple[list[Event], GroupUpdate]:
        """`assign_correlation` but for the stored rows' update, which comes back to be applied
        in the transaction of the batch's insert (`_update_groups`)."""
        if window_s <= 0 or not events:
            return list(events), None
        todo = [i for i, ev in enumerate(events) if ev.correlation_group_id is None]
        with self._lock:
            groups, update = self._correlate(
                [(events[i].camera_id, events[i].timestamp) for i in todo], window_s
            )
            out = list(events)
            for i, group in zip(todo, groups, strict=True):
                ev = events[i]
                if group is not None:
                    out[i] = ev.model_copy(update={"correlation_group_id": group})
                else:  # a later event of this batch may have pulled it into a group
                    out[i] = self._with_group(ev)
            return out, update

    def _remembered(self) -> RememberedStarts:
        """A copy of the remembered starts (`save_batch` puts it back when its insert fails)."""
        return self._starts.copy()

    def _correlate(
        self, starts: list[tuple[str, datetime]], window_s: float
    ) -> tuple[list[str | None], GroupUpdate]:
        """Correlation groups of (camera_id, start) in order (one table read), and the update
        of the stored rows that join a group, if any."""
        if window_s <= 0 or not starts:
            return [None] * len(starts), None
        window = round(window_s * 1_000_000)
        stamps = [micros(ts) for _, ts in starts]
        lo, hi = min(stamps), max(stamps)
        with self._lock:
            self._prune_starts(lo, hi, window)
            span = (from_micros(lo - window), from_micros(hi + window))
            stored = self._stored_starts(_spans(stamps, window))
            changed: dict[str, str] = {}  # stored event_id -> group this batch gave it
            out = [
                self._correlate_one(camera_id, ts, window, stored, changed)
                for (camera_id, _), ts in zip(starts, stamps, strict=True)
            ]
            return out, ((changed, span) if changed else None)

    def _stored_starts(self, spans: list[tuple[int, int]]) -> _Stored:
        """Stored events starting in the spans (disjoint, in order, microseconds; bounds
        included), in start order. The rows between the first span's start and the last one's end
        come back as Arrow columns; only those in a span become Python rows (a backlog's batch
        spans hours, the rows that can matter lie within a window of its events). The spans
        are not put in the SQL: DuckDB took 6 ms just to prepare 64 of them OR'ed together."""
        bounds = [from_micros(spans[0][0]), from_micros(spans[-1][1])]
        try:
            table: pa.Table = self.con.sql(_STARTS_SQL, params=bounds).to_arrow_table()
        except (duckdb.Error, OSError) as exc:
            raise self._fail("correlation lookup", exc) from exc
        if len(spans) > 1 and table.num_rows:
            begun = table.column(2).to_numpy()
            los = np.fromiter((lo for lo, _ in spans), np.int64, len(spans))
            his = np.fromiter((hi for _, hi in spans), np.int64, len(spans))
            at = np.searchsorted(los, begun, side="right") - 1  # the span starting before
            table = table.filter(pa.array((at >= 0) & (begun <= his[np.maximum(at, 0)])))
        event_ids, cameras, starts, groups = (table.column(k).to_pylist() for k in range(4))
        rows = [list(row) for row in zip(event_ids, starts, groups, cameras, strict=True)]
        return starts, rows

    def _correlate_one(
        self,
        camera_id: str,
        ts: int,
        window: int,
        stored: _Stored,
        changed: dict[str, str],
    ) -> str | None:
        """The group of one start; other cameras' starts in the window (remembered or stored)
        join it. Stored rows that had no group are updated in `stored` and added to `changed`."""
        remembered = self._starts.near(camera_id, ts, window)
        in_window = _near_stored(camera_id, ts, window, stored)
        near = remembered + [(abs(row[1] - ts), row[3], row[1], row[2]) for row in in_window]
        if not near:
            self._starts.add(camera_id, ts, None)
            return None
        # the nearest start's group (the first of equally near ones), else a new one
        grouped = [item for item in near if item[3] is not None]
        group = min(grouped, key=itemgetter(0))[3] if grouped else str(uuid.uuid4())
        for _, other, start, had in remembered:  # those with a group keep theirs
            if had is None:
                self._starts.give(other, start, group)
        for row in in_window:  # stored rows: remembered with it; those without a group join it
            self._remember(row[3], row[1], group)
            if row[2] is None:
                row[2] = group
                changed[row[0]] = group
        self._starts.add(camera_id, ts, group)
        return group

    def _remember(self, camera_id: str, start: int, group: str) -> None:
        """Give a remembered start without a group this one, or remember the start with it."""
        if not self._starts.give(camera_id, start, group):
            self._starts.add(camera_id, start, group)

    def _set_groups(self, groups: dict[str, str], span: tuple[datetime, datetime]) -> None:
        """`_update_groups` in a transaction of its own."""
        con = self.con
        try:
            con.execute("BEGIN TRANSACTION")
            self._update_groups(groups, span)
            con.execute("COMMIT")
        except (duckdb.Error, OSError) as exc:
            if self._con is not None:
                with contextlib.suppress(duckdb.Error):
                    self._con.execute("ROLLBACK")
            raise self._fail("correlation update", exc) from exc
        finally:
            self._changed()

    def _update_groups(self, groups: dict[str, str], span: tuple[datetime, datetime]) -> None:
        """Give stored events (that still have none) their correlation group, in one update
        of the rows whose timestamp is in span (theirs are), and mark them for the Parquet
        export to rewrite (see ExportMixin.export_parquet); in the caller's transaction, so a
        row never has a new group without its Parquet copy marked stale."""
        con = self.con
        con.register(
            "_groups",
            pa.table(
                {
                    "event_id": pa.array(list(groups), pa.string()),
                    "group_id": pa.array(list(groups.values()), pa.string()),
                }
            ),
        )
        try:
            con.execute(
                "UPDATE events SET correlation_group_id = _groups.group_id FROM _groups "
                "WHERE events.event_id = _groups.event_id "
                'AND events."timestamp" BETWEEN ? AND ? '
                "AND events.correlation_group_id IS NULL",
                list(span),
            ).fetchall()
            con.execute(
                "INSERT INTO parquet_stale SELECT event_id FROM _groups ON CONFLICT DO NOTHING"
            ).fetchall()
        finally:
            if self._con is not None:
                with contextlib.suppress(duckdb.Error):  # never hides the error raised above
                    self._con.unregister("_groups")

    def _prune_starts(self, lo: int, hi: int, window: int) -> None:
        horizon = max(window * 2, HORIZON_US)
        self._starts.keep(lo - horizon, hi + horizon)

    def _with_group(self, ev: Event) -> Event:
        """The event with the group remembered for its (camera, start), if it has none yet."""
        if ev.correlation_group_id is not None:
            return ev
        group = self._starts.group_of(ev.camera_id, micros(ev.timestamp))
        return ev if group is None else ev.model_copy(update={"correlation_group_id": group})


def _spans(stamps: list[int], window: int) -> list[tuple[int, int]]:
    """The union of [ts - window, ts + window] over stamps, as disjoint spans in order; at
    most MAX_SPANS (the narrowest gaps closed first)."""
    spans: list[tuple[int, int]] = []
    for ts in sorted(stamps):
        if spans and ts - window <= spans[-1][1]:
            spans[-1] = (spans[-1][0], ts + window)
        else:
            spans.append((ts - window, ts + window))
    if len(spans) > MAX_SPANS:
        gaps = sorted(range(1, len(spans)), key=lambda i: spans[i][0] - spans[i - 1][1])
        close = set(gaps[: len(spans) - MAX_SPANS])
        merged = spans[:1]
        for i in range(1, len(spans)):
            if i in close:
                merged[-1] = (merged[-1][0], spans[i][1])
            else:
                merged.append(spans[i])
        spans = merged
    return spans


def _near_stored(camera_id: str, ts: int, window: int, stored: _Stored) -> list[list[Any]]:
    """Stored rows of other cameras starting within window of ts, in start order."""
    keys, rows = stored
    first, last = between(keys, ts - window, ts + window)
    return [row for row in rows[first:last] if row[3] != camera_id]
