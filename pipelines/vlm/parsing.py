"""Tolerant parsing of VLM output into description, objects and confidence.

Models are asked for one JSON object ``{"description", "objects", "confidence"}`` but small ones
wrap it in code fences, add prose, truncate it at ``max_new_tokens``, use single quotes, give
objects as one comma string or confidence as ``"85%"``, ``0.85`` or ``"high"``. Everything here
is best effort and never raises.

Confidence rule (docs/events.md): ``ai_confidence`` is only ever the model's own stated
confidence, when one was parsed (int 0-100). ``confidence`` is, in this order of preference:
the mean probability of the generated tokens when the backend exposes it (``token_confidence``,
see `pipelines.vlm.confidence`; source ``tokens`` or ``logprobs``), else the model's stated
value (source ``stated``), else a fixed default of ``DEFAULT_CONFIDENCE_WITH_OBJECTS`` (50) when
objects were found and ``DEFAULT_CONFIDENCE_NO_OBJECTS`` (30) when not (source ``default``).
The source is kept next to the number (`ParsedOutput.confidence_source`).
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

ConfidenceSource = Literal["tokens", "logprobs", "stated", "default", "none"]

MAX_DESCRIPTION_CHARS = 500
MAX_OBJECTS = 16
MAX_OBJECT_CHARS = 40
DEFAULT_CONFIDENCE_WITH_OBJECTS = 50
DEFAULT_CONFIDENCE_NO_OBJECTS = 30
# Model output is untrusted text (a sign held up to a camera can steer it): every step below is
# linear in a bounded input. Real answers are far shorter (max_new_tokens); past this, unread.
MAX_PARSE_CHARS = 16_384
MAX_NESTING = 32  # the answer is one flat object; deeper brackets are not it
MAX_CANDIDATES = 8  # `{` positions tried as the start of the answer before it counts as prose

_CATEGORY_WORDS: dict[str, list[str]] = {
    "person": (
        "person persons people man men woman women child children kid kids boy boys girl girls "
        "pedestrian pedestrians human humans someone somebody individual individuals adult "
        "adults baby toddler teenager courier mailman postman visitor visitors intruder guy "
        "driver drivers worker workers cyclist jogger runner neighbor"
    ).split(),
    "vehicle": (
        "vehicle vehicles car cars truck trucks van vans bus buses motorcycle motorcycles "
        "motorbike bicycle bicycles bike bikes scooter suv pickup taxi trailer tractor sedan"
    ).split(),
    "package": "package packages parcel parcels box boxes delivery deliveries envelope".split(),
    "animal": (
        "animal animals dog dogs cat cats bird birds deer fox raccoon squirrel squirrels rabbit "
        "rabbits horse cow coyote bear pet pets puppy kitten skunk opossum possum"
    ).split(),
}
SYNONYMS: dict[str, str] = {w: cat for cat, words in _CATEGORY_WORDS.items() for w in words}

_CONFIDENCE_WORDS = {
    "very high": 95,
    "certain": 95,
    "high": 85,
    "medium": 60,
    "moderate": 60,
    "average": 50,
    "low": 30,
    "very low": 15,
    "none": 0,
}

_SPECIAL_TOKEN_RE = re.compile(
    r"<\|[^|<>]{1,40}\|>"
    r"|</?(?:s|pad|unk|image|end_of_utterance|fake_token_around_image|global-img|"
    r"row_\d+_col_\d+|eos|bos|endoftext)>",
    re.IGNORECASE,
)
_ASSISTANT_PREFIX_RE = re.compile(r"^\s*(?:assistant|answer|output)\s*:\s*", re.IGNORECASE)
_FENCE_RE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_WORD_RE = re.compile(r"[a-z]+")
_NEGATIONS = {"no", "not", "without", "zero", "nor"}
_PERSON_AFTER_DELIVERY = {"person", "man", "driver", "guy", "worker", "woman", "courier"}


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    """What a model answer said: description, normalised objects, confidence 0-100 and where
    that confidence came from."""

    description: str
    objects: tuple[str, ...]
    confidence: int
    ai_confidence: int | None
    confidence_source: ConfidenceSource = "default"


def clean_text(text: str, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    """Text without special tokens, control characters or runs of whitespace, at most `limit`."""
    text = _SPECIAL_TOKEN_RE.sub(" ", (text or "")[:MAX_PARSE_CHARS])
    text = "".join(
        ch if not unicodedata.category(ch).startswith("C") else " "
        for ch in text.replace("\ufffd", " ")
    )
    text = " ".join(text.split())
    text = _ASSISTANT_PREFIX_RE.sub("", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if len(text) > limit:
        cut = text[: limit - 1]
        space = cut.rfind(" ")
        if space > limit // 2:
            cut = cut[:space]
        text = cut.rstrip(" ,;:") + "…"
    return text


def normalize_object(name: str) -> str | None:
    """Map an object name onto person/vehicle/package/animal, else a clean lowercase noun."""
    words = _WORD_RE.findall(name.lower().replace("_", " "))
    words = [w for w in words if w not in {"a", "an", "the", "some", "one", "two", "three"}]
    if not words:
        return None
    phrase = " ".join(words)
    if words[0] == "delivery" and len(words) > 1 and words[1] in _PERSON_AFTER_DELIVERY:
        return "person"
    for word in reversed(words):  # the head noun is usually last: "delivery truck" → truck
        if word in SYNONYMS:
            return SYNONYMS[word]
    return phrase[:MAX_OBJECT_CHARS] or None


def normalize_objects(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Normalised, deduplicated object names in first-seen order."""
    out: list[str] = []
    for name in names:
        norm = normalize_object(name)
        if norm and norm not in out:
            out.append(norm)
    return tuple(out[:MAX_OBJECTS])


def objects_from_text(text: str) -> tuple[str, ...]:
    """Categories named in free text (skipping simple negations like "no person")."""
    words = _WORD_RE.findall(text.lower())
    out: list[str] = []
    for i, word in enumerate(words):
        category = SYNONYMS.get(word)
        if category is None or category in out:
            continue
        if (
            word in {"delivery", "deliveries"}
            and words[i + 1 : i + 2]
            and (words[i + 1] in _PERSON_AFTER_DELIVERY)
        ):
            continue
        if any(w in _NEGATIONS for w in words[max(0, i - 2) : i]):
            continue
        out.append(category)
    return tuple(out)


def parse_confidence(value: Any) -> int | None:
    """Confidence as int 0-100 from 85, 0.85, "85%", "0.85" or "high"; None if unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in _CONFIDENCE_WORDS:
            return _CONFIDENCE_WORDS[text]
        match = re.search(r"-?\d+(?:\.\d+)?", text)
        if match is None:
            for word, score in sorted(_CONFIDENCE_WORDS.items(), key=lambda kv: -len(kv[0])):
                if word in text:
                    return score
            return None
        number = float(match.group())
        if "%" in text:
            return max(0, min(100, round(number)))
    else:
        return None
    if number != number:  # NaN
        return None
    if 0.0 <= number <= 1.0 and not (isinstance(value, int) and number == 1):
        number *= 100.0
    return max(0, min(100, round(number)))


def _as_description(value: Any) -> str:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list | tuple):
        return clean_text(" ".join(str(v) for v in value if isinstance(v, str | int | float)))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return clean_text(str(value))
    return ""


def _as_object_names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part for part in re.split(r"[,;/\n]|\band\b", value) if part.strip()]
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, list | tuple):
        names: list[str] = []
        for item in value:
            if isinstance(item, str):
                names.append(item)
            elif isinstance(item, dict):
                for key in ("name", "label", "object", "type", "class"):
                    if isinstance(item.get(key), str):
                        names.append(item[key])
                        break
        return names
    return []


def _close_string(buf: list[str], quote: str) -> str:
    """A JSON string literal: double-quoted content is kept as written, single-quoted is encoded."""
    return '"' + "".join(buf) + '"' if quote == '"' else json.dumps("".join(buf))


class _TooDeep(ValueError):
    """Brackets nested deeper than MAX_NESTING: not the answer's object."""


def _repair_json(fragment: str) -> tuple[str, bool]:
    """Turn `{...` into JSON text: single quotes → double, trailing commas dropped, and when the
    text was cut off, the open string and brackets closed. Returns (text, complete).

    Raises _TooDeep past MAX_NESTING open brackets."""
    out: list[str] = []
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    buf: list[str] = []  # the open string's content
    for ch in fragment:
        if quote is not None:
            if escaped:
                if quote == '"':
                    buf.append("\\" + ch)
                else:
                    buf.append({"n": "\n", "t": "\t"}.get(ch, ch))
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                out.append(_close_string(buf, quote))
                quote, buf = None, []
            elif quote == '"' and ch in "\n\r\t":
                buf.append(json.dumps(ch)[1:-1])
            else:
                buf.append(ch)
            continue
        if ch in "\"'":
            quote, buf = ch, []
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
            if len(stack) > MAX_NESTING:
                raise _TooDeep
            out.append(ch)
        elif ch in "}]":
            while out and out[-1].strip() in {"", ","}:
                out.pop()
            out.append(ch)
            if stack:
                stack.pop()
            if not stack:
                return "".join(out), True
        else:
            out.append(ch)
    if quote is not None:
        out.append(_close_string(buf, quote))
    text = "".join(out).rstrip().rstrip(",").rstrip()
    if text.endswith(":"):
        text += " null"
    return text + "".join(reversed(stack)), False


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    fixed = re.sub(
        r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", text))
    )
    try:
        return json.loads(fixed)
    except (ValueError, RecursionError):
        return None


def _find_dict(text: str) -> dict[str, Any] | None:
    """The first `{...}` in text that reads as a dict, repairing quotes and truncation.

    At most MAX_CANDIDATES starts are tried, and brackets nested past MAX_NESTING end a try."""
    start = text.find("{")
    for _ in range(MAX_CANDIDATES):
        if start == -1:
            break
        try:
            value = _candidate(text[start:])
        except _TooDeep:
            value = None
        if isinstance(value, dict) and value:
            return {str(k).strip().lower(): v for k, v in value.items()}
        start = text.find("{", start + 1)
    return None


def _candidate(fragment: str) -> Any:
    """What the text from one `{` reads as (a dict when it is an answer)."""
    repaired, complete = _repair_json(fragment)
    value = _loads(repaired)
    if not isinstance(value, dict) and not complete:
        # cut off inside a key or value: drop the last partial member and close again
        for _ in range(4):
            cut = repaired.rfind(",")
            if cut <= 0:
                break
            repaired, _ok = _repair_json(repaired[:cut])
            value = _loads(repaired)
            if isinstance(value, dict):
                break
    if not isinstance(value, dict):
        try:
            value = ast.literal_eval(fragment[: fragment.rfind("}") + 1])
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            value = None
    return value


def _strip_fences(text: str) -> str:
    match = _FENCE_RE.search(text)
    return match.group(1) if match else text


def _pick(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    return None


def parse_model_output(
    text: str,
    token_confidence: int | None = None,
    scored_by: Literal["tokens", "logprobs"] = "tokens",
) -> ParsedOutput:
    """Parse one model answer; never raises (unparseable text becomes the description).

    `token_confidence`: the mean probability of the generated tokens (0-100) when the backend
    has it; it becomes `confidence` (see the module doc for what is used without it).
    """
    text = _SPECIAL_TOKEN_RE.sub(" ", (text or "")[:MAX_PARSE_CHARS])
    data = _find_dict(_strip_fences(text)) or _find_dict(text)
    if data is None:
        description = clean_text(text.replace("```json", " ").replace("```", " "))
        objects = objects_from_text(description)
        ai_confidence = None
    else:
        description = _as_description(
            _pick(data, "description", "desc", "caption", "summary", "scene", "text")
        )
        raw_objects = _pick(data, "objects", "objects_detected", "detected_objects", "object")
        if raw_objects is None:
            objects = objects_from_text(description)
        else:
            objects = normalize_objects(_as_object_names(raw_objects))
        ai_confidence = parse_confidence(_pick(data, "confidence", "score", "certainty"))
    source: ConfidenceSource
    if token_confidence is not None:
        confidence, source = max(0, min(100, int(token_confidence))), scored_by
    elif ai_confidence is not None:
        confidence, source = ai_confidence, "stated"
    elif objects:
        confidence, source = DEFAULT_CONFIDENCE_WITH_OBJECTS, "default"
    else:
        confidence, source = DEFAULT_CONFIDENCE_NO_OBJECTS, "default"
    return ParsedOutput(description, objects, confidence, ai_confidence, source)
