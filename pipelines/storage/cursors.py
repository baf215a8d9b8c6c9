"""Event ids and keyset cursors: uuid validation, cursor encode/decode."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta

from pipelines.events import as_utc

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_event_id(value: object) -> bool:
    """True for a canonical lowercase uuid string (the only form used for file names)."""
    return isinstance(value, str) and UUID_RE.fullmatch(value) is not None


def encode_cursor(ts: datetime, event_id: str) -> str:
    """Opaque keyset cursor for the position after (ts, event_id) in newest-first order."""
    micros = _micros(ts)
    raw = f"{micros}|{event_id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of encode_cursor; ValueError on anything malformed."""
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 200:
        raise ValueError("malformed cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("malformed cursor") from exc
    micros_text, _, event_id = raw.partition("|")
    if not re.fullmatch(r"-?\d{1,19}", micros_text) or not is_event_id(event_id):
        raise ValueError("malformed cursor")
    try:
        ts = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros_text))
    except OverflowError as exc:
        raise ValueError("malformed cursor") from exc
    return ts, event_id


def _micros(ts: datetime) -> int:
    delta = as_utc(ts) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
