"""The tutorials' cookie and session examples on FastAPI, with sessionkeeper's ASGI
middleware: cookies with max_age and expires, a login kept across requests, logout,
session values set, read and deleted, messages shown once, and "your devices" with
revoke. Sessions live in the embedded SQLite store unless SESSION_STORE names another.

    pip install -e '.[demo]' && SECRET_KEY=change-me uvicorn demo.fastapi_demo:app --workers 2

Environment: SECRET_KEY (made up, with a warning, when missing), SESSION_STORE (any
``store=`` URL of docs/asgi.md; default ``sqlite:///instance/fastapi-sessions.sqlite3``).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from datetime import datetime, timedelta, timezone
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sessionkeeper.starlette import SessionMiddleware, user_sessions

from .browsers import browser_name
from .users import USERS

logger = logging.getLogger("demo")
DEFAULT_STORE = "sqlite:///instance/fastapi-sessions.sqlite3"
COOKIE_DAYS = 7


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    logger.warning("SECRET_KEY is not set: using a random one, so sessions end when the "
                   "server restarts and worker processes reject each other's cookies")
    return secrets.token_hex(32)


def _store() -> str:
    store = os.environ.get("SESSION_STORE", DEFAULT_STORE)
    if store == DEFAULT_STORE:
        Path("instance").mkdir(exist_ok=True)
    return store


def page(title: str, *body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}"
                        f"</title></head><body><h1>{escape(title)}</h1>{''.join(body)}"
                        "<p><a href='/'>home</a></p></body></html>")


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the demo's forms are small and flat)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[-1] for name, values in fields.items()}


def flash(request: Request, message: str) -> None:
    """A message for the next page, shown once (Flask's flash())."""
    request.session["_messages"] = [*request.session.get("_messages", []), message]


def messages_html(request: Request) -> str:
    messages = request.session.pop("_messages", [])
    return "".join(f"<p class='flash'>{escape(m)}</p>" for m in messages)


def create_app() -> FastAPI:
    app = FastAPI(title="sessionkeeper demo (FastAPI)")
    app.add_middleware(SessionMiddleware, secret_key=_secret_key(), store=_store(),
                       max_age=COOKIE_DAYS * 24 * 3600)

    @app.get("/health")
    async def health() -> Response:
        """For load balancers (and the tests' start-up wait): never touches the session."""
        return Response("ok", media_type="text/plain")

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> HTMLResponse:
        user = request.session.get("username")
        status = f"Logged in as {user}" if user else "You are not logged in"
        account = ("<form method='post' action='/logout'><button id='logout'>log out"
                   "</button></form><p><a href='/devices'>devices</a></p>" if user else
                   "<p><a id='login' href='/login'>log in</a></p>")
        return page("sessionkeeper on FastAPI", messages_html(request),
                    f"<p id='status'>{escape(status)}</p>", account,
                    "<ul><li><a href='/setcookie'>set a cookie</a></li>"
                    "<li><a href='/getcookie'>read it</a></li>"
                    "<li><a href='/delcookie'>delete it</a></li>"
                    "<li><a href='/session/set?key=theme&amp;value=dark'>session: set</a></li>"
                    "<li><a href='/session/get?key=theme'>session: get</a></li>"
                    "<li><a href='/session/delete?key=theme'>session: delete</a></li></ul>")

    # -- cookies (the tutorials' set_cookie / cookies.get / delete_cookie) ------------
    @app.get("/setcookie")
    async def set_cookie() -> Response:
        response = page("Cookie set", "<p>username=laowang, for an hour; "
                        f"visited, until a fixed date {COOKIE_DAYS} days away</p>")
        response.set_cookie("username", "laowang", max_age=3600)
        expires = datetime.now(timezone.utc) + timedelta(days=COOKIE_DAYS)
        response.set_cookie("visited", "yes", expires=expires)
        return response

    @app.get("/getcookie")
    async def get_cookie(request: Request) -> Response:
        value = request.cookies.get("username")
        return page("Cookie", f"<p id='cookie'>{escape(value or 'no cookie')}</p>")

    @app.get("/delcookie")
    async def delete_cookie() -> Response:
        response = page("Cookie deleted")
        response.delete_cookie("username")
        response.delete_cookie("visited")
        return response

    # -- session values (session['k'] = v, session.get, session.pop) -----------------
    @app.get("/session/set")
    async def session_set(request: Request, key: str, value: str) -> Response:
        request.session[key] = value
        return page("Session value set", f"<p id='value'>{escape(key)} = {escape(value)}</p>")

    @app.get("/session/get")
    async def session_get(request: Request, key: str) -> Response:
        value = request.session.get(key)
        return page("Session value", f"<p id='value'>{escape(str(value))}</p>")

    @app.get("/session/delete")
    async def session_delete(request: Request, key: str) -> Response:
        request.session.pop(key, None)
        return page("Session value deleted", f"<p id='value'>{escape(key)} deleted</p>")

    # -- logging in and out ---------------------------------------------------------
    @app.get("/login")
    async def login_form(request: Request, next: str = "/") -> Response:
        return page("Log in", messages_html(request),
                    f"<form method='post' action='/login?next={quote(next)}'>"
                    "<input name='username' placeholder='Tom'>"
                    "<input name='password' type='password' placeholder='123'>"
                    "<input type='submit' value='log in'></form>")

    @app.post("/login")
    async def login(request: Request, next: str = "/") -> Response:
        form = await form_of(request)
        user = USERS.get(form.get("username", ""))
        password = form.get("password", "").encode()
        if user is None or not hmac.compare_digest(password, user.password.encode()):
            flash(request, "Wrong user name or password")
            return RedirectResponse(f"/login?next={quote(next)}", status_code=303)
        request.session["username"] = user.username
        request.session.login(user.uid)  # a new session id, the user bound to it
        flash(request, f"Welcome, {user.username}")
        return RedirectResponse(next if next.startswith("/") else "/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        request.session.logout()  # the record and the cookie go
        return RedirectResponse("/", status_code=303)

    # -- your devices -----------------------------------------------------------------
    def signed_in(request: Request) -> str | None:
        return request.session.user_id

    @app.get("/devices")
    async def devices(request: Request) -> Response:
        uid = signed_in(request)
        if uid is None:
            return RedirectResponse("/login?next=/devices", status_code=303)
        found = await user_sessions(request).list(uid, current=request.session.sid)
        rows = "".join(
            f"<tr class='device{' current' if s.current else ''}'>"
            f"<td class='user-agent'>{escape(browser_name(s.user_agent))}</td>"
            f"<td>{'this device' if s.current else ''}</td><td>"
            + ("" if s.current else
               "<form method='post' action='/devices/revoke'>"
               f"<input type='hidden' name='handle' value='{escape(s.handle)}'>"
               "<button class='revoke'>sign out</button></form>")
            + "</td></tr>" for s in found)
        return page("Your devices", messages_html(request),
                    f"<table id='devices'>{rows}</table>"
                    "<form method='post' action='/devices/others'>"
                    "<button id='others'>sign out everywhere else</button></form>")

    @app.post("/devices/revoke")
    async def revoke(request: Request) -> Response:
        uid = signed_in(request)
        if uid is not None:
            handle = (await form_of(request)).get("handle", "")
            if await user_sessions(request).revoke(uid, handle):
                flash(request, "That device is signed out")
        return RedirectResponse("/devices", status_code=303)

    @app.post("/devices/others")
    async def sign_out_others(request: Request) -> Response:
        uid = signed_in(request)
        if uid is not None:
            ended = await user_sessions(request).revoke_all(uid, keep=request.session.sid)
            flash(request, f"{ended} other device(s) signed out")
        return RedirectResponse("/devices", status_code=303)

    return app


app: Any = create_app()
