"""The demo in a real headless Chromium: what a person with a browser experiences.

Login through the form, a reload, a browser restart with a permanent session (kept) and
with a browser-session cookie (dropped), and logout with the page's POST buttons. Selenium
drives the system's chromium and chromedriver; it never downloads a browser or driver.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from live_server import LiveDemo, live_demo
from servers import require

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
THIRTY_ONE_DAYS = 31 * 24 * 3600
PAGE_TIMEOUT = 15  # seconds a page may take to show what a step waits for

pytestmark = pytest.mark.browser

pytest.importorskip("selenium", reason="selenium (pip install selenium)")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    require(shutil.which("chromium"), "chromium (apt-get install chromium chromium-driver)")
    require(shutil.which("chromedriver"), "chromedriver (apt-get install chromium-driver)")
    with live_demo({}, tmp_path_factory.mktemp("demo-browser")) as server:
        yield server


@contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    """A headless Chromium using ``profile`` as its user data dir; quit afterwards."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager is never asked to download anything.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _status(driver: WebDriver) -> str | None:
    try:
        return str(driver.find_element(By.ID, "status").text)
    except WebDriverException:  # not there yet, or the page is being replaced
        return None


def expect_status(driver: WebDriver, expected: str) -> None:
    """Wait until the page says ``expected`` (a click does not wait for the next page)."""
    try:
        WebDriverWait(driver, PAGE_TIMEOUT).until(lambda d: _status(d) == expected)
    except TimeoutException:
        raise AssertionError(f"page status is {_status(driver)!r}, expected {expected!r} "
                             f"at {driver.current_url}") from None


def expect_element(driver: WebDriver, by: str, value: str) -> WebElement:
    try:
        return WebDriverWait(driver, PAGE_TIMEOUT).until(lambda d: d.find_element(by, value))
    except TimeoutException:
        raise AssertionError(f"no {value!r} on {driver.current_url}") from None


def log_in_with_the_form(driver: WebDriver, url: str) -> None:
    driver.get(f"{url}/")
    expect_status(driver, "You are not logged in")
    driver.find_element(By.ID, "login").click()
    expect_element(driver, By.NAME, "username").send_keys("Tom")
    driver.find_element(By.NAME, "password").send_keys("123")
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    expect_status(driver, "Logged in as Tom")


def session_cookie(driver: WebDriver) -> dict[str, Any] | None:
    return next((c for c in driver.get_cookies() if c["name"] == "session"), None)


def test_permanent_session_survives_a_browser_restart(demo: LiveDemo, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    with chromium(profile) as driver:
        log_in_with_the_form(driver, demo.url)
        assert "You were logged in" in driver.page_source
        driver.refresh()
        expect_status(driver, "Logged in as Tom")
        assert "You were logged in" not in driver.page_source
        driver.get(f"{demo.url}/permanent")
        assert "kept for 31 days" in driver.page_source
        cookie = session_cookie(driver)
        assert cookie is not None and cookie["httpOnly"]
        assert abs(cookie["expiry"] - (time.time() + THIRTY_ONE_DAYS)) < 3600
    with chromium(profile) as driver:  # a new browser process, same profile
        driver.get(f"{demo.url}/")
        assert session_cookie(driver) is not None
        expect_status(driver, "Logged in as Tom")
        assert "Your session is kept until" in driver.page_source


def test_browser_session_cookie_ends_with_the_browser(demo: LiveDemo, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    with chromium(profile) as driver:
        log_in_with_the_form(driver, demo.url)
        cookie = session_cookie(driver)
        assert cookie is not None and "expiry" not in cookie
    # A fresh profile starts on the New Tab page, so Chromium discards browser-session
    # cookies when it exits. (With "Continue where you left off" it would restore them,
    # and such a user would stay logged in: an idle timeout is the server-side answer.)
    with chromium(profile) as driver:
        driver.get(f"{demo.url}/")
        assert session_cookie(driver) is None
        expect_status(driver, "You are not logged in")


def test_logout_removes_the_cookie(demo: LiveDemo, tmp_path: Path) -> None:
    with chromium(tmp_path / "profile") as driver:
        log_in_with_the_form(driver, demo.url)
        # The page's log-out button: a form that POSTs (a GET answers 405).
        button = driver.find_element(By.ID, "logout")
        assert button.tag_name == "button"
        assert button.find_element(By.XPATH, "ancestor::form").get_attribute("method") == "post"
        button.click()
        expect_status(driver, "You are not logged in")
        assert "You were logged out" in driver.page_source
        assert session_cookie(driver) is None
        # Logged out: no log-out button anywhere, a log-in link instead.
        assert driver.find_elements(By.ID, "nav-logout") == []
        assert driver.find_elements(By.ID, "logout") == []
        driver.get(f"{demo.url}/logout")  # as a link elsewhere would
        assert "Method not allowed" in driver.title


def test_the_navigation_log_out_button(demo: LiveDemo, tmp_path: Path) -> None:
    with chromium(tmp_path / "profile") as driver:
        driver.get(f"{demo.url}/cart")
        assert driver.find_elements(By.ID, "nav-logout") == []
        log_in_with_the_form(driver, demo.url)
        driver.get(f"{demo.url}/cart")
        expect_element(driver, By.ID, "nav-logout").click()
        expect_status(driver, "You are not logged in")
        assert session_cookie(driver) is None
