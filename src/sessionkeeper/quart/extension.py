"""The Quart extension object: ``Session(app)`` or ``Session().init_app(app)``,
configured by the same ``app.config`` keys as the Flask extension."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quart import Quart

from ..backend import SessionBackend, logger
from ..errors import ConfigurationError, StoreUnavailable
from ..factory import build_backend
from ..settings import Settings
from .interface import QuartSessionInterface
from .quart_session import adapt_quart_session_config
from .session import QuartSession
from .threads import DEFAULT_STORE_THREADS, StoreThreads

UNAVAILABLE_PAGE = ("<h1>Service Unavailable</h1><p>Sessions are temporarily unavailable; "
                    "please try again shortly.</p>")


@dataclass
class SessionKeeperState:
    """What ``app.extensions['sessionkeeper']`` holds."""

    settings: Settings
    backend: SessionBackend
    interface: QuartSessionInterface


async def store_unavailable(error: StoreUnavailable) -> tuple[str, int]:
    """Default answer when the store is down: 503, so clients and proxies retry."""
    logger.error("%s; answering 503", error)
    return UNAVAILABLE_PAGE, 503


def _store_threads(config: Any) -> int:
    """SESSION_STORE_THREADS: how many store calls run at once (threads of the app's own)."""
    value = config.get("SESSION_STORE_THREADS", DEFAULT_STORE_THREADS)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"SESSION_STORE_THREADS must be a positive integer, "
                                 f"not {value!r}")
    return value


def _answer_outages_from_after_request_hooks(app: Quart) -> None:
    """A store outage met by an ``after_request`` hook gets the same answer as one met
    by a view (the app's StoreUnavailable handler, else 503), not Quart's 500: Quart
    hands exceptions from those hooks to 500 handlers only."""
    if getattr(app.process_response, "answers_store_outages", False):
        return  # Session(app) called twice
    process_response = app.process_response

    async def answering_outages(response: Any, request_context: Any = None) -> Any:
        try:
            return await process_response(response, request_context)
        except StoreUnavailable as error:
            return await app.make_response(await app.handle_user_exception(error))

    answering_outages.answers_store_outages = True  # type: ignore[attr-defined]
    app.process_response = answering_outages  # type: ignore[method-assign]


class Session:
    """``Session(app)`` or ``Session().init_app(app)``, configured by ``app.config``."""

    def __init__(self, app: Quart | None = None) -> None:
        self.app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Quart) -> QuartSessionInterface:
        adapt_quart_session_config(app.config)
        settings = Settings.from_mapping(app.config, instance_path=app.instance_path)
        backend = build_backend(settings, session_class=QuartSession)
        threads = StoreThreads(_store_threads(app.config))
        interface = QuartSessionInterface(app, backend, settings, threads)
        app.session_interface = interface
        app.extensions["sessionkeeper"] = SessionKeeperState(settings, backend, interface)
        handlers = app.error_handler_spec.get(None, {}).get(None, {})
        if StoreUnavailable not in handlers:  # keep a handler the app registered first
            app.register_error_handler(StoreUnavailable, store_unavailable)
        _answer_outages_from_after_request_hooks(app)
        return interface


__all__ = ["Session", "SessionKeeperState", "store_unavailable"]
