"""Event ids and keyset cursors: uuid validation, cursor encode/decode, and the integer
microseconds since the epoch a cursor carries (`micros`, `from_micros`; correlation compares
starts as them too)."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_event_id(value: object) -> bool:
    """True for a canonical lowercase uuid string (the only form used for file names)."""
    return isinstance(value, str) and UUID_RE.fullmatch(value) is not None


def encode_cursor(ts: datetime, event_id: str) -> str:
    """Opaque keyset cursor for the position after (ts, event_id) in newest-first order."""
    raw = f"{micros(ts)}|{event_id}".encode("ascii")
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
        ts = from_micros(int(micros_text))
    except OverflowError as exc:
        raise ValueError("malformed cursor") from exc
    return ts, event_id


def micros(ts: datetime) -> int:
    """An aware datetime as microseconds since the epoch (exact; a naive one is taken as UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - EPOCH) // _US


def from_micros(us: int) -> datetime:
    """The UTC datetime of microseconds since the epoch (OverflowError out of range)."""
    return EPOCH + timedelta(microseconds=us)
