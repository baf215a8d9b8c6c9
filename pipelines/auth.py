"""API key checks and signed thumbnail tokens (HMAC of event id + expiry)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def keys_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison of an offered key with the configured one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _mac(event_id: str, expires: int, key: str) -> str:
    digest = hmac.new(
        key.encode("utf-8"), f"thumb:{event_id}:{expires}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii").rstrip("=")


def sign_thumbnail_token(event_id: str, key: str, ttl_s: int, now: float | None = None) -> str:
    """A token `<expiry>.<mac>` granting access to one event's thumbnail until expiry."""
    expires = int((time.time() if now is None else now) + ttl_s)
    return f"{expires}.{_mac(event_id, expires, key)}"


def check_thumbnail_token(
    token: str, event_id: str, key: str, now: float | None = None
) -> str | None:
    """None when the token is valid for event_id, else the reason ('expired' or 'invalid')."""
    expires_text, _, mac = token.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12 or not mac:
        return "invalid"
    expires = int(expires_text)
    if not hmac.compare_digest(
        mac.encode("ascii", "replace"), _mac(event_id, expires, key).encode()
    ):
        return "invalid"
    if expires < (time.time() if now is None else now):
        return "expired"
    return None
