"""Two devices in real headless Chromium: revoking device B from device A's "Your devices"
page logs B out on its next request, and B is told why.

One Chromium (the system's, never a downloaded one) with two browser contexts: each
context has its own cookie jar, as two devices do, and sends its own browser name, by
which the devices page tells them apart: A is this Chromium on Linux, B says it is
Firefox on Windows. Playwright drives it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import LiveDemo, live_demo
from servers import require

pytestmark = pytest.mark.browser

pytest.importorskip("playwright", reason="playwright (pip install playwright)")
from playwright.sync_api import (  # noqa: E402
    Browser,
    Locator,
    Page,
    expect,
    sync_playwright,
)

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "123"
PAGE_TIMEOUT_MS = 15_000  # how long a page may take to show what a step waits for
FIREFOX_ON_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 "
                      "Firefox/127.0")
DEVICE_A, DEVICE_B = "Chrome on Linux", "Firefox on Windows"
SIGNED_OUT_ELSEWHERE = "You were signed out from another device"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[LiveDemo]:
    """A demo of its own for each test: Tom's sessions and password start afresh."""
    require(shutil.which("chromium"), "chromium (apt-get install chromium)")
    # Four sync workers: each context keeps a spare connection open, and a sync worker
    # holding an idle connection serves nobody else until it times out.
    with live_demo({}, tmp_path / "demo", workers=4) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(shutil.which("chromium"), "chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def two_devices(browser: Browser) -> Iterator[tuple[Page, Page]]:
    """Devices A and B: two contexts of one browser, each with its own browser name."""
    contexts = [browser.new_context(), browser.new_context(user_agent=FIREFOX_ON_WINDOWS)]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            page.set_default_timeout(PAGE_TIMEOUT_MS)
        yield pages[0], pages[1]
    finally:
        for context in contexts:
            context.close()


def log_in_with_the_form(page: Page, url: str) -> None:
    page.goto(f"{url}/")
    expect(page.locator("#status")).to_have_text("You are not logged in")
    page.click("#login")
    page.fill("input[name=username]", "Tom")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#status")).to_have_text("Logged in as Tom")


def session_cookie(page: Page) -> dict[str, object] | None:
    return next((dict(c) for c in page.context.cookies() if c["name"] == "session"), None)


def listed_names(page: Page) -> list[str]:
    return page.locator("#devices tr.device .user-agent").all_inner_texts()


def row_of(page: Page, name: str) -> Locator:
    return page.locator("#devices tr.device").filter(
        has=page.locator(".user-agent", has_text=name))


def confirm_with_password(page: Page, password: str = PASSWORD) -> None:
    page.fill("input[name=password]", password)
    page.click("#confirm")


def test_device_a_revokes_device_b(demo: LiveDemo, two_devices: tuple[Page, Page]) -> None:
    a, b = two_devices
    log_in_with_the_form(a, demo.url)
    log_in_with_the_form(b, demo.url)
    assert session_cookie(a) != session_cookie(b)  # two jars: two sessions

    a.goto(f"{demo.url}/")
    a.get_by_role("link", name="devices", exact=True).click()
    expect(a.locator("#devices")).to_be_visible()
    assert sorted(listed_names(a)) == [DEVICE_A, DEVICE_B]
    expect(row_of(a, DEVICE_A)).to_have_class(re.compile(r"\bcurrent\b"))
    expect(row_of(a, DEVICE_A)).to_contain_text("this device")
    expect(row_of(a, DEVICE_B)).not_to_contain_text("this device")

    row_of(a, DEVICE_B).locator("button.revoke").click()
    expect(a.locator("#question")).to_contain_text(DEVICE_B)
    confirm_with_password(a)
    expect(a.locator(".flashes")).to_contain_text("Signed out 1 session")
    assert listed_names(a) == [DEVICE_A]

    # B's next request: logged out, told why, and its dead cookie is cleared.
    b.goto(f"{demo.url}/")
    expect(b.locator("#status")).to_have_text("You are not logged in")
    expect(b.locator(".flashes")).to_have_text(SIGNED_OUT_ELSEWHERE)
    expect(b.locator("#nav-logout")).to_have_count(0)
    assert session_cookie(b) is None
    b.reload()
    expect(b.locator(".flashes")).to_have_count(0)  # told once
    a.goto(f"{demo.url}/")
    expect(a.locator("#status")).to_have_text("Logged in as Tom")
    expect(a.locator(".flashes")).to_have_count(0)


def test_logging_out_with_the_button_on_the_devices_page(
        demo: LiveDemo, two_devices: tuple[Page, Page]) -> None:
    a, b = two_devices
    log_in_with_the_form(a, demo.url)
    log_in_with_the_form(b, demo.url)
    b.goto(f"{demo.url}/devices")
    row_of(b, DEVICE_B).locator("button.logout").click()
    expect(b.locator("#status")).to_have_text("You are not logged in")
    expect(b.locator(".flashes")).to_have_text("You were logged out")
    a.goto(f"{demo.url}/devices")
    assert listed_names(a) == [DEVICE_A]


def test_a_password_change_on_device_a_logs_device_b_out(
        demo: LiveDemo, two_devices: tuple[Page, Page]) -> None:
    a, b = two_devices
    log_in_with_the_form(a, demo.url)
    log_in_with_the_form(b, demo.url)

    a.goto(f"{demo.url}/password")
    a.fill("input[name=current_password]", PASSWORD)
    new_password = "a much longer password"
    a.fill("input[name=new_password]", new_password)
    a.fill("input[name=confirm_password]", new_password)
    a.click("#change")
    expect(a.locator(".flashes")).to_contain_text(
        "Your password was changed. Signed out 1 other session.")
    assert listed_names(a) == [DEVICE_A]

    b.goto(f"{demo.url}/")
    expect(b.locator("#status")).to_have_text("You are not logged in")
    expect(b.locator(".flashes")).to_have_text(SIGNED_OUT_ELSEWHERE)
    a.goto(f"{demo.url}/")
    expect(a.locator("#status")).to_have_text("Logged in as Tom")
