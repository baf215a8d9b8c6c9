"""The review page (`GET /`) in a real headless Chromium (Debian's, driven by its chromedriver).

The API app runs under a real uvicorn over a real EventStore with JPEG thumbnails. Without a
key: the page loads with no console errors, lists the seeded events with thumbnails that decode
and alt text from their descriptions, the camera, object and search filters change the list, a
newly saved event appears without a reload, the keyboard moves through it, `/#event=<id>` (a
notification's tap) marks that event, it fits a phone; a
screenshot is taken (into a temp folder; `make screenshot` refreshes docs/review-page.png).
With a key: the page asks for it once, refuses a wrong one, works with the right one, and the key
never appears in a URL.
"""

from __future__ import annotations

import io
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from pipelines.config import Config
from pipelines.events import Event, utcnow
from pipelines.storage import EventStore
from serve_apps.api import build_api
from serve_apps.api.local import LocalStoreClient
from tests.support.browser import wait
from tests.support.network import free_port
from tests.support.uvicorn_server import Uvicorn

pytestmark = pytest.mark.integration

# where the screenshot goes when set (`make screenshot`: docs/review-page.png); else tmp_path, so
# a test run leaves the tracked file alone
SCREENSHOT_ENV = "LIVEOBJECT_REVIEW_SCREENSHOT"
KEY = "review-page-key-0123456789"
CAMERAS = {"front": "Front Door", "drive": "Driveway", "garden": "Garden"}
SCENES = [
    (
        "front",
        "A courier in a blue jacket leaves a package at the front door",
        ("person", "package"),
        (70, 110, 170),
    ),
    ("drive", "A red car pulls into the driveway and parks", ("vehicle",), (170, 60, 60)),
    ("garden", "A cat walks along the garden fence", ("animal",), (80, 150, 80)),
    ("front", "A person in a grey hoodie rings the doorbell", ("person",), (120, 120, 130)),
    ("drive", "A white van stops briefly on the street", ("vehicle",), (200, 200, 190)),
    ("garden", "A person waters the plants by the shed", ("person",), (90, 130, 60)),
]


def jpeg(color: tuple[int, int, int], label: str) -> bytes:
    image = Image.new("RGB", (320, 180), color)
    draw = ImageDraw.Draw(image)
    draw.rectangle((110, 50, 210, 160), outline=(255, 255, 255), width=4)
    draw.text((10, 10), label, fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def seeded(now: datetime, count: int = 24) -> tuple[list[Event], dict[str, bytes]]:
    events, thumbs = [], {}
    for i in range(count):
        camera, text, objects, color = SCENES[i % len(SCENES)]
        event = Event(
            camera_id=camera,
            camera_name=CAMERAS[camera],
            description=text,
            objects_detected=objects,
            confidence=80,
            source_type="rtsp",
            timestamp=now - timedelta(minutes=17 * i + 3),
            is_doorbell_ring=True if "doorbell" in text else None,
            provider_used="reused" if i % 5 == 4 else "openai:gpt-4o-mini",
        )
        events.append(event)
        thumbs[event.event_id] = jpeg(color, f"{CAMERAS[camera]} #{i}")
    return events, thumbs


class Site:
    """Store + API app under uvicorn (a thread here), stopped by close()."""

    def __init__(self, folder: Path, api_key: str | None) -> None:
        self.store = EventStore(folder / "data")
        self.events, thumbs = seeded(utcnow())
        self.store.append(self.events, thumbs)
        self.port = free_port()
        api: dict[str, Any] = {
            "base_url": f"http://127.0.0.1:{self.port}",
            "stream": {"heartbeat_s": 2, "poll_s": 0.1},
        }
        if api_key:
            api["api_key"] = api_key
        config = Config.model_validate(
            {
                "cameras": [{"id": c, "name": n, "source": f"{c}.mp4"} for c, n in CAMERAS.items()],
                "api": api,
            }
        )
        # its graceful shutdown is 2 s: the page's open stream must not hold it
        self.server = Uvicorn(build_api(LocalStoreClient(self.store, config), config), self.port)
        self.url = f"{self.server.url}/"

    def add(self, description: str, camera: str = "front") -> Event:
        event = Event(
            camera_id=camera,
            camera_name=CAMERAS[camera],
            description=description,
            objects_detected=("person",),
            confidence=90,
            source_type="rtsp",
            timestamp=utcnow(),
        )
        self.store.append([event], {event.event_id: jpeg((200, 150, 40), "live")})
        return event

    def close(self) -> None:
        self.server.stop()
        self.store.close()


def shown_ids(driver: Any) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#events li')].map(li => li.dataset.eventId)"
    )


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def thumbnails_decoded(driver: Any) -> bool:
    """Every listed thumbnail scrolled into view, loaded and decoded (naturalWidth > 0)."""
    return bool(
        driver.execute_script(
            "const imgs = [...document.querySelectorAll('#events img')];"
            "imgs.forEach(i => i.scrollIntoView());"
            "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth === 320);"
        )
    )


def wait_thumbnails(driver: Any, what: str) -> None:
    """Wait until thumbnails_decoded; a timeout says which images were not, and the console."""
    from selenium.common.exceptions import TimeoutException

    try:
        wait(driver, thumbnails_decoded, what)
    except TimeoutException:
        images = driver.execute_script(
            "return [...document.querySelectorAll('#events img')].map(i =>"
            " [i.src.replace(/token=[^&]*/, 'token=…'), i.complete, i.naturalWidth]);"
        )
        not_yet = [i for i in images if not (i[1] and i[2] == 320)]
        raise AssertionError(
            f"waiting for {what}: {len(not_yet)} of {len(images)} not decoded {not_yet[:5]}; "
            f"console: {console_errors(driver)}"
        ) from None


def newest_first(events: list[Event]) -> list[str]:
    ordered = sorted(events, key=lambda e: (e.timestamp, e.event_id), reverse=True)
    return [e.event_id for e in ordered]


def test_page_without_key(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    site = Site(tmp_path, api_key=None)
    try:
        browser.get(site.url)
        expected = newest_first(site.events)
        wait(browser, lambda d: shown_ids(d) == expected, "the seeded events, newest first")
        wait_thumbnails(browser, "every thumbnail to decode")
        alts = browser.execute_script(
            "return [...document.querySelectorAll('#events img')].map(i => i.alt)"
        )
        by_id = {e.event_id: e for e in site.events}
        assert alts == [by_id[i].description for i in expected]
        summary = browser.find_element(By.ID, "summary-text")
        wait(browser, lambda d: summary.text.startswith("24 events"), "the 24 h summary")
        cameras = browser.find_element(By.ID, "cameras").text
        assert all(name in cameras for name in CAMERAS.values())
        assert browser.find_element(By.ID, "key-button").is_displayed() is False
        filters_and_search_change_the_list(browser, site.events)
        new_event_appears_live(browser, site)
        keyboard_moves_through_the_events(browser)
        browser.execute_script("window.scrollTo(0, 0)")
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "review-page.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)), f"no screenshot written to {shot}"
        assert Image.open(shot).size[0] > 0
        assert console_errors(browser) == []
        a_linked_event_is_shown(browser, site)
        # a phone: one column, nothing wider than the screen
        browser.set_window_size(390, 844)
        wait(
            browser,
            lambda d: d.execute_script(
                "return document.documentElement.scrollWidth <= window.innerWidth"
            ),
            "the page to fit a phone",
        )
    finally:
        site.close()


def filters_and_search_change_the_list(browser: Any, events: list[Event]) -> None:
    """Camera, object and search filters give exactly what the contract says, then reset."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "filter-camera")).select_by_value("drive")
    drive = newest_first([e for e in events if e.camera_id == "drive"])
    wait(browser, lambda d: shown_ids(d) == drive, "the driveway's events only")
    Select(browser.find_element(By.ID, "filter-camera")).select_by_value("")
    Select(browser.find_element(By.ID, "filter-object")).select_by_value("person")
    people = newest_first([e for e in events if "person" in e.objects_detected])
    wait(browser, lambda d: shown_ids(d) == people, "events with a person")
    Select(browser.find_element(By.ID, "filter-object")).select_by_value("")
    browser.find_element(By.ID, "filter-q").send_keys("RED car", Keys.ENTER)
    red = newest_first([e for e in events if "red car" in e.description.lower()])
    wait(browser, lambda d: shown_ids(d) == red, "the search results")
    browser.find_element(By.CSS_SELECTOR, "button[type=reset]").click()
    wait(browser, lambda d: shown_ids(d) == newest_first(events), "the full list again")


def new_event_appears_live(browser: Any, site: Site) -> None:
    """A newly stored event shows up on top, its thumbnail decoded, without a reload."""
    from selenium.webdriver.common.by import By

    browser.execute_script("window.__sameDocument = true")
    wait(browser, lambda d: "Live" in d.find_element(By.ID, "live").text, "the live stream")
    fresh = site.add("A man in a yellow raincoat waves at the camera")
    wait(browser, lambda d: shown_ids(d)[:1] == [fresh.event_id], "the new event on top")
    assert browser.execute_script("return window.__sameDocument") is True
    wait_thumbnails(browser, "the new thumbnail to decode")


def keyboard_moves_through_the_events(browser: Any) -> None:
    """`/` goes to the search box; j/k move the focus through the events."""
    from selenium.webdriver.common.action_chains import ActionChains

    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    ActionChains(browser).send_keys("/").perform()
    assert browser.switch_to.active_element.get_attribute("id") == "filter-q"
    browser.execute_script("document.activeElement.blur()")
    ActionChains(browser).send_keys("j", "j", "j", "k").perform()
    focused = browser.switch_to.active_element.get_attribute("data-event-id")
    assert focused == shown_ids(browser)[1]


def linked(driver: Any) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#events li.linked')].map(li => li.dataset.eventId)"
    )


def a_linked_event_is_shown(browser: Any, site: Site) -> None:
    """`/#event=<id>` (a notification's tap) marks and focuses that event, fetching it when
    the list (filtered) does not hold it; an id no longer stored is said so."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    oldest = newest_first(site.events)[-1]
    browser.get("about:blank")  # then a fresh load, as from the phone (not a hash change)
    browser.get(f"{site.url}#event={oldest}")
    wait(browser, lambda d: linked(d) == [oldest], "the linked event marked")
    assert browser.switch_to.active_element.get_attribute("data-event-id") == oldest
    Select(browser.find_element(By.ID, "filter-camera")).select_by_value("drive")
    drive = newest_first([e for e in site.events if e.camera_id == "drive"])
    wait(browser, lambda d: shown_ids(d) == drive, "the driveway's events only")
    front = next(e for e in site.events if e.camera_id == "front")
    browser.execute_script("location.hash = arguments[0]", f"#event={front.event_id}")
    wait(browser, lambda d: linked(d) == [front.event_id], "a linked event outside the filter")
    assert front.event_id in shown_ids(browser)
    browser.execute_script("location.hash = '#event=00000000-0000-4000-8000-000000000000'")
    status = browser.find_element(By.ID, "list-status")
    wait(browser, lambda d: "no longer stored" in status.text, "the missing event said")


def test_page_with_key(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    site = Site(tmp_path, api_key=KEY)
    try:
        browser.get(site.url)
        dialog = browser.find_element(By.ID, "key-dialog")
        wait(browser, lambda d: dialog.is_displayed(), "the key prompt")
        assert shown_ids(browser) == []
        assert console_errors(browser) == []  # nothing was asked of the API without the key
        field = browser.find_element(By.ID, "key-input")
        field.send_keys("not-the-key-0123456789", Keys.ENTER)
        error = browser.find_element(By.ID, "key-error")
        wait(browser, lambda d: dialog.is_displayed() and "refused" in error.text, "a refusal")
        field.send_keys(KEY, Keys.ENTER)
        expected = newest_first(site.events)
        wait(browser, lambda d: shown_ids(d) == expected, "the events with the key")
        assert not dialog.is_displayed()
        wait_thumbnails(browser, "every thumbnail to decode (signed URLs)")
        assert browser.execute_script("return sessionStorage.getItem('liveobject.apiKey')") == KEY
        wait(browser, lambda d: "Live" in d.find_element(By.ID, "live").text, "the live stream")
        fresh = site.add("A neighbour drops off a parcel", camera="garden")
        wait(browser, lambda d: shown_ids(d)[:1] == [fresh.event_id], "the new event with a key")
        urls = browser.execute_script(
            "return [location.href, ...performance.getEntriesByType('resource').map(r => r.name)]"
        )
        assert urls and not [u for u in urls if KEY in u]
        # after the one refused key, no more errors
        errors = [m for m in console_errors(browser) if "401" not in m]
        assert errors == []
    finally:
        site.close()
