"""Shared field checks for the config models: custom errors, topic, path and URL validation.

Every check reports through `_invalid` (a `config_invalid` pydantic error whose message never
echoes the input value), so `pipelines.config.loading` can map it to a `FILE:LINE:` error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationInfo
from pydantic_core import PydanticCustomError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _invalid(message: str, *at: str | int) -> PydanticCustomError:
    """A validation error with our own message, optionally located below the failing model."""
    return PydanticCustomError("config_invalid", "{message}", {"message": message, "at": at})


def _short_repr(value: str, limit: int = 40) -> str:
    """repr() of a possibly hostile string, truncated: never shows control characters raw."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


def _empty_to_none(value: Any) -> Any:
    return None if isinstance(value, str | SecretStr) and not str(_secret(value)) else value


def _secret(value: Any) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


MAX_TOPIC_BYTES = 1024


def check_topic_prefix(prefix: object, what: str = "topic prefix") -> str:
    """The prefix unchanged when it is a valid, wildcard-free MQTT topic prefix, else an error.

    The one rule set for topic prefixes: config load and `pipelines.mqtt.topics` both use it.
    The error is a `config_invalid` pydantic error (a ValueError) that never echoes the value
    (it may come from the environment).
    """
    if not isinstance(prefix, str) or not prefix:
        raise _invalid(f"invalid {what}: must be a non-empty string")
    problems = []
    if "+" in prefix or "#" in prefix:
        problems.append("must not contain the MQTT wildcards '+' or '#'")
    if _CONTROL.search(prefix):
        problems.append("must not contain NUL or control characters")
    if prefix.startswith("$"):
        problems.append("must not start with '$' (reserved for broker topics like $SYS)")
    if prefix.startswith("/") or prefix.endswith("/"):
        problems.append("must not start or end with '/'")
    if "//" in prefix:
        problems.append("must not contain an empty level ('//')")
    if len(prefix.encode("utf-8")) > MAX_TOPIC_BYTES:
        problems.append(f"must be at most {MAX_TOPIC_BYTES} bytes (UTF-8)")
    if problems:
        raise _invalid(f"invalid {what}: " + "; ".join(problems))
    return prefix


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    value = value.expanduser()
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        value = Path(os.path.normpath(Path(base) / value))
    return value


def _check_base_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not re.match(r"^https?://[^\s/]+", value) or _CONTROL.search(value):
        raise _invalid("base_url must be an http:// or https:// URL")
    return value.rstrip("/")
