"""API key checks and signed thumbnail tokens.

Tokens are never signed with the API key itself: each kind of token has its own key, derived
from the API key with HMAC-SHA256 and a purpose label (HKDF-Expand with one block), so a
token, its MAC or a leak of one signing key says nothing about the bearer key or another kind.

* event thumbnail token `<expiry>.<mac>`: one event's thumbnail until expiry (the
  `thumbnail_url` of an event payload; `api.thumbnail_url_ttl_s`);
* camera thumbnail token `<mac>`: the thumbnails of one camera, without expiry. Only the
  retained `last_event` of that camera carries it, so the image in Home Assistant never turns
  into a broken link; changing `api.api_key` revokes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from functools import lru_cache

THUMBNAIL_PURPOSE = "liveobject thumbnail-token v1"
CAMERA_THUMBNAIL_PURPOSE = "liveobject camera-thumbnail-token v1"


def keys_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison of an offered key with the configured one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@lru_cache(maxsize=16)
def derive_key(api_key: str, purpose: str) -> bytes:
    """A signing key for one purpose: HKDF-Expand(PRK=api_key, info=purpose), 32 bytes."""
    return hmac.new(
        api_key.encode("utf-8"), purpose.encode("utf-8") + b"\x01", hashlib.sha256
    ).digest()


def _mac(message: str, api_key: str, purpose: str) -> str:
    digest = hmac.new(derive_key(api_key, purpose), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii").rstrip("=")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("ascii", "replace"), expected.encode("ascii"))


def sign_thumbnail_token(event_id: str, key: str, ttl_s: int, now: float | None = None) -> str:
    """A token `<expiry>.<mac>` granting access to one event's thumbnail until expiry."""
    expires = int((time.time() if now is None else now) + ttl_s)
    return f"{expires}.{_mac(f'thumb:{event_id}:{expires}', key, THUMBNAIL_PURPOSE)}"


def check_thumbnail_token(
    token: str, event_id: str, key: str, now: float | None = None
) -> str | None:
    """None when the token is valid for event_id, else the reason ('expired' or 'invalid')."""
    expires_text, _, mac = token.partition(".")
    if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12 or not mac:
        return "invalid"
    expires = int(expires_text)
    if not _same(mac, _mac(f"thumb:{event_id}:{expires}", key, THUMBNAIL_PURPOSE)):
        return "invalid"
    if expires < (time.time() if now is None else now):
        return "expired"
    return None


def sign_camera_token(camera_id: str, event_id: str, key: str) -> str:
    """A token (no expiry) for one event's thumbnail through its camera's route (the retained
    last_event URL): it opens that image only, not the camera's others."""
    return _mac(f"camera:{camera_id}:{event_id}", key, CAMERA_THUMBNAIL_PURPOSE)


def check_camera_token(token: str, camera_id: str, event_id: str, key: str) -> bool:
    """Whether token is the camera-route token of that camera's event."""
    return _same(token, sign_camera_token(camera_id, event_id, key))
