"""The session object apps use: a mapping that knows what changed.

It loads lazily (a request that never touches the session never reaches the store),
records the keys set and deleted so stores can save a delta, and catches in-place
changes to nested values (``session["cart"].append(x)``) by comparing each mutable value
it handed out with the encoded form it had when loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UnserializableValue
from .serialization import UndecodableValue, ValueCodec, naming_key

_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
_MISSING: Any = object()
logger = logging.getLogger("sessionkeeper")

#: keys under this prefix hold sessionkeeper's own entries (device info); apps never see them
RESERVED_PREFIX = "_sk."
DEVICE_KEY = RESERVED_PREFIX + "device"


def is_reserved(key: object) -> bool:
    return isinstance(key, str) and key.startswith(RESERVED_PREFIX)


def _refuse_reserved(key: object) -> None:
    if is_reserved(key):
        raise KeyError(f"session keys starting with {RESERVED_PREFIX!r} are reserved for "
                       f"sessionkeeper: {key!r}")


@dataclass(slots=True)  # built for every request that uses its session
class LoadedState:
    """What a backend found for a request's cookie; ``values`` or ``raw`` may be lazy.

    The per-request loads build it with positional arguments (half the cost of
    keywords): a new field goes last, with a default."""

    sid: str | None
    new: bool
    permanent: bool
    created_at: float
    accessed_at: float
    expires_at: float
    user_id: str | None = None
    #: encoded values as the store keeps them (decoded on first read)
    raw: dict[str, bytes] = field(default_factory=dict)
    #: decoded values, for backends that hold them already (cookies)
    values: dict[str, Any] = field(default_factory=dict)
    #: the request carried a cookie (valid or not), so an empty outcome must clear it
    had_cookie: bool = False
    #: cookie sessions: when the user was bound, and the random handle of that login
    #: (both checked against revocations; server sessions are revoked by deletion)
    bound_at: float | None = None
    handle: str | None = None
    #: server sessions: the store's concurrency token of the loaded record
    version: Any = None
    #: server sessions: the request carried this id, rotated to a new one moments ago
    #: (SESSION_ROTATION_GRACE); its response must leave the browser's new cookie alone
    rotated_from: str | None = None


@dataclass
class SessionChanges:
    """The delta of one request: what a store must write."""

    set_values: dict[str, bytes]
    deleted_keys: set[str]
    replace: bool  # the session was cleared: drop every stored key first

    def __bool__(self) -> bool:
        return bool(self.set_values or self.deleted_keys or self.replace)


class Session(MutableMapping[str, Any]):
    """A dict-like session. ``session["k"] = v``, ``get``, ``pop``, ``del``, ``clear()``."""

    #: set by the framework when the app touched the session at all
    accessed: bool = False

    # Flags start as class defaults and the change-tracking sets are made on first load:
    # every request builds a session, most never touch it, so building one must be cheap.
    _cleared = False
    _force_save = False
    _meta_changed = False
    _regenerate = False
    _destroy = False
    _user_changed = False
    _saved_changes = False
    _loaded_user_id: str | None = None
    _values: dict[str, Any]
    _raw: dict[str, bytes]
    _set: set[str]
    _deleted: set[str]
    _watched: set[str]

    def __init__(self, loader: Callable[[], LoadedState], codec: ValueCodec) -> None:
        self._loader = loader
        self._codec = codec
        self._state: LoadedState | None = None

    # -- loading -----------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """True once the session was read from its backend during this request."""
        return self._state is not None

    def _load(self) -> LoadedState:
        state = self._state
        if state is None:
            state = self._loader()
            self._state = state
            self._raw = state.raw
            self._values = state.values
            self._set, self._deleted, self._watched = set(), set(), set()
            self._loaded_user_id = state.user_id
        return state

    @property
    def state(self) -> LoadedState:
        return self._state or self._load()  # loaded: no call (read several times a save)

    # -- mapping -----------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if is_reserved(key):
            raise KeyError(key)
        return self._value(key)

    def get(self, key: str, default: Any = None) -> Any:
        # Most views read with .get(): answer a missing key without raising and
        # catching a KeyError as Mapping.get does.
        if isinstance(key, str) and key.startswith(RESERVED_PREFIX):  # is_reserved, inline
            return default
        if self._state is None:
            self._load()
        if key not in self._values and key not in self._raw:
            return default
        try:
            return self._loaded_value(key)
        except KeyError:  # it did not decode: the session is a fresh one now
            return default

    def _value(self, key: str) -> Any:
        self._load()
        return self._loaded_value(key)

    def _loaded_value(self, key: str) -> Any:
        """``_value`` of a session known to be loaded."""
        value = self._values.get(key, _MISSING)
        if value is _MISSING:
            value = self._decode(key)  # KeyError when absent
        if type(value) not in _SCALARS and key not in self._set and key not in self._watched:
            # Remember its encoded form before the app can mutate it in place.
            if key not in self._raw:
                self._raw[key] = self._codec.encode(value)
            self._watched.add(key)
        return value

    def _decode(self, key: str) -> Any:
        """Decode a stored value on its first read. One that no longer decodes (damaged,
        or written in another SESSION_SERIALIZATION_FORMAT) ends the session as a bad
        cookie does: it is fresh and empty from here on, its record is deleted at save
        time, and the read finds nothing (KeyError)."""
        try:
            value = self._codec.decode(self._raw[key])
        except UndecodableValue as exc:
            logger.info("session value %r cannot be decoded (%s); the session is ended, "
                        "starting a fresh one", key, exc)
            self.destroy()
            raise KeyError(key) from None
        self._values[key] = value
        return value

    def _decode_all(self) -> None:
        """Decode every stored value of the app's, so that a damaged one ends the session
        before any of its keys is handed out (a loop over keys then finds every value)."""
        for key in [k for k in self._raw if k not in self._values and not is_reserved(k)]:
            try:
                self._decode(key)
            except KeyError:
                return

    def __setitem__(self, key: str, value: Any) -> None:
        _refuse_reserved(key)
        self._put(key, value)

    def _put(self, key: str, value: Any) -> None:
        self._load()
        self._values[key] = value
        self._set.add(key)
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        _refuse_reserved(key)
        self._load()
        if key not in self._values and key not in self._raw:
            raise KeyError(key)
        self._values.pop(key, None)
        self._raw.pop(key, None)
        self._set.discard(key)
        self._watched.discard(key)
        self._deleted.add(key)

    def __contains__(self, key: object) -> bool:
        self._load()
        if is_reserved(key):
            return False
        if key in self._values:
            return True
        if key not in self._raw:
            return False
        # Decoded now, so that a key found here can be read: `if k in session: session[k]`
        try:
            self._decode(key)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True

    def _all_keys(self) -> set[str]:
        self._load()
        return self._values.keys() | self._raw.keys()

    def _keys(self) -> set[str]:
        """The app's keys: sessionkeeper's reserved entries stay out of sight."""
        return {key for key in self._all_keys() if not is_reserved(key)}

    def __iter__(self) -> Iterator[str]:
        self._load()
        if self._raw:
            self._decode_all()
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __bool__(self) -> bool:
        return len(self) > 0

    def __repr__(self) -> str:
        if not self.loaded:
            return f"<{type(self).__name__} (not loaded)>"
        return f"<{type(self).__name__} {dict(self.items())!r}>"

    def clear(self) -> None:
        """Forget everything, the user binding included: ``session.clear()`` is the
        classic Flask logout, so a cleared session is no longer one of the user's."""
        state = self._load()
        if state.user_id is not None:
            state.user_id = None
            state.bound_at = None
            self._user_changed = True
            self._meta_changed = True
        self._values = {}
        self._raw = {}
        self._set.clear()
        self._deleted.clear()
        self._watched.clear()
        self._cleared = True

    # -- metadata ----------------------------------------------------------------
    @property
    def sid(self) -> str | None:
        """The session id, or None for a session not saved yet."""
        return self._load().sid

    @property
    def new(self) -> bool:
        """True when no stored session matched the request."""
        return self._load().new

    @property
    def permanent(self) -> bool:
        """A permanent session's cookie outlives the browser (PERMANENT_SESSION_LIFETIME)."""
        return self._load().permanent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        state = self._load()
        if state.permanent != bool(value):
            state.permanent = bool(value)
            self._meta_changed = True

    @property
    def created_at(self) -> float:
        return self._load().created_at

    @property
    def accessed_at(self) -> float:
        """When the session was last stored or refreshed (epoch seconds)."""
        return self._load().accessed_at

    @property
    def expires_at(self) -> float:
        return self._load().expires_at

    @property
    def user_id(self) -> str | None:
        return self._load().user_id

    @property
    def loaded_user_id(self) -> str | None:
        """The user the session was bound to when this request loaded it."""
        self._load()
        return self._loaded_user_id

    @property
    def device(self) -> dict[str, Any] | None:
        """What was recorded about the device at login (user agent, IP), if anything."""
        if DEVICE_KEY not in self._all_keys():
            return None
        try:
            found = self._value(DEVICE_KEY)
        except KeyError:  # it did not decode: the session is a fresh one now
            return None
        return dict(found) if isinstance(found, dict) else None

    def record_device(self, info: dict[str, Any]) -> None:
        """Keep ``info`` with the session (hidden from the app's mapping)."""
        self._put(DEVICE_KEY, dict(info))

    @property
    def empty(self) -> bool:
        """Nothing worth storing: no values (reserved ones included) and no user."""
        state = self._state or self._load()
        return not self._values and not self._raw and state.user_id is None

    @property
    def modified(self) -> bool:
        """True when this request changed the session (in place changes included)."""
        if not self.loaded:
            return False
        # Stays True once the request's changes are saved, as Flask's flag does.
        return (self._saved_changes or self._force_save or self._meta_changed
                or (self._tracks_changes() and bool(self.changes())))

    @modified.setter
    def modified(self, value: bool) -> None:
        # Flask-Session apps set this after in-place changes; they are detected anyway,
        # so the flag only forces a save.
        self._force_save = bool(value)

    @property
    def needs_save(self) -> bool:
        """True unless the request only read the session (loaded): what ``modified``,
        ``destroyed`` and ``regenerate_requested`` say together, without encoding a
        value set or deleted this request (only in-place changes need encoding)."""
        if self._state is None:
            return False
        if (self._destroy or self._regenerate or self._saved_changes or self._force_save
                or self._meta_changed or self._set or self._deleted or self._cleared):
            return True
        return bool(self._watched) and bool(self.changes())

    def _tracks_changes(self) -> bool:
        """Whether ``changes()`` may find anything (a loaded session only)."""
        return bool(self._set or self._watched or self._deleted or self._cleared)

    @property
    def meta_changed(self) -> bool:
        """True when permanence, the user binding or a forced save asks for a write."""
        return self._meta_changed or self._force_save

    def login(self, user_id: str | int) -> None:
        """Bind the session to a user and give it a new id, keeping its data.

        Call it right after authenticating: the old id stops working (session
        fixation), and the user's sessions can be listed and revoked.
        """
        state = self._load()
        state.user_id = str(user_id)
        self._user_changed = True
        self._meta_changed = True
        self._regenerate = True

    def logout(self) -> None:
        """End the session: its record and cookie are deleted at the end of the request."""
        self.destroy()

    @property
    def user_changed(self) -> bool:
        return self._user_changed

    def regenerate(self) -> None:
        """Give the session a new id at save time, keeping its data (use it at login)."""
        self._load()
        self._regenerate = True

    @property
    def regenerate_requested(self) -> bool:
        return self._regenerate

    def destroy(self) -> None:
        """Delete the session record and its cookie at the end of the request."""
        self.clear()
        self._destroy = True

    @property
    def destroyed(self) -> bool:
        return self._destroy

    @property
    def cleared(self) -> bool:
        return self._cleared

    # -- saving ------------------------------------------------------------------
    def changes(self) -> SessionChanges:
        """The delta since loading: keys set (or changed in place) and keys deleted."""
        if self._state is None or not self._tracks_changes():
            return SessionChanges({}, set(), False)  # read-only requests end here
        encode, values = self._codec.encode, self._values
        set_values: dict[str, bytes] = {}
        key = ""
        try:
            for key in self._set:
                set_values[key] = encode(values[key])
            for key in self._watched:
                current = encode(values[key])
                if current != self._raw.get(key):
                    set_values[key] = current
        except UnserializableValue as exc:
            raise naming_key(key, exc) from exc  # the request that stores it fails
        return SessionChanges(set_values, set(self._deleted), self._cleared)

    def encoded_values(self) -> dict[str, bytes]:
        """Every value, encoded: what a new record holds."""
        self._load()
        encoded = dict(self._raw)
        encode = self._codec.encode
        for key, value in self._values.items():
            if key in self._set or key in self._watched or key not in encoded:
                try:
                    encoded[key] = encode(value)
                except UnserializableValue as exc:
                    raise naming_key(key, exc) from exc
        return encoded

    def plain_values(self) -> dict[str, Any]:
        """Every value, reserved ones included, decoded (cookie sessions serialize these)."""
        return {key: self._value(key) for key in self._all_keys()}

    def mark_saved(self) -> None:
        """Reset change tracking after a save, so a second save writes nothing."""
        # A key set or deleted is a change without encoding it again (the save just did).
        self._saved_changes = self._saved_changes or bool(
            self._force_save or self._meta_changed or self._cleared
            or (self._state is not None and (
                self._set or self._deleted or (self._watched and self.changes()))))
        if self._state is not None:
            self._set.clear()
            self._deleted.clear()
            self._watched.clear()
        self._cleared = False
        self._force_save = False
        self._meta_changed = False
        self._regenerate = False
        self._user_changed = False
