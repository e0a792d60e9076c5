"""Exceptions raised by sessionkeeper. All derive from :class:`SessionKeeperError`."""

from __future__ import annotations


class SessionKeeperError(Exception):
    """Base class of every error sessionkeeper raises on purpose."""


class ConfigurationError(SessionKeeperError, ValueError):
    """The app is configured in a way that cannot work; the message says what to set.

    A ``ValueError``, as Flask-Session's own configuration errors are, so an
    ``except ValueError`` around start-up keeps working."""


class StoreUnavailable(SessionKeeperError):
    """The session store could not be reached or did not answer in time.

    Flask apps answer 503 by default; register an error handler for this class to
    change that.
    """

    def __init__(self, store: str, reason: BaseException | str) -> None:
        self.store = store
        self.reason = reason
        super().__init__(f"session store {store} is unavailable: {reason}")


class SessionContention(StoreUnavailable):
    """One session stayed locked by another request of that session for the whole wait.

    The store answers; only that session is stuck, so the circuit breaker ignores it.
    """


class SessionTooLarge(SessionKeeperError):
    """The cookie session would exceed what browsers keep (they drop it silently)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the session cookie would be {size} bytes, over the {limit}-byte limit "
            "browsers keep; store less in the session or use a server-side SESSION_TYPE"
        )


class UnserializableValue(SessionKeeperError, TypeError):
    """A value put in the session has a type the session cannot store."""


class UndecodableRecord(SessionKeeperError):
    """A stored record (or one of its values) can no longer be decoded: damaged, or
    written in another SESSION_SERIALIZATION_FORMAT. Stores raise it from ``load``;
    the core treats it like a bad cookie: a log line, the record removed, a fresh session.
    """

    def __init__(self, store: str, reason: BaseException | str) -> None:
        self.store = store
        self.reason = reason
        super().__init__(f"a record in the {store} store cannot be decoded: {reason}")
