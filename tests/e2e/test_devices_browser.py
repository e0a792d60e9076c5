"""Two devices in real headless Chromium: revoking device B from device A's "Your devices"
page logs B out on its next request.

Each device is its own Chromium process with its own profile (so its own cookie jar),
started exactly as ``test_browser.py`` starts one, and told apart on the page by the
browser name it sends.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import LiveDemo, live_demo
from servers import require
from test_browser import (
    PAGE_TIMEOUT,
    chromium,
    expect_element,
    expect_status,
    log_in_with_the_form,
    session_cookie,
)

pytestmark = pytest.mark.browser

from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

PASSWORD = "123"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[LiveDemo]:
    """A demo of its own for each test: Tom's sessions and password start afresh."""
    require(shutil.which("chromium"), "chromium (apt-get install chromium chromium-driver)")
    require(shutil.which("chromedriver"), "chromedriver (apt-get install chromium-driver)")
    # Four sync workers: each Chromium keeps a spare connection open, and a sync
    # worker holding an idle connection serves nobody else until it times out.
    with live_demo({}, tmp_path / "demo", workers=4) as server:
        yield server


@pytest.fixture
def two_devices(tmp_path: Path) -> Iterator[tuple[WebDriver, WebDriver]]:
    """Devices A and B: two Chromium processes, two profiles, two browser names."""
    with chromium(tmp_path / "profile-a") as a, chromium(tmp_path / "profile-b") as b:
        for driver, name in ((a, "device-A"), (b, "device-B")):
            user_agent = str(driver.execute_script("return navigator.userAgent"))
            driver.execute_cdp_cmd("Network.setUserAgentOverride",
                                   {"userAgent": f"{user_agent} {name}"})
        yield a, b


def device_rows(driver: WebDriver) -> list[WebElement]:
    return list(driver.find_elements(By.CSS_SELECTOR, "#devices tr.device"))


def row_of(driver: WebDriver, name: str) -> WebElement:
    for row in device_rows(driver):
        if row.find_element(By.CLASS_NAME, "user-agent").text.endswith(name):
            return row
    raise AssertionError(f"{name} is not listed on {driver.current_url}")


def listed_names(driver: WebDriver) -> list[str]:
    return [row.find_element(By.CLASS_NAME, "user-agent").text.rsplit(" ", 1)[-1]
            for row in device_rows(driver)]


def _flash_text(driver: WebDriver) -> str:
    try:
        return str(driver.find_element(By.CLASS_NAME, "flashes").text)
    except WebDriverException:
        return ""


def expect_flash(driver: WebDriver, text: str) -> None:
    try:
        WebDriverWait(driver, PAGE_TIMEOUT).until(lambda d: text in _flash_text(d))
    except TimeoutException:
        raise AssertionError(f"no flash {text!r} at {driver.current_url}; "
                             f"shown: {_flash_text(driver)!r}") from None


def confirm_with_password(driver: WebDriver, password: str = PASSWORD) -> None:
    expect_element(driver, By.NAME, "password").send_keys(password)
    driver.find_element(By.ID, "confirm").click()


def test_device_a_revokes_device_b(demo: LiveDemo,
                                   two_devices: tuple[WebDriver, WebDriver]) -> None:
    a, b = two_devices
    log_in_with_the_form(a, demo.url)
    log_in_with_the_form(b, demo.url)

    a.get(f"{demo.url}/")
    a.find_element(By.LINK_TEXT, "devices").click()
    expect_element(a, By.ID, "devices")
    assert sorted(listed_names(a)) == ["device-A", "device-B"]
    mine = row_of(a, "device-A")
    assert "current" in (mine.get_attribute("class") or "")
    assert "this device" in mine.text
    assert "this device" not in row_of(a, "device-B").text

    row_of(a, "device-B").find_element(By.CSS_SELECTOR, "button.revoke").click()
    assert "device-B" in expect_element(a, By.ID, "question").text
    confirm_with_password(a)
    expect_flash(a, "Signed out 1 session")
    assert listed_names(a) == ["device-A"]

    # B's next request: logged out, and its dead cookie is cleared.
    b.get(f"{demo.url}/")
    expect_status(b, "You are not logged in")
    assert session_cookie(b) is None
    a.get(f"{demo.url}/")
    expect_status(a, "Logged in as Tom")


def test_a_password_change_on_device_a_logs_device_b_out(
        demo: LiveDemo, two_devices: tuple[WebDriver, WebDriver]) -> None:
    a, b = two_devices
    log_in_with_the_form(a, demo.url)
    log_in_with_the_form(b, demo.url)

    a.get(f"{demo.url}/password")
    expect_element(a, By.NAME, "current_password").send_keys(PASSWORD)
    new_password = "a much longer password"
    a.find_element(By.NAME, "new_password").send_keys(new_password)
    a.find_element(By.NAME, "confirm_password").send_keys(new_password)
    a.find_element(By.ID, "change").click()
    expect_flash(a, "Your password was changed. Signed out 1 other session.")
    assert listed_names(a) == ["device-A"]

    b.get(f"{demo.url}/")
    expect_status(b, "You are not logged in")
    a.get(f"{demo.url}/")
    expect_status(a, "Logged in as Tom")
