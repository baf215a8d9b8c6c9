"""A real Home Assistant core for tests, in its own virtual environment (`make ha-venv`).

Home Assistant's last release for Python 3.11 is 2024.3; its pinned dependencies (aiohttp,
paho-mqtt 1.x, ...) differ from the project's, so it lives in `.venv-ha` and runs as a
subprocess (`hass -c <config> --skip-pip`). The harness writes a configuration folder with:
the MQTT integration's config entry (pointed at the test's mosquitto), liveobject's blueprint,
automations that use it, and a small custom notify platform (`capture`) that appends every
notification it is given to `notifications.jsonl` — the stand-in for a phone.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.network import free_port, wait_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
HA_VENV = REPO / ".venv-ha"
BLUEPRINT = (
    REPO / "configs/home_assistant/blueprints/automation/liveobject/notify_camera_event.yaml"
)

CAPTURE_MANIFEST = {
    "domain": "capture",
    "name": "Capture notifications (tests)",
    "version": "1.0.0",
    "documentation": "https://example.invalid/capture",
    "codeowners": [],
    "requirements": [],
    "iot_class": "local_push",
}

# A legacy notify platform: `notify: [{platform: capture, name: phone}]` gives `notify.phone`.
CAPTURE_NOTIFY = '''
"""Appends each notification (title, message, data) as one JSON line to notifications.jsonl."""
import json
from homeassistant.components.notify import BaseNotificationService


def get_service(hass, config, discovery_info=None):
    return CaptureService(hass.config.path("notifications.jsonl"), config.get("name"))


class CaptureService(BaseNotificationService):
    def __init__(self, path, name):
        self._path = path
        self._name = name

    def send_message(self, message="", **kwargs):
        line = {"service": self._name, "message": message, "title": kwargs.get("title"),
                "data": kwargs.get("data")}
        with open(self._path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\\n")
'''


def hass_binary() -> Path:
    """`.venv-ha/bin/hass`; fails with the command that makes it when it is missing."""
    binary = HA_VENV / "bin" / "hass"
    if not binary.exists():
        raise AssertionError(f"{binary.relative_to(REPO)} is missing: run `make ha-venv`")
    return binary


class HomeAssistant:
    """One Home Assistant core process on a free loopback port, with its own config folder."""

    def __init__(
        self,
        config_dir: Path,
        mqtt_port: int,
        automations: list[dict[str, Any]],
        notify_services: tuple[str, ...] = ("phone",),
    ) -> None:
        self.config_dir = config_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config(mqtt_port, automations, notify_services)

    # ------------------------------------------------------------------ config folder
    def _write_config(
        self, mqtt_port: int, automations: list[dict[str, Any]], notify: tuple[str, ...]
    ) -> None:
        root = self.config_dir
        blueprints = root / "blueprints/automation/liveobject"
        blueprints.mkdir(parents=True)
        shutil.copy(BLUEPRINT, blueprints / BLUEPRINT.name)
        capture = root / "custom_components/capture"
        capture.mkdir(parents=True)
        (capture / "manifest.json").write_text(json.dumps(CAPTURE_MANIFEST))
        (capture / "__init__.py").write_text('"""Test notify platform."""\n')
        (capture / "notify.py").write_text(CAPTURE_NOTIFY)
        storage = root / ".storage"
        storage.mkdir()
        (storage / "core.config_entries").write_text(json.dumps(_mqtt_entry(mqtt_port)))
        # Onboarding done but for the owner, whom `sign_in_url` creates (for the frontend).
        (storage / "onboarding").write_text(
            json.dumps(
                {
                    "version": 4,
                    "minor_version": 1,
                    "key": "onboarding",
                    "data": {"done": ["core_config", "analytics", "integration"]},
                }
            )
        )
        config = {
            "homeassistant": {
                "name": "liveobject test",
                "latitude": 52.52,
                "longitude": 13.40,
                "elevation": 34,
                "unit_system": "metric",
                "time_zone": "UTC",
                "country": "DE",
                "currency": "EUR",
            },
            "http": {"server_host": "127.0.0.1", "server_port": self.port},
            "logger": {"default": "warning", "logs": {"homeassistant.bootstrap": "info"}},
            "automation": automations,
            "notify": [{"platform": "capture", "name": name} for name in notify],
        }
        (root / "configuration.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    # ------------------------------------------------------------------ process
    @property
    def log_path(self) -> Path:
        return self.config_dir / "home-assistant.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        self.proc = subprocess.Popen(
            [str(hass_binary()), "-c", str(self.config_dir), "--skip-pip", "--log-no-color"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    def exited(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"Home Assistant exited with {self.proc.returncode}"
        return None

    def wait_started(self, timeout: float = 120.0) -> None:
        """Until Home Assistant says it has started (every integration set up) and its HTTP
        server answers (it starts without one when its port cannot be bound)."""
        wait_for(
            lambda: "Home Assistant initialized" in self.log() and self._listening(),
            timeout,
            "Home Assistant to start and listen on its port",
            interval=0.5,
            abort=self.exited,
            context=lambda: self.log()[-4000:],
        )

    def _listening(self) -> bool:
        try:
            wait_port(self.port, timeout=0.5)
        except TimeoutError:
            return False
        return True

    def sign_in_url(self) -> str:
        """A frontend URL that signs the browser in: the owner is created through onboarding
        (its last step) and the frontend redeems the one-time code itself."""
        client_id = f"{self.url}/"
        response = httpx.post(
            f"{self.url}/api/onboarding/users",
            json={
                "client_id": client_id,
                "name": "Owner",
                "username": "owner",
                "password": uuid.uuid4().hex,
                "language": "en",
            },
            timeout=30,
        )
        response.raise_for_status()
        state = base64.b64encode(
            json.dumps({"hassUrl": self.url, "clientId": client_id}).encode()
        ).decode()
        code = response.json()["auth_code"]
        return f"{self.url}/?auth_callback=1&code={code}&state={state}"

    def notifications(self) -> list[dict[str, Any]]:
        path = self.config_dir / "notifications.jsonl"
        if not path.exists():
            return []
        # whole lines only: Home Assistant may be writing the next one
        return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line]

    def stop(self) -> None:
        """SIGTERM (Home Assistant stops cleanly), then SIGKILL of its process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _mqtt_entry(port: int) -> dict[str, Any]:
    """`.storage/core.config_entries` with one MQTT entry, as the UI's config flow writes it."""
    entry = {
        "entry_id": uuid.uuid4().hex,
        "version": 1,
        "minor_version": 1,
        "domain": "mqtt",
        "title": f"127.0.0.1:{port}",
        "data": {"broker": "127.0.0.1", "port": port, "discovery": True},
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
    }
    return {
        "version": 1,
        "minor_version": 1,
        "key": "core.config_entries",
        "data": {"entries": [entry]},
    }


# Elements matching a selector anywhere in the page, shadow roots included (the frontend is
# made of web components).
DEEP_QUERY = """
const found = [];
const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    if (el.matches(arguments[0])) found.push(el);
    if (el.shadowRoot) walk(el.shadowRoot);
  }
};
walk(document);
return found;
"""

SHOW_NOTIFICATIONS = """
const app = document.querySelector('home-assistant');
const main = app && app.shadowRoot && app.shadowRoot.querySelector('home-assistant-main');
if (!main) return false;
main.dispatchEvent(new CustomEvent('hass-show-notifications', {bubbles: true, composed: true}));
return true;
"""


def screenshot_notifications(browser: Any, ha: HomeAssistant, count: int, path: Path) -> list[str]:
    """Sign in to Home Assistant's frontend, open the notification drawer, wait until `count`
    notifications show with their pictures loaded, save a screenshot; their texts."""
    browser.set_window_size(1100, 900)
    browser.get(ha.sign_in_url())
    wait_for(
        lambda: browser.execute_script(SHOW_NOTIFICATIONS),
        60,
        "the frontend to load",
        interval=0.5,
    )

    def shown() -> list[str]:
        items = browser.execute_script(DEEP_QUERY, "persistent-notification-item")
        images = browser.execute_script(DEEP_QUERY, "ha-markdown img, ha-markdown-element img")
        ready = len(items) == count and len(images) == count
        if ready and all(
            browser.execute_script("return arguments[0].naturalWidth", i) for i in images
        ):
            return [item.text or item.get_attribute("innerText") for item in items]
        if not items:
            browser.execute_script(SHOW_NOTIFICATIONS)
        return []

    texts: list[str] = wait_for(shown, 60, f"{count} notifications with pictures", interval=0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(path)), f"no screenshot written to {path}"
    return texts


def blueprint_automation(
    automation_id: str, cameras: list[str], notify_service: str, **inputs: Any
) -> dict[str, Any]:
    """An automation built from liveobject's blueprint, as the UI writes it."""
    return {
        "id": automation_id,
        "alias": automation_id,
        "use_blueprint": {
            "path": f"liveobject/{BLUEPRINT.name}",
            "input": {"cameras": cameras, "notify_service": notify_service, **inputs},
        },
    }
