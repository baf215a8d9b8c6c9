"""configs/serve.yaml (for `serve deploy`) names builders that build both apps from a config."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from ray.serve import Application

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def example_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FRONT_DOOR_PASSWORD", "DOORBELL_PASSWORD", "MQTT_PASSWORD", "LIVEOBJECT_API_KEY"):
        monkeypatch.setenv(name, "not-a-real-secret")


def test_serve_config_builds_both_apps(example_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    serve_config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    names = []
    for app in serve_config["applications"]:
        module_name, _, attr = app["import_path"].partition(":")
        builder = getattr(importlib.import_module(module_name), attr)
        assert isinstance(builder(app["args"]), Application)
        names.append(app["name"])
    assert names == ["vlm", "api"]
