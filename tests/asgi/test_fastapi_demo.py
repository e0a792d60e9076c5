"""The FastAPI demo (demo/fastapi_demo.py) under uvicorn (two worker processes) on the
embedded SQLite store: every tutorial example over HTTP, then in a real headless Chromium
a login kept across a reload and ended by logout, and two devices where one signs the
other out.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import require
from test_asgi_uvicorn import uvicorn

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
PAGE_TIMEOUT_MS = 15_000
FIREFOX_ON_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 "
                      "Firefox/127.0")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("fastapi-demo")
    settings = {"PYTHONPATH": str(REPO_ROOT), "SECRET_KEY": "demo-test-secret-key",
                "SESSION_STORE": f"sqlite:///{workdir}/sessions.sqlite3"}
    with uvicorn(settings, workdir / "uvicorn.log", target="demo.fastapi_demo:app") as url:
        yield url


def log_in(browser: requests.Session, url: str, user: str = "Tom",
           password: str = "123") -> requests.Response:
    return browser.post(f"{url}/login", data={"username": user, "password": password})


def test_cookies_are_set_read_and_deleted(demo: str) -> None:
    browser = requests.Session()
    set_ = browser.get(f"{demo}/setcookie")
    headers = set_.raw.headers.getlist("set-cookie")
    assert any(h.startswith("username=laowang;") and "Max-Age=3600" in h for h in headers)
    assert any(h.startswith("visited=yes;") and "expires=" in h for h in headers)
    assert "laowang" in browser.get(f"{demo}/getcookie").text
    browser.get(f"{demo}/delcookie")
    assert "no cookie" in browser.get(f"{demo}/getcookie").text


def test_a_login_is_kept_shown_once_and_ended_by_logout(demo: str) -> None:
    browser = requests.Session()
    wrong = log_in(browser, demo, password="nope")
    assert "Wrong user name or password" in wrong.text and "Logged in" not in wrong.text
    home = log_in(browser, demo)
    assert "Logged in as Tom" in home.text and "Welcome, Tom" in home.text
    again = browser.get(f"{demo}/")  # on either worker process
    assert "Logged in as Tom" in again.text and "Welcome" not in again.text  # shown once
    browser.post(f"{demo}/logout")
    assert "You are not logged in" in browser.get(f"{demo}/").text


def test_session_values_are_set_read_and_deleted(demo: str) -> None:
    browser = requests.Session()
    browser.get(f"{demo}/session/set", params={"key": "theme", "value": "dark"})
    assert "dark" in browser.get(f"{demo}/session/get", params={"key": "theme"}).text
    browser.get(f"{demo}/session/delete", params={"key": "theme"})
    assert ">None<" in browser.get(f"{demo}/session/get", params={"key": "theme"}).text


def test_the_devices_page_needs_a_login_and_revokes_another_device(demo: str) -> None:
    assert requests.get(f"{demo}/devices").url.endswith("/login?next=/devices")
    laptop, phone = requests.Session(), requests.Session()
    log_in(laptop, demo)
    phone.headers["User-Agent"] = FIREFOX_ON_WINDOWS
    log_in(phone, demo)
    page = laptop.get(f"{demo}/devices").text
    assert page.count("class='device") >= 2 and "Firefox on Windows" in page
    ended = laptop.post(f"{demo}/devices/others")
    assert "other device(s) signed out" in ended.text
    assert "You are not logged in" in phone.get(f"{demo}/").text
    assert "Logged in as Tom" in laptop.get(f"{demo}/").text


# -- a real browser ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    require(shutil.which("chromium"), "chromium (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="playwright (pip install playwright)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


def browser_log_in(page: object, url: str) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    page.goto(f"{url}/")
    page.click("#login")
    page.fill("input[name=username]", "Tom")
    page.fill("input[name=password]", "123")
    page.click("input[type=submit]")
    expect(page.locator("#status")).to_have_text("Logged in as Tom")


@pytest.mark.browser
def test_in_chromium_a_login_survives_a_reload_and_logout_ends_it(demo: str,
                                                                   chromium: object) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(chromium, Browser)
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        browser_log_in(page, demo)
        page.reload()
        expect(page.locator("#status")).to_have_text("Logged in as Tom")
        page.click("#logout")
        expect(page.locator("#status")).to_have_text("You are not logged in")
        page.reload()
        expect(page.locator("#status")).to_have_text("You are not logged in")
    finally:
        context.close()


@pytest.mark.browser
def test_in_chromium_one_device_signs_the_other_out(demo: str, chromium: object) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(chromium, Browser)
    contexts = [chromium.new_context(), chromium.new_context(user_agent=FIREFOX_ON_WINDOWS)]
    try:
        a, b = (context.new_page() for context in contexts)
        for page in (a, b):
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            browser_log_in(page, demo)
        a.goto(f"{demo}/devices")
        row_b = a.locator("#devices tr.device").filter(
            has=a.locator(".user-agent", has_text="Firefox on Windows"))
        row_b.locator("button.revoke").click()
        expect(a.locator(".flash")).to_have_text("That device is signed out")
        expect(a.locator("#devices .user-agent", has_text="Firefox on Windows")).to_have_count(0)
        b.reload()
        expect(b.locator("#status")).to_have_text("You are not logged in")
        a.goto(f"{demo}/")
        expect(a.locator("#status")).to_have_text("Logged in as Tom")
    finally:
        for context in contexts:
            context.close()
