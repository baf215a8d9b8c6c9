"""What every request passes before a route: a Host allowlist, a cross-site check on state changes,
and headers that keep browsers from sniffing or caching API answers.

- **Host allowlist** (DNS rebinding): a page on a name the attacker controls, re-pointed at this
  machine, would send its own name as `Host`. Accepted: loopback names, the host of `api.base_url`
  (and of env `API_BASE_URL`), the bound `api.host` when it is a name or an address, and
  `api.allowed_hosts`. Anything else: 421 with a JSON error.
- **Cross-site state changes** (a page ringing the doorbell with a simple form POST): a POST, PUT,
  PATCH or DELETE whose `Sec-Fetch-Site` says `cross-site`/`same-site`, or whose `Origin` is not an
  allowed host, is refused with 403. Clients that are not browsers send neither and pass.
- **Headers**: `X-Content-Type-Options: nosniff` on every answer; `Cache-Control: no-store` on JSON
  answers that do not set their own caching.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware), so live streams pass untouched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.config import Config

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TRUSTED_FETCH_SITES = frozenset({"same-origin", "none"})


def host_name(value: str) -> str:
    """The host part of a `Host` header or URL authority, lower case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        return value.split(":", 1)[0]
    return value


def allowed_hosts(config: Config) -> frozenset[str]:
    """The names a request's `Host` (and a state change's `Origin`) may carry."""
    api = config.api
    names = set(LOOPBACK_HOSTS)
    for url in (api.base_url, api.effective_base_url()):
        name = urlsplit(url).hostname
        if name:
            names.add(name.lower())
    if api.host not in WILDCARD_HOSTS:
        names.add(host_name(api.host))
    names.update(name.lower() for name in api.allowed_hosts)
    return frozenset(names)


class RequestGuard:
    """The ASGI middleware described above."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = frozenset(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if host_name(headers.get("host", "")) not in self.hosts:
            await _refuse(send, 421, "unknown host: use the address in api.base_url")
            return
        if scope["method"] in STATE_CHANGING and self._cross_site(headers):
            await _refuse(send, 403, "cross-site request refused")
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower(): v for k, v in message.get("headers", [])}
                extra = (
                    []
                    if b"x-content-type-options" in names
                    else [(b"x-content-type-options", b"nosniff")]
                )
                json_body = names.get(b"content-type", b"").startswith(b"application/json")
                if json_body and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _cross_site(self, headers: dict[str, str]) -> bool:
        site = headers.get("sec-fetch-site")
        if site is not None and site.strip().lower() not in TRUSTED_FETCH_SITES:
            return True
        origin = headers.get("origin")
        if origin is None:
            return False
        name = urlsplit(origin.strip()).hostname
        return name is None or name.lower() not in self.hosts  # "null" included


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff"),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
