"""parse_model_output on a table of realistic (and broken) VLM answers."""

from __future__ import annotations

import time

import pytest

from pipelines.vlm.parsing import (
    DEFAULT_CONFIDENCE_NO_OBJECTS,
    DEFAULT_CONFIDENCE_WITH_OBJECTS,
    MAX_DESCRIPTION_CHARS,
    normalize_objects,
    parse_confidence,
    parse_model_output,
)

NO = DEFAULT_CONFIDENCE_NO_OBJECTS
WITH = DEFAULT_CONFIDENCE_WITH_OBJECTS

# (id, model output, description, objects, confidence, ai_confidence)
CASES = [
    (
        "clean-json",
        '{"description": "A person walks to the front door.", "objects": ["person"], '
        '"confidence": 92}',
        "A person walks to the front door.",
        ("person",),
        92,
        92,
    ),
    (
        "fenced-json",
        'Here you go:\n```json\n{"description": "A white van parks in the driveway", '
        '"objects": ["van", "Truck"], "confidence": 80}\n```\nHope this helps!',
        "A white van parks in the driveway",
        ("vehicle",),
        80,
        80,
    ),
    (
        "fence-without-language",
        '```\n{"description": "A cat crosses the yard", "objects": ["cat"], "confidence": 70}\n```',
        "A cat crosses the yard",
        ("animal",),
        70,
        70,
    ),
    (
        "trailing-text",
        '{"description": "Two men at the gate", "objects": ["man", "men", "gate"], '
        '"confidence": 77} The image shows two men.<end_of_utterance>',
        "Two men at the gate",
        ("person", "gate"),
        77,
        77,
    ),
    (
        "truncated-in-description",
        '{"description": "A delivery driver leaves a parcel on the porch and walks',
        "A delivery driver leaves a parcel on the porch and walks",
        ("person", "package"),
        WITH,
        None,
    ),
    (
        "truncated-in-objects",
        '{"description": "A dog runs across the lawn", "objects": ["dog", "ball',
        "A dog runs across the lawn",
        ("animal", "ball"),
        WITH,
        None,
    ),
    (
        "truncated-in-key",
        '{"description": "A bus passes by", "objects": ["bus"], "confid',
        "A bus passes by",
        ("vehicle",),
        WITH,
        None,
    ),
    (
        "prose-only",
        "A woman carrying a box walks up the driveway toward the garage.",
        "A woman carrying a box walks up the driveway toward the garage.",
        ("person", "package"),
        WITH,
        None,
    ),
    (
        "prose-negation",
        "The porch is empty, no person is visible. A car is parked.",
        "The porch is empty, no person is visible. A car is parked.",
        ("vehicle",),
        WITH,
        None,
    ),
    (
        "prose-nothing",
        "The scene is quiet and dark.<|im_end|>",
        "The scene is quiet and dark.",
        (),
        NO,
        None,
    ),
    ("empty", "", "", (), NO, None),
    ("only-special-tokens", "<end_of_utterance><|im_end|>  \n", "", (), NO, None),
    (
        "single-quotes",
        "{'description': 'A man rides a bicycle past the house', 'objects': ['man', "
        "'bicycle'], 'confidence': 0.9}",
        "A man rides a bicycle past the house",
        ("person", "vehicle"),
        90,
        90,
    ),
    (
        "python-literals",
        "{'description': 'A fox', 'objects': ['fox'], 'confidence': None, 'night': True}",
        "A fox",
        ("animal",),
        WITH,
        None,
    ),
    (
        "objects-as-string",
        '{"description": "Kids playing near a parked car", "objects": "children, car, ball",'
        ' "confidence": "high"}',
        "Kids playing near a parked car",
        ("person", "vehicle", "ball"),
        85,
        85,
    ),
    (
        "confidence-percent",
        '{"description": "A parcel on the step", "objects": ["package"], "confidence": "85%"}',
        "A parcel on the step",
        ("package",),
        85,
        85,
    ),
    (
        "confidence-float-string",
        '{"description": "Birds on the fence", "objects": ["bird"], "confidence": "0.65"}',
        "Birds on the fence",
        ("animal",),
        65,
        65,
    ),
    (
        "confidence-out-of-range",
        '{"description": "Someone at the door", "objects": ["someone"], "confidence": 250}',
        "Someone at the door",
        ("person",),
        100,
        100,
    ),
    (
        "confidence-word-medium",
        '{"description": "Something moved", "objects": [], "confidence": "Medium"}',
        "Something moved",
        (),
        60,
        60,
    ),
    (
        "wrong-types",
        '{"description": ["A person", "at the gate"], "objects": {"person": 1}, '
        '"confidence": [90]}',
        "A person at the gate",
        ("person",),
        WITH,
        None,
    ),
    (
        "objects-as-dicts",
        '{"description": "A truck and a man", "objects": [{"name": "truck"}, '
        '{"label": "Man"}], "confidence": 88}',
        "A truck and a man",
        ("vehicle", "person"),
        88,
        88,
    ),
    (
        "missing-objects-key",
        '{"description": "A raccoon digs in the trash", "confidence": 40}',
        "A raccoon digs in the trash",
        ("animal",),
        40,
        40,
    ),
    (
        "capitalised-keys-trailing-comma",
        '{"Description": "An SUV pulls in", "Objects": ["SUV", "Delivery Truck",],'
        ' "Confidence": 75,}',
        "An SUV pulls in",
        ("vehicle",),
        75,
        75,
    ),
    (
        "assistant-prefix-and-quotes",
        'Assistant: "A man waves at the camera."',
        "A man waves at the camera.",
        ("person",),
        WITH,
        None,
    ),
    (
        "other-nouns-kept-and-deduped",
        '{"description": "x", "objects": ["Ladder", "ladder", "the Trash Can", "woman", '
        '"person"], "confidence": 55}',
        "x",
        ("ladder", "trash can", "person"),
        55,
        55,
    ),
    (
        "description-with-escaped-quote-and-newline",
        '{"description": "A sign reads \\"OPEN\\"\\nnear the door", "objects": [], '
        '"confidence": 1}',
        'A sign reads "OPEN" near the door',
        (),
        1,
        1,
    ),
]


@pytest.mark.parametrize(
    ("text", "description", "objects", "confidence", "ai_confidence"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_parse_table(
    text: str,
    description: str,
    objects: tuple[str, ...],
    confidence: int,
    ai_confidence: int | None,
) -> None:
    parsed = parse_model_output(text)
    assert parsed.description == description
    assert parsed.objects == objects
    assert parsed.confidence == confidence
    assert parsed.ai_confidence == ai_confidence
    assert isinstance(parsed.confidence, int) and 0 <= parsed.confidence <= 100


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 20


def test_long_gibberish_is_cleaned_and_capped() -> None:
    text = "\x00\x15ack\ufffd< descr " * 200 + "<end_of_utterance>"
    parsed = parse_model_output(text)
    assert len(parsed.description) <= MAX_DESCRIPTION_CHARS
    assert "\x00" not in parsed.description and "\ufffd" not in parsed.description
    assert "<end_of_utterance>" not in parsed.description
    assert parsed.ai_confidence is None


def test_long_json_description_is_capped() -> None:
    parsed = parse_model_output('{"description": "%s", "confidence": 50}' % ("word " * 300))
    assert len(parsed.description) <= MAX_DESCRIPTION_CHARS
    assert parsed.description.startswith("word word")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (85, 85),
        (0.85, 85),
        (1, 1),
        (1.0, 100),
        ("85%", 85),
        ("0.85", 85),
        ("high", 85),
        ("very low", 15),
        (-5, 0),
        (True, None),
        (None, None),
        ("unknown", None),
        (float("nan"), None),
    ],
)
def test_parse_confidence(value: object, expected: int | None) -> None:
    assert parse_confidence(value) == expected


def test_normalize_objects_groups() -> None:
    names = [
        "People",
        "woman",
        "Child",
        "truck",
        "Motorcycle",
        "parcel",
        "delivery",
        "Dog",
        "birds",
        "delivery man",
        "mailbox",
    ]
    assert normalize_objects(names) == ("person", "vehicle", "package", "animal", "mailbox")


@pytest.mark.parametrize(
    "hostile",
    [
        "{" * 100_000,
        "[" * 100_000,
        '{"a":' * 100_000,
        "{x" * 100_000,
        '{"description": [' + "[" * 100_000 + "]" * 100_000 + "]}",
        '{"description": "' + "x" * 1_000_000,
    ],
    ids=["braces", "brackets", "keys", "prose-braces", "deep-value", "long-string"],
)
def test_hostile_output_is_bounded_and_falls_back_to_text(hostile: str) -> None:
    # model output is untrusted: deep or huge text gives a plain-text result, never an error;
    # the old parser raised RecursionError here and took 7.7 s on 4,000 braces (quadratic)
    started = time.perf_counter()
    out = parse_model_output(hostile)
    elapsed = time.perf_counter() - started
    assert isinstance(out.description, str) and len(out.description) <= MAX_DESCRIPTION_CHARS
    assert out.objects == () and out.ai_confidence is None
    assert elapsed < 1.0, f"{elapsed:.3f} s: not linear in a bounded input"


def test_an_answer_after_a_few_stray_braces_is_still_found() -> None:
    text = "{} {oops} " + '{"description": "a man at the door", "objects": ["person"]}'
    out = parse_model_output(text)
    assert out.description == "a man at the door" and out.objects == ("person",)
