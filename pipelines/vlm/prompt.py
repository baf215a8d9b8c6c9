"""The text every VLM backend sends along with a request's frames."""

from __future__ import annotations

from pipelines.vlm.types import VLMRequest

JSON_INSTRUCTION = (
    "Reply with one JSON object and nothing else: "
    '{"description": "<one short sentence about what happens>", '
    '"objects": ["<person|vehicle|package|animal|other noun>", ...], '
    '"confidence": <integer 0-100>}'
)


def build_prompt(request: VLMRequest) -> str:
    """The text sent with a request's frames: camera, frame layout, optional prompt, JSON ask."""
    n = len(request.frames)
    if n > 1:
        intro = (
            f"These {n} images are key frames (oldest first) of one motion event "
            f'seen by the camera "{request.camera_name}".'
        )
    else:
        intro = (
            "This image is a key frame of a motion event "
            f'seen by the camera "{request.camera_name}".'
        )
    parts = [intro, "Describe what is happening and which objects are involved."]
    if request.prompt:
        parts.append(request.prompt.strip())
    parts.append(JSON_INSTRUCTION)
    return " ".join(parts)
