"""Zones: normalised polygons on the motion frame, zone-gated event starts, config errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.config import ConfigError, MotionConfig, ZoneConfig, load_config
from pipelines.ingest.motion import MotionDetector
from pipelines.ingest.segment import EventSegmenter, Segment
from pipelines.ingest.sources import FileSource, Frame
from pipelines.ingest.zones import ZoneMap
from pipelines.samples import generate_sample_video, sample_background

FPS = 5.0
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEFT = ZoneConfig(name="driveway", polygon=[(0.0, 0.0), (0.45, 0.0), (0.45, 1.0), (0.0, 1.0)])
TOP_RIGHT = ZoneConfig(name="porch", polygon=[(0.6, 0.0), (1.0, 0.0), (1.0, 0.3), (0.6, 0.3)])


def box_frames(
    size: tuple[int, int], x_frac: tuple[float, float], y_frac: float, n: int = 12
) -> list[np.ndarray]:
    """Still background, then a box moving from x_frac[0] to x_frac[1] (fractions of width)."""
    width, height = size
    background = sample_background(size, seed=3)
    side = max(6, height // 8)
    frames = [background.copy() for _ in range(4)]
    for k in range(n):
        image = background.copy()
        x = x_frac[0] + (x_frac[1] - x_frac[0]) * k / max(1, n - 1)
        cx, cy = int(x * width), int(y_frac * height)
        cv2.rectangle(image, (cx - side, cy - side), (cx + side, cy + side), (250, 250, 250), -1)
        frames.append(image)
    frames += [background.copy() for _ in range(12)]
    return frames


def segments_of(
    images: list[np.ndarray], zones: list[ZoneConfig], detector: MotionDetector | None = None
) -> list[Segment]:
    settings = MotionConfig(end_after_s=1.0)
    detector = detector or MotionDetector(settings, zones=zones)
    segmenter = EventSegmenter(settings, FPS)
    out: list[Segment] = []
    for i, image in enumerate(images):
        frame = Frame(index=i, pts_s=i / FPS, wall=T0 + timedelta(seconds=i / FPS), image=image)
        out += segmenter.feed(frame, detector.update(image))
    return out + segmenter.flush()


def test_zone_map_is_resolution_independent() -> None:
    for height, width in ((180, 240), (180, 320), (360, 640), (61, 97)):
        zones = ZoneMap([LEFT, TOP_RIGHT], height, width)
        left = zones.mask("driveway")
        assert abs(left.mean() - 0.45) < 0.03, (height, width, left.mean())
        assert left[:, : int(0.4 * width)].all() and not left[:, int(0.5 * width) :].any()
        porch = zones.mask("porch")
        assert abs(porch.mean() - 0.4 * 0.3) < 0.03
        motion = np.zeros((height, width), np.uint8)
        assert zones.touched(motion) == ()
        motion[int(0.1 * height), int(0.8 * width)] = 255
        assert zones.touched(motion) == ("porch",)
        motion[int(0.9 * height), int(0.1 * width)] = 255
        assert zones.touched(motion) == ("driveway", "porch")
    with pytest.raises(ValueError):
        ZoneMap([LEFT], 10, 10).touched(np.zeros((5, 5), np.uint8))


def test_motion_only_outside_every_zone_starts_no_event() -> None:
    outside = box_frames((320, 240), (0.65, 0.9), 0.7)  # right half, bottom: in no zone
    assert segments_of(outside, [LEFT, TOP_RIGHT]) == []
    # the same motion without zones is an event: the zones made the difference
    assert len(segments_of(outside, [])) == 1


def test_motion_inside_a_zone_starts_an_event_named_for_it() -> None:
    inside = box_frames((320, 240), (0.1, 0.3), 0.5)
    (segment,) = segments_of(inside, [LEFT, TOP_RIGHT])
    assert segment.zones == ("driveway",)
    # motion that starts in a zone and moves out keeps the event going and names only
    # the zones it touched
    crossing = box_frames((320, 240), (0.2, 0.9), 0.7, n=20)
    (segment,) = segments_of(crossing, [LEFT, TOP_RIGHT])
    assert segment.zones == ("driveway",)
    assert segment.frame_count >= 15


def test_masks_still_exclude_inside_a_zone() -> None:
    inside = box_frames((320, 240), (0.1, 0.3), 0.5)
    masked = MotionConfig(end_after_s=1.0, mask=[[(0, 0), (150, 0), (150, 180), (0, 180)]])
    detector = MotionDetector(masked, zones=[LEFT])
    assert segments_of(inside, [LEFT], detector) == []


def test_zone_keeps_working_when_the_stream_resolution_changes() -> None:
    detector = MotionDetector(MotionConfig(end_after_s=1.0), zones=[LEFT, TOP_RIGHT])
    small_in = box_frames((320, 240), (0.1, 0.3), 0.5)
    big_in = box_frames((1280, 720), (0.1, 0.3), 0.5)
    big_out = box_frames((1280, 720), (0.65, 0.9), 0.7)
    big_porch = box_frames((1280, 720), (0.7, 0.9), 0.12)
    assert [s.zones for s in segments_of(small_in, [], detector)] == [("driveway",)]
    assert [s.zones for s in segments_of(big_in, [], detector)] == [("driveway",)]
    assert segments_of(big_out, [], detector) == []
    assert [s.zones for s in segments_of(big_porch, [], detector)] == [("porch",)]


def test_zones_through_a_decoded_video_file(tmp_path: Path) -> None:
    """The generated clip's object crosses the whole width at 35 % height (real decoding)."""
    clip = generate_sample_video(tmp_path / "clip.mp4", seconds=5, motion_windows=[(1.0, 3.0)])
    band = ZoneConfig(name="band", polygon=[(0, 0.2), (1, 0.2), (1, 0.5), (0, 0.5)])
    bottom = ZoneConfig(name="bottom", polygon=[(0, 0.85), (1, 0.85), (1, 1), (0, 1)])
    for zones, expected in (([band], [("band",)]), ([bottom], [])):
        source = FileSource(str(clip), FPS)
        source.open()
        try:
            images = [frame.image for frame in source.frames()]
        finally:
            source.close()
        assert [s.zones for s in segments_of(images, zones)] == expected


def test_bad_zone_polygons_are_config_errors_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "zones.yaml"
    path.write_text(
        "cameras:\n"
        "  - id: cam\n"
        "    source: a.mp4\n"
        "    zones:\n"
        "      - name: two_points\n"
        "        polygon: [[0, 0], [1, 0]]\n"
        "      - name: outside\n"
        "        polygon:\n"
        "          - [0, 0]\n"
        "          - [1.5, 0.2]\n"
        "          - [1, 1]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    errors = info.value.errors
    assert errors[0].startswith(f"{path}:6: cameras.0.zones.0.polygon: ")
    assert "3 to 256" in errors[0]
    assert errors[1].startswith(f"{path}:10: cameras.0.zones.1.polygon.1: ")
    assert "between 0 and 1" in errors[1]


def test_zone_names_unique_and_zone_objects_narrow_the_camera(tmp_path: Path) -> None:
    path = tmp_path / "zones.yaml"
    base = "cameras:\n  - id: cam\n    source: a.mp4\n    objects: [person]\n    zones:\n"
    zone = "      - name: {name}\n        polygon: [[0, 0], [1, 0], [1, 1]]\n"
    path.write_text(base + zone.format(name="gate") + zone.format(name="gate"))
    with pytest.raises(ConfigError, match=r"zones.yaml:8: cameras.0.zones.1.name: duplicate"):
        load_config(path)
    path.write_text(base + zone.format(name="gate") + "        objects: [vehicle]\n")
    with pytest.raises(ConfigError, match=r":8: cameras.0.zones.0.objects: zone objects"):
        load_config(path)
    path.write_text(base + zone.format(name="gate") + "        objects: [person]\n")
    camera = load_config(path).cameras[0]
    assert camera.zones[0].objects == ["person"] and camera.objects == ["person"]


def test_zones_in_the_payload_only_when_touched() -> None:
    import jsonschema

    from pipelines.events import Event, event_payload, event_schema

    base = {
        "camera_id": "drive",
        "camera_name": "Drive",
        "description": "A car",
        "confidence": 60,
        "source_type": "file",
        "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
    }
    touched = event_payload(Event(**base, zones=("driveway", "gate")), "http://h:8000")
    jsonschema.validate(touched, event_schema())
    assert touched["zones"] == ["driveway", "gate"]
    for none in (None, ()):
        payload = event_payload(Event(**base, zones=none), "http://h:8000")
        assert "zones" not in payload
    # metadata of the noise controls is stored, never published
    hidden = event_payload(Event(**base, filtered=True, confidence_source="tokens"), "http://h")
    assert "filtered" not in hidden and "confidence_source" not in hidden
    bad = {**touched, "zones": ["no/slash"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, event_schema())


def test_object_filter_by_camera_and_zone() -> None:
    from pipelines.config import CameraConfig
    from pipelines.filters import is_filtered, wanted_objects

    camera = CameraConfig.model_validate(
        {
            "id": "drive",
            "source": "a.mp4",
            "objects": ["person", "vehicle", "package"],
            "zones": [
                {"name": "road", "polygon": [[0, 0], [1, 0], [1, 0.5]], "objects": ["vehicle"]},
                {"name": "path", "polygon": [[0, 0.5], [1, 0.5], [1, 1]]},
            ],
        }
    )

    def filtered(zones: tuple[str, ...], objects: tuple[str, ...], **kw: bool) -> bool:
        flags = {"is_ring": False, "analysed": True} | kw
        return is_filtered(camera, zones, objects, **flags)

    assert wanted_objects(camera) == {"person", "vehicle", "package"}
    assert wanted_objects(camera, ["road"]) == {"vehicle"}  # the zone narrows the camera
    assert wanted_objects(camera, ["road", "path"]) == {"person", "vehicle", "package"}
    assert filtered((), ("animal",)) and not filtered((), ("package", "animal"))
    assert filtered(("road",), ("person",)) and not filtered(("road",), ("vehicle",))
    assert not filtered(("road", "path"), ("person",))  # either touched zone may want it
    assert filtered((), ())  # nothing recognised: not worth a notification
    assert not filtered((), ("animal",), is_ring=True)  # rings always publish
    assert not filtered((), (), analysed=False)  # no VLM answer: nothing says what it shows
    anything = CameraConfig(id="any", source="a.mp4")
    assert wanted_objects(anything) is None
    assert not is_filtered(anything, (), ("animal",), is_ring=False, analysed=True)
