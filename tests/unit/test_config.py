"""Config loading: every SPEC key, defaults, file:line errors, secrets kept out of messages."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from pipelines.config import (
    CAMERA_ID_RE,
    BackendConfig,
    CameraConfig,
    Config,
    ConfigError,
    MQTTConfig,
    VLMConfig,
    check_config_file,
    expand_env,
    load_config,
    parse_config_text,
)
from pipelines.redact import redact, redact_url

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "example.yaml"
EXAMPLE_ENV = {
    "FRONT_DOOR_PASSWORD": "fd-Secret-1",
    "DOORBELL_PASSWORD": "db-Secret-2",
    "MQTT_PASSWORD": "mqtt-Secret-3",
    "LIVEOBJECT_API_KEY": "api-Secret-4-long-enough",
}

# The SPEC's config block, verbatim.
SPEC_YAML = """\
ray:     {address: null, namespace: liveobject}
cameras:
  - id: front_door
    name: Front Door
    source: rtsp://viewer:${FRONT_DOOR_PASSWORD}@cam1.lan/stream1   # or a file path
    detect_fps: 5
    doorbell: false
vlm:
  backend: transformers          # or: openai (any OpenAI-compatible server: vLLM, Ollama, cloud)
  model: HuggingFaceTB/SmolVLM-256M-Instruct   # a hub id or a local directory
  base_url: null                 # openai backend, e.g. http://localhost:8001/v1
  api_key: null                  # openai backend, e.g. ${OPENAI_API_KEY}
  timeout_s: 30
  max_batch_size: 8
  batch_wait_timeout_s: 0.05
  num_replicas: 1                # or "auto" with an autoscaling block
  num_gpus: 0
  max_new_tokens: 96
  fallback: []                   # further backends, tried in order; each item takes
                                 # backend, model, base_url, api_key, timeout_s
storage: {path: data, retention_days: 30}
mqtt:
  enabled: true
  host: localhost
  port: 1883
  username: null
  password: null
  topic_prefix: liveobject
  qos: 1
  replay_window_s: 300
  discovery: {enabled: true, prefix: homeassistant}
api:     {host: 0.0.0.0, port: 8000, base_url: "http://localhost:8000", api_key: null}
"""

MINIMAL = """\
cameras:
  - id: cam
    source: /videos/cam.mp4
"""


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    """The error lines parse_config_text raises for text (fails if it loads)."""
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, "cfg.yaml", env or {}, base_dir="/base")
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def one_error(text: str, env: dict[str, str] | None = None) -> str:
    errors = errors_of(text, env)
    assert len(errors) == 1, errors
    return errors[0]


# ------------------------------------------------------------------ accepted configs


def test_spec_block_loads_with_spec_values() -> None:
    config = parse_config_text(SPEC_YAML, "spec.yaml", {"FRONT_DOOR_PASSWORD": "pw"})
    camera = config.camera("front_door")
    assert camera.name == "Front Door"
    assert camera.source == "rtsp://viewer:pw@cam1.lan/stream1"
    assert camera.source_type == "rtsp"
    assert config.vlm.num_replicas == 1
    assert config.mqtt.discovery.prefix == "homeassistant"
    assert config.api.base_url == "http://localhost:8000"


def test_defaults_match_spec() -> None:
    config = parse_config_text(MINIMAL, "cfg.yaml", {}, base_dir="/etc/liveobject")
    assert config.ray.address is None
    assert config.ray.namespace == "liveobject"
    camera = config.cameras[0]
    assert (camera.name, camera.detect_fps, camera.doorbell, camera.prompt) == (
        "Cam",
        5,
        False,
        None,
    )
    assert camera.enabled is True
    assert camera.motion.max_frames == 3
    assert camera.motion.threshold == 25
    vlm = config.vlm
    assert vlm.backend == "transformers"
    assert vlm.model == "HuggingFaceTB/SmolVLM-256M-Instruct"
    assert (vlm.base_url, vlm.api_key, vlm.timeout_s) == (None, None, 30)
    assert (vlm.max_batch_size, vlm.batch_wait_timeout_s, vlm.num_replicas) == (8, 0.05, 1)
    assert (vlm.num_gpus, vlm.max_new_tokens, vlm.fallback, vlm.autoscaling) == (0, 96, [], None)
    assert vlm.build_tiny_if_missing is False
    assert config.storage.path == Path("/etc/liveobject/data")
    assert config.storage.retention_days == 30
    mqtt = config.mqtt
    assert (mqtt.enabled, mqtt.host, mqtt.port) == (True, "localhost", 1883)
    assert (mqtt.username, mqtt.password) == (None, None)
    assert (mqtt.topic_prefix, mqtt.qos, mqtt.replay_window_s) == ("liveobject", 1, 300)
    assert (mqtt.discovery.enabled, mqtt.discovery.prefix) == (True, "homeassistant")
    assert (mqtt.protocol, mqtt.tls.enabled, mqtt.embedded_broker) == ("5", False, False)
    api = config.api
    # the seed's 0.0.0.0 became loopback (issue 20): beyond it the API needs a key or
    # api.allow_unauthenticated (SPEC, third round); the SPEC block itself still loads (above)
    assert (api.host, api.port, api.base_url, api.api_key) == (
        "127.0.0.1",
        8000,
        "http://localhost:8000",
        None,
    )
    assert api.allow_unauthenticated is False and api.exposure_refusal() is None
    assert api.thumbnail_url_ttl_s == 86400
    assert config.correlation.window_s == 10


def test_example_config_loads_with_env() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    assert [c.source_type for c in config.cameras] == ["rtsp", "rtsp", "http", "file"]
    assert config.camera("front_door").source.startswith("rtsp://viewer:fd-Secret-1@")
    assert config.camera("doorbell").doorbell is True
    assert config.camera("driveway_test").source == str(
        EXAMPLE.parent / "recordings" / "driveway.mp4"
    )
    assert config.storage.path == EXAMPLE.parent / "data"
    assert config.mqtt.tls.ca_certs == EXAMPLE.parent / "certs" / "ca.pem"
    assert isinstance(config.mqtt.password, SecretStr)
    assert config.mqtt.password.get_secret_value() == "mqtt-Secret-3"
    assert config.api.api_key is not None
    assert config.api.api_key.get_secret_value() == "api-Secret-4-long-enough"
    assert config.vlm.num_gpus == 1
    assert config.vlm.max_batch_size == 16
    assert config.vlm.num_replicas == "auto"
    assert config.vlm.autoscaling is not None
    backends = config.vlm.default_chain()
    assert [b.backend for b in backends] == ["transformers", "openai"]
    assert backends[1].api_key is None  # ${OLLAMA_API_KEY:-} with the variable unset
    assert "mqtt-Secret-3" not in repr(config)
    assert "fd-Secret-1" not in repr(config.cameras)
    assert set(EXAMPLE_ENV.values()) <= set(config.secret_values())


def _mappings_for(model: type[BaseModel], data: list[Any]) -> dict[type[BaseModel], list[dict]]:
    found: dict[type[BaseModel], list[dict]] = {model: [d for d in data if isinstance(d, dict)]}
    for name, field in model.model_fields.items():
        sub = _nested_model(field.annotation)
        if sub is None:
            continue
        values: list[Any] = []
        by_name = typing.get_origin(field.annotation) is dict  # e.g. vlm.backends: NAME → chain
        for mapping in found[model]:
            value = mapping.get(name)
            if by_name and isinstance(value, dict):
                value = list(value.values())
            values.extend(value if isinstance(value, list) else [value])
        for key, items in _mappings_for(sub, values).items():
            found.setdefault(key, []).extend(items)
    return found


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def test_example_config_shows_every_key() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    for model, mappings in _mappings_for(Config, [data]).items():
        assert mappings, f"no {model.__name__} section in example.yaml"
        present = set().union(*(m.keys() for m in mappings))
        missing = set(model.model_fields) - present
        assert not missing, f"{model.__name__} keys missing from example.yaml: {missing}"


def test_relative_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "live.yaml"
    path.parent.mkdir()
    path.write_text(
        "cameras:\n"
        "  - {id: a, source: videos/a.mp4}\n"
        "  - {id: b, source: /abs/b.mp4}\n"
        "  - {id: c, source: 'file://rel/c.mp4'}\n"
        "storage: {path: store}\n"
    )
    config = load_config(path, env={})
    assert config.cameras[0].source == str(path.parent / "videos" / "a.mp4")
    assert config.cameras[1].source == "/abs/b.mp4"
    assert config.cameras[2].source == str(path.parent / "rel" / "c.mp4")
    assert config.storage.path == path.parent / "store"


def test_env_substitution_forms() -> None:
    env = {"HOST": "broker.lan", "PORT": "8883", "EMPTY": "", "QOS": "2"}
    text = MINIMAL + (
        "mqtt:\n"
        "  host: ${HOST}\n"
        "  port: ${PORT}\n"
        "  qos: ${QOS}\n"
        "  username: ${USER_UNSET:-bob}\n"
        "  client_id: ${EMPTY:-fallback-id}\n"
        "  password: ${EMPTY}\n"
        "  topic_prefix: lo$${literal}\n"
    )
    mqtt = parse_config_text(text, "cfg.yaml", env).mqtt
    assert (mqtt.host, mqtt.port, mqtt.qos, mqtt.username) == ("broker.lan", 8883, 2, "bob")
    assert mqtt.client_id == "fallback-id"
    assert mqtt.password is None
    assert mqtt.topic_prefix == "lo${literal}"
    assert expand_env("a-${X}-${Y:-d}", {"X": "1"}) == "a-1-d"


def test_expand_env_missing_names_location_not_value() -> None:
    with pytest.raises(ConfigError) as info:
        expand_env("${NOPE}", {"OTHER": "v"}, location="f.yaml:3: mqtt.host")
    assert info.value.errors == ["f.yaml:3: mqtt.host: environment variable NOPE is not set"]


def test_merge_keys_and_anchors() -> None:
    text = (
        "motion: &m {threshold: 40, max_frames: 5}\n"  # line 1: not a Config key
        "cameras:\n"
        "  - {id: a, source: a.mp4, motion: {<<: *m, max_frames: 2}}\n"
    )
    assert one_error(text).startswith("cfg.yaml:1: motion: unknown key")
    text = "cameras:\n  - {id: a, source: a.mp4, motion: &m {threshold: 40}}\n"
    text += "  - {id: b, source: b.mp4, motion: {<<: *m, max_frames: 2}}\n"
    config = parse_config_text(text, "cfg.yaml", {})
    assert config.cameras[1].motion.threshold == 40
    assert config.cameras[1].motion.max_frames == 2


def test_openai_setup_and_autoscaling() -> None:
    text = MINIMAL + (
        "vlm:\n"
        "  backend: openai\n"
        "  model: gpt-4o-mini\n"
        "  base_url: https://api.example.com/v1/\n"
        "  api_key: ${OPENAI_API_KEY}\n"
        "  autoscaling: {min_replicas: 0, max_replicas: 3}\n"
    )
    vlm = parse_config_text(text, "cfg.yaml", {"OPENAI_API_KEY": "sk-x"}).vlm
    assert vlm.num_replicas == "auto"
    assert vlm.base_url == "https://api.example.com/v1"
    primary = vlm.primary()
    assert isinstance(primary, BackendConfig)
    assert primary.api_key is not None and primary.api_key.get_secret_value() == "sk-x"


def test_camera_lookup_and_frozen() -> None:
    config = parse_config_text(MINIMAL, "cfg.yaml", {})
    with pytest.raises(KeyError):
        config.camera("nope")
    with pytest.raises(ValueError):
        config.cameras[0].detect_fps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("rtsp://h/s", "rtsp"),
        ("rtsps://h/s", "rtsp"),
        ("http://h/v.mjpg", "http"),
        ("https://h/v.mjpg", "http"),
        ("udp://@239.0.0.1:1234", "udp"),
        ("/v/a.mp4", "file"),
    ],
)
def test_source_type(source: str, kind: str) -> None:
    assert CameraConfig(id="a", source=source).source_type == kind


def test_effective_base_url_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    api = parse_config_text(MINIMAL, "cfg.yaml", {}).api
    monkeypatch.delenv("API_BASE_URL", raising=False)
    assert api.effective_base_url() == "http://localhost:8000"
    monkeypatch.setenv("API_BASE_URL", "https://lo.example.com/")
    assert api.effective_base_url() == "https://lo.example.com"


# ------------------------------------------------------------------ rejected configs

CAMERA_AT_LINE_4 = """\
mqtt:
  enabled: false
cameras:
  - id: {id}
    source: a.mp4
"""


@pytest.mark.parametrize(
    "camera_id",
    ["a/b", "#", "+", "$SYS", "a\x00b", "café", "x" * 200, "FrontDoor", "", "-a", "a b", "a.b"],
)
def test_hostile_camera_ids_rejected_with_line(camera_id: str) -> None:
    assert not re.match(CAMERA_ID_RE, camera_id)
    error = one_error(CAMERA_AT_LINE_4.format(id=json.dumps(camera_id)))
    assert error.startswith("cfg.yaml:4: cameras.0.id: invalid camera id ")
    assert "lowercase a-z, 0-9, '_' or '-'" in error
    assert "\x00" not in error
    assert len(error) < 400
    if "\x00" in camera_id:
        assert "\\x00" in error


def test_non_string_camera_id_rejected() -> None:
    error = one_error(CAMERA_AT_LINE_4.format(id="[1, 2]"))
    assert error.startswith("cfg.yaml:4: cameras.0.id: ")


def test_duplicate_camera_id_names_second_line() -> None:
    text = (
        "cameras:\n"
        "  - id: porch\n"
        "    source: a.mp4\n"
        "  - id: yard\n"
        "    source: b.mp4\n"
        "  - id: porch\n"
        "    source: c.mp4\n"
    )
    error = one_error(text)
    assert error == "cfg.yaml:6: cameras.2.id: duplicate camera id 'porch' (also cameras.0.id)"


def test_unknown_keys_rejected_with_line_and_hint() -> None:
    text = MINIMAL + "    motion:\n      treshold: 30\nstorage:\n  path: d\nbogus: 1\n"
    errors = errors_of(text)
    assert errors[0].startswith(
        "cfg.yaml:5: cameras.0.motion.treshold: unknown key (did you mean 'threshold'?)"
    )
    assert errors[1].startswith("cfg.yaml:8: bogus: unknown key")
    assert len(errors) == 2


def test_bad_types_rejected_with_line() -> None:
    text = MINIMAL + "mqtt:\n  host: h\n  port: not-a-port\n  qos: 3\nvlm:\n  num_gpus: -1\n"
    errors = errors_of(text)
    assert errors[0].startswith("cfg.yaml:6: mqtt.port: Input should be a valid integer")
    assert errors[1].startswith("cfg.yaml:7: mqtt.qos: Input should be 0, 1 or 2")
    assert errors[2].startswith("cfg.yaml:9: vlm.num_gpus: Input should be greater than")
    assert len(errors) == 3


def test_out_of_bounds_and_inconsistent_values() -> None:
    text = MINIMAL + (
        "    detect_fps: 120\n"  # line 4
        "vlm:\n"
        "  max_batch_size: 64\n"
        "  max_ongoing_requests: 8\n"  # line 7
        "  num_replicas: 2\n"  # line 8
        "  autoscaling: {min_replicas: 5, max_replicas: 2}\n"  # line 9
    )
    errors = errors_of(text)
    assert errors[0].startswith("cfg.yaml:4: cameras.0.detect_fps: Input should be less than")
    assert errors[1].startswith("cfg.yaml:9: vlm.autoscaling.min_replicas: min_replicas must")
    assert len(errors) == 2
    text = MINIMAL + "vlm:\n  max_batch_size: 64\n  max_ongoing_requests: 8\n"
    assert one_error(text).startswith("cfg.yaml:6: vlm.max_ongoing_requests: ")
    text = MINIMAL + "vlm:\n  num_replicas: 2\n  autoscaling: {max_replicas: 2}\n"
    assert one_error(text).startswith("cfg.yaml:5: vlm.num_replicas: num_replicas must be 'auto'")
    text = MINIMAL + "vlm:\n  num_replicas: lots\n"
    assert one_error(text).startswith("cfg.yaml:5: vlm.num_replicas: ")


def test_missing_required_keys() -> None:
    assert one_error("cameras:\n  - id: a\n") == (
        "cfg.yaml:2: cameras.0.source: required key is missing"
    )
    assert one_error("mqtt: {}\n") == "cfg.yaml:1: cameras: required key is missing"
    assert one_error("cameras: []\n").startswith("cfg.yaml:1: cameras: ")
    text = MINIMAL + "vlm:\n  backend: openai\n  model: m\n"
    assert one_error(text).startswith("cfg.yaml:4: vlm.base_url: the openai backend needs")
    text = MINIMAL + "vlm:\n  fallback:\n    - backend: nope\n      model: m\n"
    assert one_error(text).startswith("cfg.yaml:6: vlm.fallback.0.backend: Input should be")


def test_missing_env_var_names_line_and_variable() -> None:
    text = MINIMAL + "mqtt:\n  username: u\n  password: ${MQTT_PASSWORD}\n"
    assert one_error(text, {"OTHER": "x"}) == (
        "cfg.yaml:6: mqtt.password: environment variable MQTT_PASSWORD is not set"
    )
    assert "malformed" in one_error(MINIMAL + "mqtt:\n  host: ${1BAD}\n")


def test_yaml_syntax_and_structure_errors() -> None:
    assert one_error("cameras:\n  - id: a\n   source: [\n").startswith("cfg.yaml:3: (yaml): ")
    assert one_error("") == "cfg.yaml:1: (root): the config is empty"
    assert one_error("- a\n- b\n") == "cfg.yaml:1: (root): expected a mapping"
    text = MINIMAL + "mqtt:\n  port: 1\n  port: 2\n"
    assert one_error(text) == "cfg.yaml:6: mqtt.port: duplicate key (first at line 5)"
    assert "tag" in one_error(MINIMAL + "mqtt:\n  host: !!python/name:os.system\n")
    assert "nested" in one_error("a: &a [*a]\n")


@pytest.mark.parametrize(
    "prefix", ["a/+/b", "a/#", "#", "$SYS", "$share/x", "a\x00b", "a//b", "/a", "a/", "", "a\nb"]
)
def test_hostile_topic_prefix_rejected(prefix: str) -> None:
    text = MINIMAL + f"mqtt:\n  topic_prefix: {json.dumps(prefix)}\n  discovery:\n"
    text += f"    prefix: {json.dumps(prefix)}\n"
    errors = errors_of(text)
    assert errors[0].startswith("cfg.yaml:5: mqtt.topic_prefix: invalid topic_prefix: ")
    assert errors[1].startswith("cfg.yaml:7: mqtt.discovery.prefix: invalid discovery prefix: ")
    assert all("\x00" not in e and "\n" not in e for e in errors)


def test_good_topic_prefixes_accepted() -> None:
    for prefix in ("liveobject", "home/cams", "a-b_c/d e"):
        text = MINIMAL + f"mqtt: {{topic_prefix: {json.dumps(prefix)}}}\n"
        assert parse_config_text(text, "cfg.yaml", {}).mqtt.topic_prefix == prefix


def test_bad_sources_and_tls() -> None:
    text = "cameras:\n  - id: a\n    source: ftp://user:pw@h/x\n"
    error = one_error(text)
    assert error.startswith("cfg.yaml:3: cameras.0.source: unsupported source scheme 'ftp'")
    assert "pw" not in error
    text = MINIMAL + "mqtt:\n  tls: {enabled: true, keyfile: k.pem}\n"
    assert one_error(text).startswith("cfg.yaml:5: mqtt.tls.certfile: keyfile needs certfile")


SECRET = "hunter2#S3cr'e\\t"


@pytest.mark.parametrize(
    "snippet",
    [
        "mqtt:\n  port: ${MQTT_PASSWORD}\n",
        "mqtt:\n  qos: ${MQTT_PASSWORD}\n",
        "mqtt:\n  topic_prefix: ${MQTT_PASSWORD}\n",
        "mqtt:\n  discovery: {prefix: '${MQTT_PASSWORD}'}\n",
        "mqtt:\n  protocol: ${MQTT_PASSWORD}\n",
        "mqtt:\n  password: ${MQTT_PASSWORD}${MQTT_PASSWORD}${PAD}\n",
        "mqtt:\n  passwd: ${MQTT_PASSWORD}\n",
        'mqtt:\n  host: "${MQTT_PASSWORD}\\0"\n',
        "api:\n  base_url: ${MQTT_PASSWORD}\n",
        "api:\n  api_key: [${MQTT_PASSWORD}]\n",
        "vlm:\n  num_replicas: ${MQTT_PASSWORD}\n",
        "vlm:\n  backend: ${MQTT_PASSWORD}\n",
        "ray:\n  num_cpus: ${MQTT_PASSWORD}\n",
        "cameras:\n  - id: ${MQTT_PASSWORD}\n    source: a.mp4\n",
        "cameras:\n  - id: a\n    source: 'ftp://u:${MQTT_PASSWORD}@h'\n",
        'cameras:\n  - id: a\n    source: "${MQTT_PASSWORD}\\x01"\n',
        'cameras:\n  - id: a\n    source: a.mp4\n    name: "${MQTT_PASSWORD}\\x01"\n',
        "cameras:\n  - id: a\n    source: rtsp://h/1\n    detect_source: 'ftp://u:${MQTT_PASSWORD}@h'\n",
        "cameras:\n  - id: a\n    source: a.mp4\n    detect_source: 'rtsp://u:${MQTT_PASSWORD}@h/2'\n",
    ],
)
def test_secret_never_in_errors(snippet: str) -> None:
    text = snippet if snippet.startswith("cameras") else MINIMAL + snippet
    env = {"MQTT_PASSWORD": SECRET, "PAD": "x" * 4096}
    errors = errors_of(text, env)
    joined = "\n".join(errors)
    for form in (SECRET, "hunter2", "S3cr", repr(SECRET)[1:-1]):
        assert form not in joined
    assert all(re.match(r"^cfg\.yaml:\d+: \S+: ", e) for e in errors), errors


def test_a_detect_source_is_a_live_stream_beside_a_live_source_and_stays_secret() -> None:
    camera = CameraConfig(
        id="gate", source="rtsp://u:main-Pw1@cam/1", detect_source="rtsp://u:sub-Pw2@cam/2"
    )
    assert camera.detect_source == "rtsp://u:sub-Pw2@cam/2" and camera.source_type == "rtsp"
    assert "sub-Pw2" not in repr(camera) and "main-Pw1" not in repr(camera)
    config = Config.model_validate({"cameras": [camera.model_dump()]})
    assert {"main-Pw1", "sub-Pw2"} <= set(config.secret_values())
    refused = {
        "a file camera": {"source": "a.mp4", "detect_source": "rtsp://cam/2"},
        "a file": {"source": "rtsp://cam/1", "detect_source": "sub.mp4"},
        "another scheme": {"source": "rtsp://cam/1", "detect_source": "ftp://cam/2"},
        "no host": {"source": "rtsp://cam/1", "detect_source": "rtsp://"},
        "a control character": {"source": "rtsp://cam/1", "detect_source": "rtsp://cam/\x01"},
    }
    for why, fields in refused.items():
        with pytest.raises(ValueError, match="detect_source"):
            CameraConfig.model_validate({"id": "gate", **fields})
            pytest.fail(why)


def test_models_forbid_extra_and_describe_every_field() -> None:
    for model in _mappings_for(Config, [{}]):
        assert model.model_config.get("extra") == "forbid", model
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
    with pytest.raises(ValueError):
        MQTTConfig(hots="x")  # type: ignore[call-arg]
    assert VLMConfig().default_chain()[0].model == "HuggingFaceTB/SmolVLM-256M-Instruct"


# ------------------------------------------------------------------ check_config_file


def test_check_config_file_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    ok, text = check_config_file(EXAMPLE)
    assert ok, text
    assert text.startswith("ok: 4 cameras (1 disabled), vlm transformers:HuggingFaceTB/")
    assert text.endswith("mqtt mqtt.lan:8883")
    path = tmp_path / "one.yaml"
    path.write_text(MINIMAL + "mqtt: {enabled: false}\n")
    assert check_config_file(path) == (
        True,
        "ok: 1 camera, vlm transformers:HuggingFaceTB/SmolVLM-256M-Instruct, mqtt disabled",
    )


def test_check_config_file_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_PASSWORD", SECRET)
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL + "mqtt:\n  port: ${MQTT_PASSWORD}\n  bogus: 1\n")
    ok, text = check_config_file(path)
    assert not ok
    assert text.splitlines() == [
        f"{path}:5: mqtt.port: Input should be a valid integer, unable to parse string as an "
        "integer",
        f"{path}:6: mqtt.bogus: unknown key; allowed keys: "
        + ", ".join(sorted(MQTTConfig.model_fields)),
    ]
    ok, text = check_config_file(tmp_path / "missing.yaml")
    assert not ok
    assert "missing.yaml: cannot read config" in text


# ------------------------------------------------------------------ redaction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://user:pass@host/stream", "rtsp://user:***@host/stream"),
        ("rtsp://user:p@ss@host:554/s", "rtsp://user:***@host:554/s"),
        ("https://TOKEN123@host/x", "https://***@host/x"),
        ("http://h/x?token=abc&x=1", "http://h/x?token=***&x=1"),
        (
            "http://h/x?a=1&Password=pw&api_key=k#frag",
            "http://h/x?a=1&Password=***&api_key=***#frag",
        ),
        ("http://h/x?sig=s;auth=a", "http://h/x?sig=***;auth=***"),
        (
            "failed: rtsp://a:b@c/d and udp://@239.0.0.1:1234",
            "failed: rtsp://a:***@c/d and udp://@239.0.0.1:1234",
        ),
        ("rtsp://host/stream?channel=1", "rtsp://host/stream?channel=1"),
        ("no url here", "no url here"),
    ],
)
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_redact_known_secrets() -> None:
    text = "auth failed for p@ss/word (p%40ss%2Fword) at rtsp://u:p@ss/word@h/x"
    out = redact(text, ["p@ss/word", "", SecretStr("other")])
    assert "p@ss" not in out and "word" not in out and "%40" not in out
    assert out.startswith("auth failed for *** (***) at rtsp://u:")
    assert redact("token abcdef", [SecretStr("abcdef")]) == "token ***"
    assert redact("", ["x"]) == ""


def test_a_secret_comes_from_a_mounted_file(tmp_path: Path) -> None:
    """`${VAR}` with VAR unset and VAR_FILE set reads the file (a Kubernetes secret volume); an
    unreadable file is a clear error that names VAR_FILE and never a value."""
    secret = tmp_path / "api_key"
    secret.write_text("mounted-key-0123456789\n")
    text = "cameras: [{id: a, source: a.mp4}]\napi: {api_key: '${API_KEY}'}\n"
    config = parse_config_text(text, "c.yaml", {"API_KEY_FILE": str(secret)}, base_dir="/base")
    assert config.api.api_key is not None
    assert config.api.api_key.get_secret_value() == "mounted-key-0123456789"
    # the environment wins over the file when both are set
    both = {"API_KEY": "from-env-0123456789", "API_KEY_FILE": str(secret)}
    config = parse_config_text(text, "c.yaml", both, base_dir="/base")
    assert config.api.api_key is not None
    assert config.api.api_key.get_secret_value() == "from-env-0123456789"
    lines = errors_of(text, {"API_KEY_FILE": str(tmp_path / "missing")})
    assert any("API_KEY_FILE cannot be read" in line for line in lines), lines
