"""The demo app: ``create_app()`` builds it, ``app`` is the one WSGI servers run.

Configuration comes from the environment (see docs/demo.md): ``SECRET_KEY``,
``SESSION_TYPE`` (unset: the embedded SQLite store in the instance folder), the other
Flask-Session keys, and ``DEMO_USERS_PATH`` (where changed passwords are kept).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask.logging import default_handler, has_level_handler

from sessionkeeper.flask import Session

from . import signed_out
from .account_views import account_views
from .config import config_from_env
from .cookie_views import cookie_views
from .hooks import register_error_pages, register_hooks
from .session_views import session_views
from .users import Accounts, PasswordFile

USERS_FILE = "demo-users.sqlite3"  # in the instance folder unless DEMO_USERS_PATH says


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A demo app configured from the environment, then from ``config`` (which wins)."""
    app = Flask(__name__)
    # Lax even for cookie sessions, which (as Flask's) send no SameSite unless told to.
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config.update(config_from_env(os.environ))
    app.config.update(config or {})
    _set_up_logging(app)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secrets.token_hex(32)
        app.logger.warning(
            "SECRET_KEY is not set: using a random key for this process only. Sessions "
            "and signed cookies will not survive a restart, and several worker processes "
            "will not accept each other's cookies. Set SECRET_KEY to a long random value.")
    Session(app)
    _log_store(app)
    users_path = app.config.get("DEMO_USERS_PATH") or os.path.join(app.instance_path, USERS_FILE)
    app.extensions["demo_accounts"] = Accounts(PasswordFile(users_path))
    register_hooks(app)
    register_error_pages(app)
    signed_out.install(app)
    app.register_blueprint(session_views)
    app.register_blueprint(cookie_views)
    app.register_blueprint(account_views)
    return app


def _set_up_logging(app: Flask) -> None:
    # The demo shows what happens: its hooks and sessionkeeper log at INFO.
    app.logger.setLevel(logging.INFO)
    library = logging.getLogger("sessionkeeper")
    if library.level == logging.NOTSET:
        library.setLevel(logging.INFO)
    if not has_level_handler(library):
        library.addHandler(default_handler)


def _log_store(app: Flask) -> None:
    state = app.extensions["sessionkeeper"]
    store = getattr(state.backend, "store", None)  # cookie sessions have none
    where = getattr(store, "path", None) or getattr(store, "directory", None)
    app.logger.info("sessions: SESSION_TYPE=%s%s, permanent by default: %s",
                    state.settings.session_type, f" in {where}" if where else "",
                    state.settings.permanent)


app = create_app()
