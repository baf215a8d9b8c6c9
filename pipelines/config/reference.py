"""The config reference (`docs/config.md`), rendered from the models so it cannot drift.

`python -m pipelines.config.reference > docs/config.md` rewrites it; a unit test checks that the
committed file equals what the models render.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipelines.config.root import Config

_HEADER = """# Configuration reference

Generated from the pydantic models in `pipelines/config/` (one module per section) by
`python -m pipelines.config.reference > docs/config.md`; a test fails when this file and the
models disagree. Every section forbids unknown keys; `${VAR}` and `${VAR:-default}` are
substituted before validation (the way to pass secrets); with `VAR` unset and `VAR_FILE` set,
the value is read from that file (a mounted Kubernetes or Docker secret: it never sits in the
process environment). Errors name the file, line and field. `configs/example.yaml` shows a full
install with comments.
"""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The config model inside an annotation (`X`, `X | None`, `list[X]`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) if isinstance(a, str) else str(a) for a in annotation.__args__)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        model = _model_of(info.annotation)
        return "see below" if model is not None else "`[]`"
    if info.default is PydanticUndefined:
        return "required"
    value = info.default
    if value is None:
        return "`null`"
    if value == "":
        return '`""`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
        for attr, word in (("min_length", "min length"), ("max_length", "max length")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{word} {value}")
    return ", ".join(parts)


def _sections(model: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    yield path, model
    for name, info in model.model_fields.items():
        child = _model_of(info.annotation)
        if child is not None and child is not model:
            suffix = "[]" if typing.get_origin(info.annotation) is list else ""
            yield from _sections(child, f"{path}.{name}{suffix}" if path else f"{name}{suffix}")


def field_paths(model: type[BaseModel] = Config, path: str = "") -> list[str]:
    """Every key of the config as a dotted path (`cameras[].motion.threshold`)."""
    paths = []
    for section, sub in _sections(model, path):
        for name in sub.model_fields:
            paths.append(f"{section}.{name}" if section else name)
    return paths


def render() -> str:
    """The whole reference as Markdown."""
    lines = [_HEADER]
    for section, model in _sections(Config, ""):
        title = section or "top level"
        lines.append(f"## `{title}`\n")
        doc = (model.__doc__ or "").strip().splitlines()
        if doc:
            lines.append(doc[0] + "\n")
        lines.append("| key | type | default | bounds | meaning |")
        lines.append("|---|---|---|---|---|")
        for name, info in model.model_fields.items():
            text = (info.description or "").replace("|", "\\|").replace("\n", " ")
            row = [f"`{name}`", _type_name(info.annotation), _default(info), _bounds(info), text]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
