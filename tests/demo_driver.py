"""Drive the demo page in headless Chromium (Selenium + the system's chromedriver).

Used by tests/test_demo_browser.py, and runnable against any served demo to take the README's picture:

    python tests/demo_driver.py http://127.0.0.1:7860 PHOTO.png LANDMARKS.npy BLANK.png SHOT.png [guided]
"""

from __future__ import annotations

import io
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "chromium-driver")


def find_browser() -> tuple[str | None, str | None]:
    """(browser, driver) executables, None where missing."""
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = next((p for p in map(shutil.which, DRIVERS) if p), None)
    if driver is None and Path("/usr/lib/chromium/chromedriver").is_file():
        driver = "/usr/lib/chromium/chromedriver"
    return browser, driver


@dataclass
class Visit:
    """What the page did: messages, the .glb URL the viewer loaded, relit images before and after."""

    no_face_message: str = ""
    result_message: str = ""
    glb_url: str = ""
    glb_bytes: bytes = b""
    relit_before: bytes = b""
    relit_after: bytes = b""
    resources: list[str] = field(default_factory=list)


def _wait(condition, timeout: float, what: str, poll: float = 0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:  # loopback only
        return response.read()


def drive(url: str, photo: Path, landmarks: Path, blank: Path, screenshot: Path, timeout: float = 240,
          preset: str | None = None) -> Visit:
    """Open the page; reconstruct ``blank`` (no face: expect the error), then ``photo`` with ``landmarks``
    (with ``preset``, a label of the preset radio, when given); move the light's azimuth; save a
    screenshot of the finished page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser, driver_path = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1900", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    visit = Visit()
    try:
        driver.get(url)
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#run"), 60, "the page")

        def message() -> str:
            found = driver.find_elements(By.CSS_SELECTOR, "#message")
            return found[0].text if found else ""

        def upload(elem_id: str, path: Path) -> None:
            for clear in driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} button[aria-label=Clear]"):
                clear.click()  # a file is there already: remove it to get the file input back
            field_ = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} input[type=file]"), 30,
                           f"the file input of #{elem_id}")[0]
            field_.send_keys(str(path))
            _wait(lambda: path.stem in driver.find_element(By.CSS_SELECTOR, f"#{elem_id}").text, 30,
                  f"{path.name} in #{elem_id}")

        upload("photo-upload", blank)
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        visit.no_face_message = _wait(lambda: message() if "Error" in message() else "", timeout, "the no-face error")

        upload("photo-upload", photo)
        upload("landmarks-upload", landmarks)
        if preset:
            driver.find_element(By.XPATH, f"//*[@id='preset']//label[normalize-space(.)='{preset}']").click()
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        visit.result_message = _wait(lambda: message() if "Identity similarity" in message() else "", timeout,
                                     "the reconstruction")

        def relit_src() -> str:
            images = driver.find_elements(By.CSS_SELECTOR, "#relit img")
            return images[0].get_attribute("src") if images else ""

        before = _wait(relit_src, 30, "the relit image")
        visit.relit_before = _fetch(before)

        def glb() -> str:
            names = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)")
            return next((n for n in names if n.split("?")[0].endswith(".glb")), "")

        visit.glb_url = _wait(glb, 60, "the viewer's .glb request")
        visit.glb_bytes = _fetch(visit.glb_url)

        number = driver.find_element(By.CSS_SELECTOR, "#light-azimuth input[type=number]")
        number.send_keys(Keys.CONTROL, "a")
        number.send_keys("70", Keys.ENTER)
        after = _wait(lambda: relit_src() if relit_src() not in ("", before) else "", 60, "a new relit image")
        visit.relit_after = _fetch(after)
        time.sleep(1.0)  # let the viewer draw before the picture
        driver.save_screenshot(str(screenshot))
        visit.resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    finally:
        driver.quit()
    return visit


if __name__ == "__main__":
    result = drive(sys.argv[1], *(Path(a) for a in sys.argv[2:6]), preset=sys.argv[6] if len(sys.argv) > 6 else None)
    print(result.no_face_message, result.result_message, result.glb_url, len(io.BytesIO(result.glb_bytes).getvalue()),
          sep="\n")
