"""``request.session`` for Starlette: sessionkeeper's session that is also a ``dict``.

Starlette's own session is a ``dict`` subclass, and apps rely on it: ``JSONResponse``
serializes it with ``json.dumps`` (which takes dicts only, reading a subclass's own
storage for its size), ``isinstance(request.session, dict)`` holds, and ``popitem()``
takes the newest key. So this class keeps the visible values in the dict's own storage
too (a mirror, same objects), next to the core model's change tracking: every write
goes through the core first, then the mirror.

The session arrives already loaded (the middleware reads the store before the endpoint
runs), so no access ever does I/O; ``accessed`` records that the app used it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from ..model import _MISSING, _SCALARS, RESERVED_PREFIX, LoadedState, is_reserved
from ..model import Session as CoreSession
from ..serialization import ValueCodec
from ..sockets import SavedBySocket
from .devices import Device


class SessionNotLoaded(RuntimeError):
    """The app used a session opened with ``preload=False`` before loading it."""


def _not_loaded() -> LoadedState:
    raise SessionNotLoaded(
        "this session is loaded on demand (SessionMiddleware(preload=False)): "
        "await sessionkeeper.starlette.load_session(request) before using "
        "request.session, or depend on SessionDep (FastAPI), or list the path in "
        "SessionAutoloadMiddleware(paths=[...])")


class Session(SavedBySocket, dict):  # type: ignore[misc]
    """A mapping as Starlette's session is, plus ``login()``, ``logout()``,
    ``regenerate()``, ``user_id`` and the rest of sessionkeeper's session, and on a
    websocket ``await save()`` and ``await revalidate()`` (sockets.py)."""

    #: the cookie's id while a session opened with ``preload=False`` waits for
    #: ``await load_session(request)``; None once loaded, or when nothing needs loading
    pending_token: str | None = None

    @classmethod
    def preloaded(cls, state: LoadedState, codec: ValueCodec) -> Session:
        """The session of ``state``, every value decoded, not yet marked accessed."""
        session = cls(_not_loaded, codec)
        session.fill(state)
        return session

    @classmethod
    def on_demand(cls, token: str, codec: ValueCodec) -> Session:
        """A stored session read only when the app awaits ``load_session(request)``
        (SessionMiddleware(preload=False)); used before that, it raises SessionNotLoaded."""
        session = cls(_not_loaded, codec)
        session.pending_token = token
        return session

    def fill(self, state: LoadedState) -> None:
        """Become the session of ``state``, every value decoded, not yet marked accessed.

        A value that no longer decodes ends the session here (the core logs it and
        starts a fresh one); that session is then saved, so its record goes away."""
        self._loader = lambda: state
        self._first_load()
        self.accessed = self.destroyed
        self.pending_token = None

    @classmethod
    def lazy(cls, loader: Callable[[], LoadedState], codec: ValueCodec) -> Session:
        """A session read on first use: any mapping operation, or ``request.session``
        (Starlette calls ``mark_accessed`` there, before the app can read the dict's own
        storage, as ``json.dumps`` does). Only for sessions whose reading does no I/O."""
        return cls(loader, codec)

    def _first_load(self) -> None:
        CoreSession._load(self)
        if self._raw:
            self._decode_all()
        # (Loaded keys are str: JSON's, or a store's.)
        dict.update(self, {k: v for k, v in self._values.items()
                           if not k.startswith(RESERVED_PREFIX)})

    #: set by the middleware: what login() records of the device (devices.py)
    _device: Device | None = None

    def login(self, user_id: str | int) -> None:
        """Bind the user with a new id (see the core ``Session.login``) and record the
        device as the middleware's ``device_info`` says, for the user's list of sessions."""
        super().login(user_id)
        if self._device is not None and self._device.fields:
            self.record_device(self._device.describe())

    # -- Starlette's session API ------------------------------------------------------
    def mark_accessed(self) -> None:
        """Called by Starlette's ``request.session``: the response varies on the cookie,
        and a lazy session is read now."""
        self._load()

    def mark_modified(self) -> None:
        """Save the session even if nothing in it changed."""
        self.accessed = True
        self.modified = True

    def _load(self) -> LoadedState:
        self.accessed = True  # every mapping operation starts here
        if self._state is None:
            self._first_load()
        return self._state  # type: ignore[return-value]

    # -- writes: the core's tracking first, then the mirror -------------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        dict.pop(self, key, None)

    def clear(self) -> None:
        super().clear()
        dict.clear(self)

    def popitem(self) -> tuple[str, Any]:
        """The newest key and its value, as ``dict.popitem`` (KeyError when empty)."""
        self._load()
        if not dict.__len__(self):
            raise KeyError("popitem(): session is empty")
        key = next(reversed(dict.keys(self)))
        value = self[key]
        del self[key]
        return key, value

    def __ior__(self, other: Any) -> Session:  # type: ignore[override]
        self.update(other)
        return self

    # -- reads: a plain value straight from the mirror; a mutable one through the core,
    # which keeps its encoded form to catch in-place changes ---------------------------
    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        value = dict.get(self, key, _MISSING)
        if type(value) in _SCALARS:
            return value
        return default if value is _MISSING else super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self._load()
        value = dict.get(self, key, _MISSING)
        if type(value) in _SCALARS:
            return value
        if value is _MISSING:
            raise KeyError(key)
        return super().__getitem__(key)

    # -- reads in the mirror's order (insertion order, as a dict) -----------------------
    def __iter__(self) -> Iterator[str]:
        self._load()
        return dict.__iter__(self)

    def __reversed__(self) -> Iterator[str]:
        self._load()
        return dict.__reversed__(self)

    def __len__(self) -> int:
        self._load()
        return dict.__len__(self)

    def __contains__(self, key: object) -> bool:
        self._load()
        return dict.__contains__(self, key)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, dict):
            return NotImplemented
        return {**self.copy(), **other}

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, dict):
            return NotImplemented
        return {**other, **self.copy()}

    def copy(self) -> dict[str, Any]:  # type: ignore[override]
        """A plain dict of the values (changing it does not change the session)."""
        return dict(self.items())

    def __copy__(self) -> dict[str, Any]:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(self.copy(), memo)

    def ordered_values(self) -> dict[str, Any]:
        """Every value in insertion order, sessionkeeper's reserved ones last."""
        values = dict(dict.items(self))
        values.update((k, self._value(k)) for k in self._all_keys() if is_reserved(k))
        return values
