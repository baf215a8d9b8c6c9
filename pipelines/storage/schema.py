"""Event table layout: column order, the Arrow schema, DuckDB migrations, row conversion."""

from __future__ import annotations

import logging
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.events import Event

logger = logging.getLogger(__name__)

# Event fields in column order (the model is the one source); Parquet holds these plus stored_at.
EVENT_COLUMNS: tuple[str, ...] = tuple(Event.model_fields)
_TS = pa.timestamp("us", tz="UTC")
ARROW_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("event_id", pa.string()),
        ("camera_id", pa.string()),
        ("camera_name", pa.string()),
        ("description", pa.string()),
        ("objects_detected", pa.list_(pa.string())),
        ("confidence", pa.int16()),
        ("source_type", pa.string()),
        ("timestamp", _TS),
        ("smart_detection_type", pa.string()),
        ("is_doorbell_ring", pa.bool_()),
        ("provider_used", pa.string()),
        ("analysis_mode", pa.string()),
        ("ai_confidence", pa.int16()),
        ("correlation_group_id", pa.string()),
        ("ended_at", _TS),
        ("frame_count", pa.int32()),
        ("merged_motion", pa.int32()),
        ("vlm_latency_ms", pa.float64()),
        ("media_offset_s", pa.float64()),
        ("zones", pa.list_(pa.string())),
        ("reused_from", pa.string()),
        ("filtered", pa.bool_()),
        ("confidence_source", pa.string()),
        ("throttled", pa.bool_()),
        ("frames_from", pa.string()),
        ("stored_at", _TS),
        ("published_at", _TS),
    ]
)
_SELECT_EVENT = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)

# Forward-only migrations: (version, statements). Never edit a shipped entry; append a new one.
# A column added later lands at the table's end: inserts name their columns (BY NAME), and a
# new Event field goes into ARROW_SCHEMA in model order.
MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            """CREATE TABLE IF NOT EXISTS events (
                seq BIGINT NOT NULL,
                event_id VARCHAR PRIMARY KEY,
                camera_id VARCHAR NOT NULL,
                camera_name VARCHAR NOT NULL,
                description VARCHAR NOT NULL,
                objects_detected VARCHAR[] NOT NULL,
                confidence SMALLINT NOT NULL,
                source_type VARCHAR NOT NULL,
                "timestamp" TIMESTAMPTZ NOT NULL,
                smart_detection_type VARCHAR,
                is_doorbell_ring BOOLEAN,
                provider_used VARCHAR,
                analysis_mode VARCHAR,
                ai_confidence SMALLINT,
                correlation_group_id VARCHAR,
                ended_at TIMESTAMPTZ,
                frame_count INTEGER NOT NULL,
                merged_motion INTEGER NOT NULL,
                vlm_latency_ms DOUBLE,
                stored_at TIMESTAMPTZ NOT NULL,
                published_at TIMESTAMPTZ
            )""",
            "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
        ),
    ),
    (2, ("ALTER TABLE events ADD COLUMN IF NOT EXISTS media_offset_s DOUBLE",)),
    # exported rows whose correlation group changed since: their Parquet files are rewritten
    (3, ("CREATE TABLE IF NOT EXISTS parquet_stale (event_id VARCHAR PRIMARY KEY)",)),
    # noise control (issue 13): zones touched, reused descriptions, object filter, confidence
    (
        4,
        (
            "ALTER TABLE events ADD COLUMN IF NOT EXISTS zones VARCHAR[]",
            "ALTER TABLE events ADD COLUMN IF NOT EXISTS reused_from VARCHAR",
            "ALTER TABLE events ADD COLUMN IF NOT EXISTS filtered BOOLEAN DEFAULT false",
            "ALTER TABLE events ADD COLUMN IF NOT EXISTS confidence_source VARCHAR",
        ),
    ),
    # issue 22: an event over a VLM budget says so (the summary counts it)
    (5, ("ALTER TABLE events ADD COLUMN IF NOT EXISTS throttled BOOLEAN DEFAULT false",)),
    # issue 18: a camera with a detect_source says which stream an event's frames came from
    (6, ("ALTER TABLE events ADD COLUMN IF NOT EXISTS frames_from VARCHAR",)),
]


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version of a database that has a schema_version table (0: none applied)."""
    row = _first(con.execute("SELECT max(version) FROM schema_version"))
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Apply the MIGRATIONS newer than the database's version, each in its own transaction."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    current = schema_version(con)
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in statements:
                con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?)", [version])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        logger.info("storage schema migrated to version %d", version)


def _first(result: duckdb.DuckDBPyConnection) -> Any:
    """First row of a result (or None), consuming it: DuckDB 2 refuses work on a half-read one."""
    rows = result.fetchall()
    return rows[0] if rows else None


def _row_to_event(row: tuple[Any, ...]) -> Event:
    data = dict(zip(EVENT_COLUMNS, row, strict=True))
    data["objects_detected"] = tuple(data["objects_detected"] or ())
    return Event.model_validate({k: v for k, v in data.items() if v is not None})
