"""Config loading: YAML composed with line numbers, ${ENV} expansion, file:line errors.

`load_config` composes the YAML node tree (so every key keeps its line number), substitutes
`${VAR}` / `${VAR:-default}` from the environment into string values (VAR unset but
`VAR_FILE` set: the value is read from that file, as a mounted secret), validates with the
models (`pipelines.config.root.Config` and its sections) and raises `ConfigError` whose lines read
`FILE:LINE: field.path: message`.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipelines.config.root import Config
from pipelines.config.validators import _CONTROL, _short_repr
from pipelines.redact import redact


class ConfigError(Exception):
    """Invalid configuration; `.errors` holds lines `FILE:LINE: field.path: message`."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


_ENV_RE = re.compile(r"\$(\$?)\{([^}]*)\}")
_ENV_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)
_MAX_NODES = 100_000
_MAX_DEPTH = 64
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"

Loc = tuple[str | int, ...]


MAX_SECRET_FILE = 64 * 1024


def _secret_file(name: str, path: str, problems: list[str]) -> str | None:
    """`VAR_FILE` names a file holding VAR's value (a mounted Kubernetes or Docker secret):
    its text without the trailing newline; None (and a problem naming VAR_FILE, never the
    value) when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        problems.append(f"{name}_FILE cannot be read ({exc.strerror or type(exc).__name__})")
        return None
    if len(data) > MAX_SECRET_FILE:
        problems.append(f"{name}_FILE is larger than {MAX_SECRET_FILE} bytes")
        return None
    try:
        return data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        problems.append(f"{name}_FILE is not UTF-8 text")
        return None


def _substitute(value: str, env: Mapping[str, str]) -> tuple[str, list[str], list[str]]:
    """Expand ${VAR} / ${VAR:-default}; returns (text, values used, problems)."""
    used: list[str] = []
    problems: list[str] = []

    def one(match: re.Match[str]) -> str:
        if match.group(1):  # "$${...}" is a literal "${...}"
            return match.group(0)[1:]
        spec = _ENV_NAME.match(match.group(2))
        if spec is None:
            problems.append(
                f"malformed reference {_short_repr(match.group(0), 60)}: "
                "use ${VAR} or ${VAR:-default}"
            )
            return ""
        name, default = spec.group(1), spec.group(2)
        found = env.get(name)
        if found is None and env.get(name + "_FILE"):
            found = _secret_file(name, env[name + "_FILE"], problems)
        if found is not None and (found != "" or default is None):
            used.append(found)
            return found
        if default is not None:
            return default
        problems.append(f"environment variable {name} is not set")
        return ""

    return _ENV_RE.sub(one, value), used, problems


def expand_env(
    value: str, env: Mapping[str, str] | None = None, *, location: str = "<string>"
) -> str:
    """Substitute `${VAR}` and `${VAR:-default}` in value (ConfigError naming any missing one)."""
    text, _, problems = _substitute(value, os.environ if env is None else env)
    if problems:
        raise ConfigError([f"{location}: {problem}" for problem in problems])
    return text


def _clean(text: str) -> str:
    """Escape control characters so an error line is always one printable line."""
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text)


def _fmt_path(path: Loc) -> str:
    if not path:
        return "(root)"
    parts = []
    for part in path:
        text = str(part)
        ok = isinstance(part, int) or re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text)
        parts.append(text if ok else _short_repr(text))
    return ".".join(parts)


class _Builder:
    """Turns a composed YAML node tree into plain data, recording each key path's line."""

    def __init__(self, filename: str, env: Mapping[str, str]) -> None:
        self.filename = filename
        self.env = env
        self.lines: dict[Loc, int] = {}
        self.errors: list[str] = []
        self.env_values: set[str] = set()
        self._nodes = 0
        self._loader = yaml.SafeLoader("")

    def error(self, line: int, path: Loc, message: str) -> None:
        self.errors.append(f"{self.filename}:{line}: {_fmt_path(path)}: {_clean(message)}")

    def build(self, node: yaml.Node, path: Loc, line: int) -> Any:
        self.lines.setdefault(path, line)
        self._nodes += 1
        if self._nodes > _MAX_NODES or len(path) > _MAX_DEPTH:
            where = _fmt_path(path[:3]) + ("..." if len(path) > 3 else "")
            raise ConfigError(
                [f"{self.filename}:{line}: {where}: too large or too deeply nested (alias loop?)"]
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                self.error(line, path, "unsupported YAML tag")
                return None
            items = []
            for index, item in enumerate(node.value):
                item_line = item.start_mark.line + 1
                self.lines[(*path, index)] = item_line
                items.append(self.build(item, (*path, index), item_line))
            return items
        return self._scalar(node, path, line)

    def _mapping(self, node: yaml.MappingNode, path: Loc) -> Any:
        if node.tag != _MAP_TAG:
            self.error(node.start_mark.line + 1, path, "unsupported YAML tag")
            return None
        own = {id(key) for key, _ in node.value if key.tag != _MERGE_TAG}
        try:
            self._loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            self.error(mark.line + 1, path, f"bad merge key: {exc.problem}")
            return None
        result: dict[str, Any] = {}
        own_keys: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(key_line, path, "keys must be plain strings")
                continue
            key = str(self._construct(key_node, path, key_line))
            if id(key_node) in own:
                if key in own_keys:
                    self.error(
                        key_line, (*path, key), f"duplicate key (first at line {own_keys[key]})"
                    )
                    continue
                own_keys[key] = key_line
            if key in result:  # an own key overriding a merged one: forget the old lines
                prefix = (*path, key)
                for sub in [p for p in self.lines if p[: len(prefix)] == prefix]:
                    del self.lines[sub]
            self.lines[(*path, key)] = key_line
            result[key] = self.build(value_node, (*path, key), key_line)
        return result

    def _construct(self, node: yaml.ScalarNode, path: Loc, line: int) -> Any:
        try:
            return self._loader.construct_object(node)
        except yaml.YAMLError:
            self.error(line, path, "unsupported YAML tag or value")
            return None

    def _scalar(self, node: yaml.Node, path: Loc, line: int) -> Any:
        assert isinstance(node, yaml.ScalarNode)
        value = self._construct(node, path, line)
        if isinstance(value, str) and node.tag == _STR_TAG and "$" in value:
            value, used, problems = _substitute(value, self.env)
            self.env_values.update(used)
            for problem in problems:
                self.error(line, path, problem)
        return value


def _model_at(path: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at path (for unknown-key hints)."""
    model: type[BaseModel] | None = Config
    for part in path:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _find_model(field.annotation) if field is not None else None
    return model


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _find_model(arg)
            if found is not None:
                return found
    return None


def _error_path(loc: Loc, data: Any, keep_last: bool) -> Loc:
    """The data path of a pydantic loc, dropping union/validator tags pydantic inserts."""
    out: list[str | int] = []
    current = data
    for index, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        elif not (keep_last and index == len(loc) - 1):
            continue
        out.append(part)
    return tuple(out)


def _message(err: Any, path: Loc) -> str:
    kind = err["type"]
    if kind == "config_invalid":
        return str(err["ctx"]["message"])
    if kind == "missing":
        return "value missing" if path and isinstance(path[-1], int) else "required key is missing"
    if kind == "extra_forbidden":
        model = _model_at(path[:-1])
        if model is None:
            return "unknown key"
        allowed = sorted(model.model_fields)
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key{hint}; allowed keys: {', '.join(allowed)}"
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _validation_errors(
    exc: ValidationError, data: Any, builder: _Builder, filename: str
) -> list[str]:
    secrets = sorted((v for v in builder.env_values if len(v) >= 3), key=len, reverse=True)
    lines: list[tuple[int, str]] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=True):
        kind = err["type"]
        path = _error_path(tuple(err["loc"]), data, keep_last=kind == "missing")
        if kind == "config_invalid":
            path = (*path, *err["ctx"].get("at", ()))
        line = next(
            builder.lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in builder.lines
        )
        message = redact(_message(err, path), secrets)
        text = f"{filename}:{line}: {_fmt_path(path)}: {_clean(message)}"
        if (line, text) not in lines:
            lines.append((line, text))
    return [text for _, text in sorted(lines, key=lambda item: item[0])]


def parse_config_text(
    text: str,
    filename: str = "<string>",
    env: Mapping[str, str] | None = None,
    *,
    base_dir: str | Path | None = None,
) -> Config:
    """Parse and validate YAML text; relative paths resolve against base_dir (default: cwd)."""
    shown = _clean(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([f"{shown}:{line}: (yaml): {_clean(str(exc.problem))}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{shown}:1: (yaml): {_clean(type(exc).__name__)}"]) from None
    builder = _Builder(shown, os.environ if env is None else env)
    if root is None:
        raise ConfigError([f"{shown}:1: (root): the config is empty"])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError([f"{shown}:{root.start_mark.line + 1}: (root): expected a mapping"])
    data = builder.build(root, (), root.start_mark.line + 1)
    if builder.errors:
        raise ConfigError(builder.errors)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        return Config.model_validate(data, context={"base_dir": base.absolute()})
    except ValidationError as exc:
        raise ConfigError(_validation_errors(exc, data, builder, shown)) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate a YAML config file (env: variables for ${VAR}, default os.environ)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{_clean(str(path))}: cannot read config: {reason}"]) from None
    return parse_config_text(text, str(path), env, base_dir=path.absolute().parent)


def check_config_file(path: str | Path) -> tuple[bool, str]:
    """Validate a config file for `liveobject config check`: (ok, text to print)."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return False, str(exc)
    cameras = len(config.cameras)
    disabled = sum(not camera.enabled for camera in config.cameras)
    summary = f"ok: {cameras} camera{'s' if cameras != 1 else ''}"
    if disabled:
        summary += f" ({disabled} disabled)"
    summary += f", vlm {config.vlm.backend}:{config.vlm.model}"
    if config.vlm.fallback:
        summary += f" (+{len(config.vlm.fallback)} fallback)"
    mqtt = config.mqtt
    summary += f", mqtt {mqtt.host}:{mqtt.port}" if mqtt.enabled else ", mqtt disabled"
    return True, summary
