"""An app for the races a browser causes around a login, under a real server.

Configured like the demo, from SESSION_* environment variables (any store), plus
``SECRET_KEY``. Each view can ``linger`` after reading the session, to hold a request in
flight while another one of the same browser runs.
"""

from __future__ import annotations

import asyncio
import os
import time

from flask import Flask, jsonify, request, session
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, UserMixin, login_user

from demo.config import config_from_env
from sessionkeeper.flask import Session, user_sessions

app = Flask(__name__)
app.config.update(config_from_env(os.environ))
for name in ("SESSION_ROTATION_GRACE", "SESSION_REFRESH_FRACTION", "SESSION_BREAKER_SECONDS"):
    if os.environ.get(name):
        app.config[name] = float(os.environ[name])
app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]
Session(app)
login_manager = LoginManager(app)


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


@login_manager.user_loader
def load_user(name: str) -> User:
    return User(name)


def _linger() -> None:
    time.sleep(float(request.args.get("linger", "0")))


@app.get("/health")
def health() -> str:
    return "ok"


@app.post("/start")
def start() -> str:
    session["started"] = True
    return "started"


@app.post("/cart/<item>")
def add_to_cart(item: str) -> ResponseReturnValue:
    cart = session.get("cart", [])  # loads the session, then lingers with it
    _linger()
    session["cart"] = [*cart, item]
    return "added"


@app.get("/read")
def read() -> ResponseReturnValue:
    seen = session.get("username")
    _linger()
    return jsonify(seen)


@app.post("/login/<user>")
def login(user: str) -> ResponseReturnValue:
    session.get("started")  # the form's view reads the session before checking
    _linger()
    session.login(user)
    session["username"] = user
    return "welcome"


@app.post("/regenerate")
def regenerate() -> ResponseReturnValue:
    session.get("started")
    _linger()
    session.regenerate()
    return "regenerated"


@app.post("/logout")
def logout() -> str:
    session.logout()
    return "bye"


@app.get("/me")
def me() -> ResponseReturnValue:
    return jsonify({"username": session.get("username"), "cart": session.get("cart", []),
                     "user": session.user_id})


@app.get("/devices/<user>")
def devices(user: str) -> ResponseReturnValue:
    return jsonify(len(user_sessions.list(user)))


@app.post("/sign-out-others")
def sign_out_others() -> ResponseReturnValue:
    user_sessions.revoke_others()
    return "signed out the other devices"


@app.post("/flask-login/<user>")
def flask_login_view(user: str) -> ResponseReturnValue:
    session.get("started")
    _linger()
    login_user(User(user))
    session["username"] = user
    return "welcome"


@app.get("/pid")
def pid() -> str:
    return str(os.getpid())


@app.post("/async/cart/<item>")
async def add_to_cart_async(item: str) -> ResponseReturnValue:
    cart = session.get("cart", [])
    await asyncio.sleep(float(request.args.get("linger", "0")))
    session["cart"] = [*cart, item]
    return "added"


@app.get("/async/me")
async def me_async() -> ResponseReturnValue:
    await asyncio.sleep(0)
    return jsonify({"username": session.get("username"), "cart": session.get("cart", []),
                    "user": session.user_id})


@app.post("/async/set/<key>")
async def set_key_async(key: str) -> ResponseReturnValue:
    session.get("started")  # load first, then linger with that state
    await asyncio.sleep(float(request.args.get("linger", "0")))
    session[key] = True
    return "set"


@app.get("/keys")
def keys() -> ResponseReturnValue:
    return jsonify(sorted(session.keys()))
