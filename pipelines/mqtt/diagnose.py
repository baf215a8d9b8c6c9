"""Why the broker cannot be reached, in words an operator can act on.

paho's connect-failure callback carries no exception, and a refused CONNACK carries only a
reason code. `connect_failure` retraces the connection the client makes (name lookup, TCP, TLS
with the same trust settings) and names the first step that fails; `refusal` turns a CONNACK
reason code into the same kind of sentence. Neither text holds a secret: they name the broker's
host and port and the config keys to check, never the username or password.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from pipelines.config import TLSConfig

PROBE_TIMEOUT_S = 5.0

# CONNACK reason codes (MQTT 5 values; 3.1.1's return codes 4 and 5 map onto the same words)
_CREDENTIALS = {134, 4}  # bad user name or password
_NOT_AUTHORISED = {135, 5}
_UNAVAILABLE = {136, 3}


def connect_failure(
    host: str, port: int, tls: TLSConfig | None = None, timeout_s: float = PROBE_TIMEOUT_S
) -> str:
    """The first step of connecting to host:port that fails, as a sentence ("" if none does)."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return f"name not resolved: {host} (check mqtt.host)"
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port}: no broker listens there (check mqtt.port)"
    except TimeoutError:
        return (
            f"no answer from {host}:{port} within {timeout_s:g} s (a firewall, or the wrong host)"
        )
    except OSError as exc:
        return f"cannot reach {host}:{port}: {exc.strerror or type(exc).__name__}"
    with sock:
        if tls is None or not tls.enabled:
            return ""
        try:
            context = _tls_context(tls)
            with context.wrap_socket(sock, server_hostname=host):
                return ""
        except ssl.SSLCertVerificationError as exc:
            why = exc.verify_message or exc.reason or "untrusted"
            return (
                f"certificate verification failed for {host}: {why} (check mqtt.tls.ca_certs; "
                "the connection is not downgraded)"
            )
        except ssl.SSLError as exc:
            return f"TLS handshake with {host}:{port} failed: {exc.reason or type(exc).__name__}"
        except (OSError, ValueError) as exc:
            return f"TLS with {host}:{port} failed: {exc}"


def _tls_context(tls: TLSConfig) -> ssl.SSLContext:
    """The trust settings paho's `tls_set` uses for this config."""
    context = ssl.create_default_context(cafile=str(tls.ca_certs) if tls.ca_certs else None)
    if tls.certfile:
        context.load_cert_chain(str(tls.certfile), str(tls.keyfile) if tls.keyfile else None)
    if tls.insecure:  # paho's tls_insecure_set: the host name is not checked, the chain still is
        context.check_hostname = False
    return context


def refusal(reason_code: Any, broker: str, *, with_password: bool) -> str:
    """A CONNACK refusal as a sentence naming what to check. Brokers answer a wrong password
    with either code (mosquitto: "not authorised"), so both name the credentials when the
    config has them."""
    value = getattr(reason_code, "value", reason_code)
    if value in _CREDENTIALS or (value in _NOT_AUTHORISED and with_password):
        return (
            f"not authorised: {broker} refused the username or password "
            "(check mqtt.username and mqtt.password, and the broker's users)"
        )
    if value in _NOT_AUTHORISED:
        return (
            f"not authorised: {broker} refused a client without a password "
            "(set mqtt.username and mqtt.password)"
        )
    if value in _UNAVAILABLE:
        return f"{broker} is unavailable: it refused new connections for now"
    return f"{broker} refused the connection: {reason_code}"


_KINDS = (
    "certificate verification failed",
    "TLS handshake",
    "not authorised",
    "connection refused",
    "name not resolved",
    "no answer",
    "disconnected",
)


def public_reason(reason: str | None) -> str:
    """The kind of a reason without the broker's address (for callers without the API key)."""
    for kind in _KINDS:
        if reason and kind in reason:
            return f"broker not connected: {kind.lower()}"
    return "broker not connected"
