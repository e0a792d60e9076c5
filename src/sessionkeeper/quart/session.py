"""``quart.session``: sessionkeeper's session that Quart treats as its own.

Quart's ``session`` proxy is synchronous, so the session arrives already loaded (the
interface reads the store in ``open_session``, before the view runs) and no access ever
does I/O; ``accessed`` records that the app used it, as Flask's request context does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from quart.sessions import SessionMixin
from quart.wrappers import BaseRequestWebsocket

from ..device_info import device_info
from ..model import LoadedState
from ..model import Session as CoreSession
from ..serialization import ValueCodec
from ..sockets import SavedBySocket


class QuartSession(SavedBySocket, SessionMixin):  # type: ignore[misc]
    """A core session (``login()``, ``logout()``, ``regenerate()``, ``user_id``...) that
    is also Quart's ``SessionMixin``; on a websocket, ``await save()`` and
    ``await revalidate()`` (sessionkeeper/sockets.py)."""

    #: set by the interface: what login() records of the device (SESSION_DEVICE_INFO)
    _describe_device: Callable[[], dict[str, str | None]] | None = None

    @classmethod
    def preloaded(cls, state: LoadedState, codec: ValueCodec) -> QuartSession:
        """The session of ``state`` with every value decoded, not yet marked accessed.

        Called in a store thread, so decoding a large session costs the event loop
        nothing. A value that no longer decodes ends the session here (the core logs
        it); such a session counts as accessed, so its record is removed at save time.
        """
        session = cls(lambda: state, codec)
        CoreSession._load(session)
        if session._raw:
            session._decode_all()
        session.accessed = session.destroyed
        return session

    def _load(self) -> LoadedState:
        self.accessed = True  # every read, write and property of the session starts here
        return super()._load()

    def login(self, user_id: str | int) -> None:
        """Bind the user with a new id (see the core ``Session.login``) and record the
        device as SESSION_DEVICE_INFO says, for the user's list of sessions."""
        super().login(user_id)
        if self._describe_device is not None:
            info = self._describe_device()
            if info:
                self.record_device(info)


def device_of(request: BaseRequestWebsocket,
              fields: Iterable[str]) -> Callable[[], dict[str, str | None]]:
    """What SESSION_DEVICE_INFO asks to record about ``request``'s device, described
    when a login asks (most requests never log in)."""
    wanted = tuple(fields)

    def describe() -> dict[str, str | None]:
        return device_info(wanted, request.headers.get("User-Agent"), request.remote_addr)

    return describe
