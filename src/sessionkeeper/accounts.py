"""A user's sessions: list them with what is known about each device, revoke one, all,
or all but the current one (OWASP ASVS 4.0.3 3.3.3/3.3.4, 5.0 7.4.2/7.4.5/7.5.2).

Server-side sessions are found through the store's per-user index and revoked by
deleting their records: the revoked device is logged out on its very next request.
Cookie sessions cannot be enumerated; :class:`CookieUserSessions` knows only the
current one and revokes the others with a per-user "not before" stamp.

Every session is named by a *handle*: an opaque, non-secret reference for "revoke this
one" links. It is never the session id, and cannot be turned into one.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import signals
from .backend import logger
from .client_side import CookieSessions
from .errors import UndecodableRecord
from .model import DEVICE_KEY, Session
from .server_side import ServerSideSessions
from .stores.base import SessionRecord

_HANDLE_LABEL = b"sessionkeeper-handle:"


@dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, as a "your devices" page shows it."""

    handle: str
    user_id: str
    created_at: float
    #: when the session was last written or refreshed (accurate to SESSION_REFRESH_FRACTION
    #: of the session's window: read-only requests refresh it only that often)
    last_seen: float
    expires_at: float
    user_agent: str | None
    ip: str | None
    #: the session of the request asking
    current: bool


def handle_of_key(key: str) -> str:
    """The handle of the server-side session stored under ``key``."""
    return hashlib.sha256(_HANDLE_LABEL + key.encode("utf-8")).hexdigest()[:32]


def _device_fields(device: Any) -> tuple[str | None, str | None]:
    if not isinstance(device, dict):
        return None, None
    agent, ip = device.get("user_agent"), device.get("ip")
    return (agent if isinstance(agent, str) else None, ip if isinstance(ip, str) else None)


class UserSessions:
    """The sessions of each user in a :class:`ServerSideSessions` backend's store."""

    def __init__(self, backend: ServerSideSessions) -> None:
        self.backend = backend

    def list(self, user_id: str | int, current: str | None = None) -> list[SessionInfo]:
        """The user's live sessions, most recently seen first.

        ``current`` is the session id of the asking request (``session.sid``), marked
        ``current=True`` in the result.
        """
        uid = str(user_id)
        current_key = self.backend.key(current) if current else None
        found = [self._info(key, record, uid, current_key)
                 for key, record in self._live(uid)]
        return sorted(found, key=lambda info: info.last_seen, reverse=True)

    def revoke(self, user_id: str | int, handle: str) -> bool:
        """End the session ``handle`` names if it is one of ``user_id``'s; True if it was."""
        uid = str(user_id)
        for key, _record in self._live(uid):
            if handle_of_key(key) == handle:
                self._revoke(key, uid)
                return True
        return False

    def revoke_all(self, user_id: str | int, keep: str | None = None) -> int:
        """End every session of the user but ``keep`` (a session id); returns how many."""
        uid = str(user_id)
        keep_key = self.backend.key(keep) if keep else None
        revoked = 0
        for key, _record in self._live(uid):
            if key != keep_key:
                self._revoke(key, uid)
                revoked += 1
        return revoked

    # -- helpers -------------------------------------------------------------------
    def _live(self, user_id: str) -> builtins.list[tuple[str, SessionRecord]]:
        """The user's sessions as the store keeps them, skipping index entries whose
        record is gone, expired, timed out or now bound to someone else."""
        backend = self.backend
        now = backend.clock()
        live = []
        for key in backend.store.keys_for_user(user_id, now):
            try:
                record = backend.store.load(key, now)
            except UndecodableRecord:
                continue  # damaged: not a session anyone can use, so not listed
            if (record is not None and record.user_id == user_id
                    and not backend.policy.is_expired(record.created_at, record.expires_at,
                                                      now, record.accessed_at)):
                live.append((key, record))
        return live

    def _info(self, key: str, record: SessionRecord, user_id: str,
              current_key: str | None) -> SessionInfo:
        agent, ip = None, None
        raw = record.values.get(DEVICE_KEY)
        if raw is not None:
            # Device details are a courtesy: a damaged entry shows as unknown.
            with contextlib.suppress(ValueError):
                agent, ip = _device_fields(self.backend.codec.decode(raw))
        return SessionInfo(
            handle=handle_of_key(key), user_id=user_id, created_at=record.created_at,
            last_seen=record.accessed_at, expires_at=record.expires_at,
            user_agent=agent, ip=ip, current=key == current_key,
        )

    def _revoke(self, key: str, user_id: str) -> None:
        backend = self.backend
        backend.store.delete(key)
        log_id = backend.log_id_of_key(key)
        logger.info("session %s revoked", log_id)
        signals.session_revoked.send(backend, log_id=log_id, user_id=user_id,
                                     handle=handle_of_key(key))


class CookieUserSessions:
    """The same operations for cookie sessions, which the server cannot enumerate.

    ``list`` knows only the current session; ``revoke_all`` and ``revoke_others`` store
    a "not before" stamp for the user, refusing every cookie bound before it (the
    current one is re-stamped by ``revoke_others`` so it stays valid).
    """

    def __init__(self, backend: CookieSessions) -> None:
        self.backend = backend

    def list(self, user_id: str | int, current: Session) -> list[SessionInfo]:
        info = self.info(current)
        return [info] if info is not None and info.user_id == str(user_id) else []

    def info(self, session: Session) -> SessionInfo | None:
        """What is known about the current cookie session (None when not bound)."""
        state = session.state
        if state.user_id is None:
            return None
        agent, ip = _device_fields(session.device)
        return SessionInfo(
            handle=state.handle or "", user_id=state.user_id, created_at=state.created_at,
            last_seen=state.accessed_at, expires_at=state.expires_at, user_agent=agent,
            ip=ip, current=True,
        )

    def revoke(self, user_id: str | int, handle: str, current: Session) -> bool:
        """Only the current session's handle is known here: revoking it logs it out."""
        info = self.info(current)
        if info is None or info.user_id != str(user_id) or not handle or handle != info.handle:
            return False
        current.logout()  # the save revokes the handle, so copies of the cookie die too
        self._signal(info.user_id, "one")
        return True

    def revoke_all(self, user_id: str | int, current: Session | None = None) -> int:
        """Refuse every cookie session of the user from now on; returns 1 when that
        included the current session (the others cannot be counted)."""
        uid = str(user_id)
        self._revoke_before_now(uid, "all")
        if current is not None and current.user_id == uid:
            current.logout()
            return 1
        return 0

    def revoke_others(self, user_id: str | int, current: Session) -> int:
        """Refuse every cookie session of the user except ``current``; returns 0 (the
        others cannot be counted)."""
        uid = str(user_id)
        stamp = self._revoke_before_now(uid, "others")
        if current.user_id == uid:
            self.backend.restamp(current, after=stamp)
        return 0

    def _revoke_before_now(self, user_id: str, scope: str) -> float:
        revocations = self.backend.revocations
        if revocations is None:
            raise RuntimeError("this cookie backend was built without a revocation list")
        stamp = self.backend.clock()
        revocations.revoke_user(user_id, stamp)
        self._signal(user_id, scope)
        return stamp

    def _signal(self, user_id: str, scope: str) -> None:
        logger.info("cookie sessions revoked (%s)", scope)
        signals.session_revoked.send(self.backend, log_id="-", user_id=user_id, scope=scope)


class AsyncUserSessions:
    """``await`` forms of :class:`UserSessions`, each call run by ``run_in_thread``
    (an integration's store threads), so an event loop never waits on the store."""

    def __init__(self, sessions: UserSessions,
                 run_in_thread: Callable[..., Awaitable[Any]]) -> None:
        self._sessions = sessions
        self._run = run_in_thread

    async def list(self, user_id: str | int,
                   current: str | None = None) -> builtins.list[SessionInfo]:
        """The user's live sessions, most recently seen first; ``current`` (the asking
        request's ``session.sid``) is marked ``current=True``."""
        found: builtins.list[SessionInfo] = await self._run(self._sessions.list, user_id, current)
        return found

    async def revoke(self, user_id: str | int, handle: str) -> bool:
        """End the session ``handle`` names if it is one of the user's; True if it was."""
        revoked: bool = await self._run(self._sessions.revoke, user_id, handle)
        return revoked

    async def revoke_all(self, user_id: str | int, keep: str | None = None) -> int:
        """End every session of the user but ``keep`` (a session id); how many ended."""
        ended: int = await self._run(self._sessions.revoke_all, user_id, keep)
        return ended
