"""The demo's "Your devices" and password pages over real HTTP, on every store.

Two (or three) ``requests.Session`` objects are two devices of one person: each has its
own cookie jar and browser name, and the demo runs under gunicorn with two worker
processes, so a revocation made through one worker must hold in the other. What is
checked is what a person sees: which devices the page lists, and whether the other
device is still logged in on its next request.

Cookie sessions are the cookie itself: the page can list only the current device, and
"sign out everywhere else" and the password change end the others through a per-user
"not before" stamp; those branches check exactly that.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from live_server import LiveDemo, live_demo
from test_demo_http import STORES, demo_on_store, jar_cookie, log_in, status_line

PASSWORD = "123"  # Tom's and laowang's, from the tutorials
NEW_PASSWORD = "correct horse battery"


@pytest.fixture(scope="module", params=list(STORES))
def demo(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    """The demo on one store, shared by this module's tests of that store."""
    with demo_on_store(request.param, tmp_path_factory) as server:
        yield server


@pytest.fixture
def cookie_store(request: pytest.FixtureRequest) -> bool:
    """True when this test's ``demo`` keeps sessions in the cookie."""
    return bool(request.node.callspec.params["demo"] == "cookie")


@dataclass(frozen=True)
class Device:
    """One row of the devices page."""

    handle: str
    user_agent: str
    current: bool
    created: str
    last_seen: str


Login = Callable[..., requests.Session]


@pytest.fixture
def device(demo: LiveDemo) -> Iterator[Login]:
    """``device(name, user="Tom")``: a new browser called ``name``, logged in.

    Every test starts with none of Tom's sessions alive, and leaves none behind: a
    helper device signs out all of them before and after.
    """

    def sign_out_everyone() -> None:
        helper = logged_in(demo.url, "cleanup")
        answer = helper.post(f"{demo.url}/devices/revoke-others", data={"password": PASSWORD})
        assert answer.status_code == 200, answer.text
        helper.post(f"{demo.url}/logout")

    def make(name: str, user: str = "Tom") -> requests.Session:
        return logged_in(demo.url, name, user)

    sign_out_everyone()
    yield make
    sign_out_everyone()


def logged_in(url: str, name: str, user: str = "Tom",
              password: str = PASSWORD) -> requests.Session:
    client = requests.Session()
    client.headers["User-Agent"] = f"{name}-{secrets.token_hex(3)}"
    log_in(client, url, user, password)
    return client


def devices(client: requests.Session, url: str) -> list[Device]:
    page = client.get(f"{url}/devices")
    assert page.status_code == 200 and page.url == f"{url}/devices", page.url
    rows = re.findall(r'<tr class="device( current)?"\s+data-handle="([^"]*)">(.*?)</tr>',
                      page.text, re.DOTALL)

    def cell(name: str, row: str) -> str:
        found = re.search(rf'<td class="{name}">(.*?)</td>', row, re.DOTALL)
        assert found, f"no {name} in {row}"
        return html.unescape(found.group(1).strip())

    return [Device(html.unescape(handle), cell("user-agent", row), bool(current),
                   cell("created", row), cell("last-seen", row))
            for current, handle, row in rows]


def listed_agents(client: requests.Session, url: str) -> set[str]:
    return {row.user_agent for row in devices(client, url)}


def agent(client: requests.Session) -> str:
    return str(client.headers["User-Agent"])


def flashes(page: requests.Response) -> list[str]:
    found = re.search(r'<ul class="flashes">(.*?)</ul>', page.text, re.DOTALL)
    if not found:
        return []
    return [html.unescape(m) for m in re.findall(r"<li>(.*?)</li>", found.group(1))]


def logged_in_as(client: requests.Session, url: str) -> str | None:
    line = status_line(client.get(f"{url}/"))
    return line.removeprefix("Logged in as ") if line.startswith("Logged in as ") else None


UTC_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")


# -- the list ------------------------------------------------------------------------
def test_both_devices_are_listed_and_this_one_is_marked(
        demo: LiveDemo, device: Login, cookie_store: bool) -> None:
    a, b = device("device-A"), device("device-B")
    seen_by_a = devices(a, demo.url)
    mine = [row for row in seen_by_a if row.current]
    assert [row.user_agent for row in mine] == [agent(a)]
    assert UTC_TIME.fullmatch(mine[0].created) and UTC_TIME.fullmatch(mine[0].last_seen)
    page = a.get(f"{demo.url}/devices").text
    assert "this device" in page
    # The address is recorded only when SESSION_DEVICE_INFO asks for it.
    assert 'class="ip"' not in page and "127.0.0.1" not in page
    if cookie_store:
        # Each cookie session lives only in its browser: the page shows this one.
        assert listed_agents(a, demo.url) == {agent(a)}
        assert 'id="cookie-note"' in a.get(f"{demo.url}/devices").text
        return
    assert listed_agents(a, demo.url) == {agent(a), agent(b)}
    assert {row.user_agent for row in devices(b, demo.url) if row.current} == {agent(b)}
    # The handles are references, not the cookies: knowing one logs nobody in.
    handles = {row.handle for row in seen_by_a}
    assert jar_cookie(a, "session").value not in handles  # type: ignore[union-attr]
    assert jar_cookie(b, "session").value not in handles  # type: ignore[union-attr]


def test_logging_out_removes_the_device_from_the_list(demo: LiveDemo, device: Login) -> None:
    a, b = device("device-A"), device("device-B")
    b.post(f"{demo.url}/logout")
    assert logged_in_as(b, demo.url) is None
    assert listed_agents(a, demo.url) == {agent(a)}


def test_the_devices_page_needs_a_login(demo: LiveDemo) -> None:
    stranger = requests.Session()
    for method, path in (("GET", "/devices"), ("GET", "/devices/revoke-others"),
                         ("POST", "/devices/revoke"), ("POST", "/devices/revoke-others"),
                         ("GET", "/password"), ("POST", "/password")):
        answer = stranger.request(method, f"{demo.url}{path}",
                                  data={"password": PASSWORD}, allow_redirects=False)
        assert answer.status_code == 302, (method, path)
        assert answer.headers["Location"] == "/login", (method, path)
    page = stranger.get(f"{demo.url}/devices")
    assert "Log in to manage your devices and password" in flashes(page)


# -- revoking ------------------------------------------------------------------------
def test_revoking_device_b_from_device_a_logs_b_out(
        demo: LiveDemo, device: Login, cookie_store: bool) -> None:
    a, b = device("device-A"), device("device-B")
    if cookie_store:
        # B is not listed, so A cannot pick it; "sign out everywhere else" can (below).
        assert [row.user_agent for row in devices(a, demo.url)] == [agent(a)]
        return
    row_b = next(row for row in devices(a, demo.url) if row.user_agent == agent(b))
    confirm = a.get(f"{demo.url}/devices/revoke", params={"handle": row_b.handle})
    assert confirm.status_code == 200
    assert agent(b) in confirm.text and 'name="password"' in confirm.text

    revoked = a.post(f"{demo.url}/devices/revoke",
                     data={"handle": row_b.handle, "password": PASSWORD})
    assert revoked.url == f"{demo.url}/devices"
    assert any(m.startswith("Signed out 1 session") for m in flashes(revoked)), revoked.text
    assert listed_agents(a, demo.url) == {agent(a)}

    # B's very next request is logged out, whichever worker answers it.
    assert logged_in_as(b, demo.url) is None
    after = b.get(f"{demo.url}/devices", allow_redirects=False)
    assert after.status_code == 302 and after.headers["Location"] == "/login"
    assert logged_in_as(a, demo.url) == "Tom"
    # Revoking it again: it has already ended.
    again = a.post(f"{demo.url}/devices/revoke",
                   data={"handle": row_b.handle, "password": PASSWORD})
    assert "That session had already ended" in flashes(again)


def test_sign_out_everywhere_else(demo: LiveDemo, device: Login, cookie_store: bool) -> None:
    a, b, c = device("device-A"), device("device-B"), device("device-C")
    confirm = a.get(f"{demo.url}/devices/revoke-others")
    assert confirm.status_code == 200 and 'name="password"' in confirm.text
    answer = a.post(f"{demo.url}/devices/revoke-others", data={"password": PASSWORD})
    assert answer.url == f"{demo.url}/devices"
    messages = [m for m in flashes(answer) if m.startswith("Signed out")]
    assert len(messages) == 1, flashes(answer)
    if not cookie_store:  # cookie sessions are not counted: they cannot be listed
        assert messages == ["Signed out 2 other sessions"]
    assert logged_in_as(b, demo.url) is None
    assert logged_in_as(c, demo.url) is None
    assert logged_in_as(a, demo.url) == "Tom"
    assert listed_agents(a, demo.url) == {agent(a)}
    # A new login after the sign-out is not affected by it.
    d = device("device-D")
    assert logged_in_as(d, demo.url) == "Tom"


def test_a_wrong_password_revokes_nothing(demo: LiveDemo, device: Login,
                                          cookie_store: bool) -> None:
    a, b = device("device-A"), device("device-B")
    for password in ("wrong", "", "x" * 5000):
        answer = a.post(f"{demo.url}/devices/revoke-others", data={"password": password})
        assert answer.status_code == 403
        assert "Your password is not right." in answer.text
    if not cookie_store:
        row_b = next(row for row in devices(a, demo.url) if row.user_agent == agent(b))
        answer = a.post(f"{demo.url}/devices/revoke",
                        data={"handle": row_b.handle, "password": "wrong"})
        assert answer.status_code == 403
        assert listed_agents(a, demo.url) == {agent(a), agent(b)}
    assert logged_in_as(b, demo.url) == "Tom"


def test_another_users_session_cannot_be_revoked(demo: LiveDemo, device: Login) -> None:
    tom = device("tom")
    laowang = device("laowang", user="laowang")
    toms_handle = next(row.handle for row in devices(tom, demo.url) if row.current)
    for handle in (toms_handle, "not-a-handle", "x" * 5000, ""):
        answer = laowang.post(f"{demo.url}/devices/revoke",
                              data={"handle": handle, "password": PASSWORD})
        assert answer.status_code == 200, handle[:20]
        assert "That session had already ended" in flashes(answer), handle[:20]
        # (In a URL, at most 1000 characters: gunicorn itself answers 414 past 4094.)
        shown = laowang.get(f"{demo.url}/devices/revoke", params={"handle": handle[:1000]})
        assert "That session had already ended" in flashes(shown), handle[:20]
    assert logged_in_as(tom, demo.url) == "Tom"
    assert logged_in_as(laowang, demo.url) == "laowang"
    laowang.post(f"{demo.url}/logout")


# -- the password --------------------------------------------------------------------
def test_changing_the_password_signs_out_the_other_device(
        demo: LiveDemo, device: Login, cookie_store: bool) -> None:
    # laowang's account, so Tom's password stays the tutorials' for the other tests.
    a, b = device("device-A", user="laowang"), device("device-B", user="laowang")
    others = len(devices(a, demo.url)) - 1  # B, and any left over by a failed test
    form = a.get(f"{demo.url}/password")
    assert form.status_code == 200 and 'name="new_password"' in form.text
    changed = a.post(f"{demo.url}/password", data={
        "current_password": PASSWORD, "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD})
    assert changed.url == f"{demo.url}/devices"
    messages = [m for m in flashes(changed) if m.startswith("Your password was changed")]
    assert len(messages) == 1, flashes(changed)
    if not cookie_store:
        ended = "1 other session" if others == 1 else f"{others} other sessions"
        assert messages == [f"Your password was changed. Signed out {ended}."]
    assert logged_in_as(b, demo.url) is None
    assert logged_in_as(a, demo.url) == "laowang"
    assert listed_agents(a, demo.url) == {agent(a)}

    # The new password holds in both worker processes; the old one nowhere.
    for _ in range(3):
        old = requests.post(f"{demo.url}/login",
                            data={"username": "laowang", "password": PASSWORD})
        assert "Login failed!" in old.text
        assert logged_in_as(logged_in(demo.url, "again", "laowang", NEW_PASSWORD),
                            demo.url) == "laowang"
    # Managing devices now takes the new password.
    wrong = a.post(f"{demo.url}/devices/revoke-others", data={"password": PASSWORD})
    assert wrong.status_code == 403
    right = a.post(f"{demo.url}/devices/revoke-others", data={"password": NEW_PASSWORD})
    assert right.status_code == 200 and right.url == f"{demo.url}/devices"


REFUSED_CHANGES = [
    ({"current_password": "wrong", "new_password": NEW_PASSWORD,
      "confirm_password": NEW_PASSWORD}, 403, "Your current password is not right."),
    ({"current_password": PASSWORD, "new_password": "short", "confirm_password": "short"},
     400, "The new password needs at least 8 characters."),
    ({"current_password": PASSWORD, "new_password": NEW_PASSWORD,
      "confirm_password": NEW_PASSWORD + "!"}, 400,
     "The new password and its confirmation differ."),
    ({"current_password": PASSWORD, "new_password": "y" * 200, "confirm_password": "y" * 200},
     400, "The new password can have at most 128 characters."),
    ({}, 403, "Your current password is not right."),
]


def test_a_refused_password_change_changes_nothing(demo: LiveDemo, device: Login) -> None:
    a, b = device("device-A"), device("device-B")
    for form, status, message in REFUSED_CHANGES:
        answer = a.post(f"{demo.url}/password", data=form)
        assert answer.status_code == status, form
        assert message in html.unescape(answer.text), form
    assert logged_in_as(b, demo.url) == "Tom"
    assert logged_in_as(logged_in(demo.url, "again"), demo.url) == "Tom"  # still "123"


# -- recording the address -----------------------------------------------------------
def test_the_address_is_listed_when_configured(tmp_path: Path) -> None:
    with live_demo({"SESSION_DEVICE_INFO": "user_agent,ip"}, tmp_path, workers=1) as server:
        client = logged_in(server.url, "device-A")
        page = client.get(f"{server.url}/devices").text
        assert re.search(r'<td class="ip">127\.0\.0\.1</td>', page), page
