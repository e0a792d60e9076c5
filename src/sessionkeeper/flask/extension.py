"""The Flask extension object, used exactly like Flask-Session's ``Session``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, has_request_context
from flask.sessions import SessionMixin

from ..backend import SessionBackend, logger
from ..errors import StoreUnavailable
from ..factory import build_backend
from ..model import Session as CoreSession
from ..settings import Settings
from ..signing import KeyRing
from .accounts import device_of_request
from .cli import sessions_cli
from .flask_login import connect_flask_login
from .interface import SessionKeeperInterface


class FlaskSession(CoreSession, SessionMixin):  # type: ignore[misc]
    """The object behind ``flask.session``: a core session that Flask treats as its own."""

    def login(self, user_id: str | int) -> None:
        """Bind the user with a new id (see the core ``Session.login``) and record the
        device as SESSION_DEVICE_INFO says, for the user's list of sessions."""
        super().login(user_id)
        if not has_request_context():
            return  # no request, no device to describe
        state = current_app.extensions.get("sessionkeeper")
        fields = state.settings.device_info if state is not None else ("user_agent",)
        if fields:
            self.record_device(device_of_request(fields))


@dataclass
class SessionKeeperState:
    """What ``app.extensions['sessionkeeper']`` holds."""

    settings: Settings
    backend: SessionBackend
    interface: SessionKeeperInterface

    def key_ring(self) -> KeyRing | None:
        s = self.settings
        return KeyRing(s.secret_key, s.secret_key_fallbacks) if s.secret_key else None


def store_unavailable(error: StoreUnavailable) -> tuple[str, int]:
    """Default answer when the store is down: 503, so clients and proxies retry."""
    logger.error("%s", error)
    return ("<h1>Service Unavailable</h1><p>Sessions are temporarily unavailable; "
            "please try again shortly.</p>", 503)


def _answer_outages_from_after_request_hooks(app: Flask) -> None:
    """A store outage met by an ``after_request`` hook gets the same answer as one met
    by a view (the app's StoreUnavailable handler, else 503), not Flask's 500.

    Flask hands exceptions from those hooks to 500 handlers only, and they are common:
    Flask-Login's remember-cookie hook reads the session after every request.
    """
    if getattr(app.process_response, "answers_store_outages", False):
        return  # Session(app) called twice
    process_response = app.process_response

    def answering_outages(response: Any) -> Any:
        try:
            return process_response(response)
        except StoreUnavailable as error:
            return app.make_response(app.handle_user_exception(error))

    answering_outages.answers_store_outages = True  # type: ignore[attr-defined]
    app.process_response = answering_outages  # type: ignore[method-assign]


class Session:
    """``Session(app)`` or ``Session().init_app(app)``, configured by ``app.config``."""

    def __init__(self, app: Flask | None = None) -> None:
        self.app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> SessionKeeperInterface:
        settings = Settings.from_mapping(app.config, instance_path=app.instance_path)
        # Inside the app context: stores given an extension object (a Flask-SQLAlchemy
        # ``db``) reach that app's engine through current_app.
        with app.app_context():
            backend = build_backend(settings, session_class=FlaskSession)
        interface = SessionKeeperInterface(app, backend, settings)
        app.session_interface = interface
        app.extensions["sessionkeeper"] = SessionKeeperState(settings, backend, interface)
        # .get, not .setdefault: a plain {} in Flask's nested defaultdict would make a
        # later @app.errorhandler(404) fail with KeyError.
        handlers = app.error_handler_spec.get(None, {}).get(None, {})
        if StoreUnavailable not in handlers:  # keep a handler the app registered first
            app.register_error_handler(StoreUnavailable, store_unavailable)
        _answer_outages_from_after_request_hooks(app)
        if "sessions" not in app.cli.commands:
            app.cli.add_command(sessions_cli)
        connect_flask_login(app)
        return interface


__all__ = ["FlaskSession", "Session", "SessionKeeperState"]
