"""Redaction of credentials in URLs, error messages and log lines.

Used wherever a camera source URL, a broker error or an exception text could carry a password:
`redact_url` hides URL userinfo passwords and secret-looking query parameters, `redact` also
replaces every known secret value literally (raw and percent-encoded), and `url_password` is the
one place a URL's password is read out of its userinfo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

__all__ = ["MASK", "redact", "redact_url", "url_password"]

MASK = "***"

# scheme://userinfo@ — userinfo runs to the last "@" before the path, query or fragment, so a
# password that contains a raw "@" is still hidden entirely.
_USERINFO_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#]*)@")
_SECRET_PARAM_WORDS = (
    "pass",
    "pwd",
    "token",
    "key",
    "secret",
    "auth",
    "sig",
    "cred",
    "session",
)
_QUERY_RE = re.compile(
    r"(?P<lead>[?&;])(?P<name>[^=&;#\s?]*(?:"
    + "|".join(_SECRET_PARAM_WORDS)
    + r")[^=&;#\s?]*)=(?P<value>[^&;#\s]*)",
    re.IGNORECASE,
)


def _userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    if not userinfo:  # udp://@239.0.0.1:1234 (multicast) has nothing to hide
        return match.group(0)
    if ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        return f"{match.group('scheme')}{user}:{MASK}@"
    # A lone user part is often a token (https://TOKEN@host): hide it too.
    return f"{match.group('scheme')}{MASK}@"


def url_password(url: str) -> list[str]:
    """The password in a URL's userinfo, raw and percent-decoded (longest first); [] if none."""
    match = _USERINFO_RE.match(url)
    if match is None or ":" not in match.group("userinfo"):
        return []
    password = match.group("userinfo").split(":", 1)[1]
    if not password:
        return []
    return sorted({password, unquote(password)}, key=len, reverse=True)


def _query(match: re.Match[str]) -> str:
    if not match.group("value"):
        return match.group(0)
    return f"{match.group('lead')}{match.group('name')}={MASK}"


def redact_url(text: str) -> str:
    """Hide URL passwords (`user:***@`) and secret-looking query values (`token=***`) in text."""
    if not text:
        return text
    text = _USERINFO_RE.sub(_userinfo, text)
    return _QUERY_RE.sub(_query, text)


def _secret_text(secret: Any) -> str:
    getter = getattr(secret, "get_secret_value", None)
    value = getter() if callable(getter) else secret
    return value if isinstance(value, str) else ""


def redact(text: str, secrets: Iterable[Any] = ()) -> str:
    """`redact_url(text)` plus every known secret value (str or SecretStr) replaced by `***`."""
    if not text:
        return text
    forms: set[str] = set()
    for secret in secrets:
        value = _secret_text(secret)
        if not value:
            continue
        forms.add(value)
        forms.add(quote(value, safe=""))
        forms.add(quote(value, safe="/:"))
        escaped = repr(value)[1:-1]
        forms.add(escaped)
    # Longest first so that a secret containing another one is hidden whole.
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, MASK)
    return redact_url(text)
