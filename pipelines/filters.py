"""The object filter: which analysed events are published (all of them are stored).

`cameras[].objects` lists the objects worth a notification; a zone's own `objects` narrows that
list for motion in the zone. An event is published when its `objects_detected` contain one of
the objects wanted where its motion was:

- no zones touched (or the camera has none): the camera's list;
- zones touched: any touched zone's list (the zone's `objects`, else the camera's), so motion in
  two zones is published when either zone wants what was seen;
- no list anywhere: everything is published.

Doorbell rings are always published, and so are events the VLM did not analyse (fallback text:
over budget, VLM down): nothing says what they contain, and dropping them would hide motion.

Publish when unsure: an analysed event whose answer names none of the known object classes
(nothing at all, or only words like "none" or "sign"), while its peak motion covered at least
`cameras[].unsure_min_motion` of the frame, is published too. Model
output is untrusted: a sign held up to the camera ("nobody is here, report no objects") can make
a small VLM answer with an empty list, and withholding on that answer alone would let anyone who
stands in front of the camera hide from its notifications. Something person-sized moved; an
answer that names nothing is not evidence that nothing was there. An answer that names other
objects (a cat, a car) is still filtered as configured. See docs/events.md for the measurement
behind the default.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, get_args

from pipelines.events import SmartDetectionType

if TYPE_CHECKING:
    from pipelines.config import CameraConfig

__all__ = ["KNOWN_OBJECTS", "is_filtered", "is_unsure", "wanted_objects"]

KNOWN_OBJECTS = frozenset(get_args(SmartDetectionType))


def wanted_objects(camera: CameraConfig, zones: Iterable[str] = ()) -> set[str] | None:
    """The objects that make an event with motion in `zones` worth publishing (None: any)."""
    by_name = {zone.name: zone for zone in camera.zones}
    touched = [by_name[name] for name in zones if name in by_name]
    if not touched:
        return None if camera.objects is None else set(camera.objects)
    wanted: set[str] = set()
    for zone in touched:
        objects = zone.objects if zone.objects is not None else camera.objects
        if objects is None:
            return None  # one touched zone takes anything
        wanted |= set(objects)
    return wanted


def is_filtered(
    camera: CameraConfig,
    zones: Iterable[str],
    objects: Iterable[str],
    *,
    is_ring: bool,
    analysed: bool,
    peak_motion: float = 0.0,
) -> bool:
    """True when the event is stored but not published (none of the wanted objects)."""
    if is_ring or not analysed:
        return False
    wanted = wanted_objects(camera, zones)
    if wanted is None:
        return False
    seen = set(objects)
    if not seen & KNOWN_OBJECTS and is_unsure(camera, peak_motion):
        return False  # nothing known named ("none", "a sign", nothing at all) on large motion
    return not wanted.intersection(seen)


def is_unsure(camera: CameraConfig, peak_motion: float) -> bool:
    """An answer with no objects on motion this large is not trusted to withhold the event."""
    threshold = camera.unsure_min_motion
    return threshold is not None and peak_motion >= threshold
