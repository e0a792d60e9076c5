"""Short per-session locks for the cachelib store, which has no compare-and-swap.

Two kinds, chosen by the cache:

- :class:`AddLocks`: a lock is a cache entry claimed with ``cache.add`` (atomic on
  Redis/Valkey ``SETNX``, memcached ``add``, DynamoDB conditional puts and SimpleCache's
  own lock) with a short timeout, so a holder that died frees it by itself. Its value
  carries its deadline, so a lock that lost its timeout (RedisCache sets it with a
  second command after ``SETNX``) is recognised as stale and removed.
- :class:`FileLocks`: for ``FileSystemCache``, whose ``add`` is a check-then-write two
  processes can both win. ``flock`` on one of 256 lock files in the cache directory,
  named with cachelib's temporary-file suffix so the cache never counts, prunes or
  clears them. The kernel releases it when its holder dies.

Waiting polls with a growing, jittered pause and gives up after a bounded wait with
:class:`SessionBusy`: one stuck request blocks only its own session, and only that long.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import random
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from ..errors import SessionContention, StoreUnavailable

logger = logging.getLogger("sessionkeeper")

#: seconds a lock entry lives: far above the few milliseconds a holder keeps it
LOCK_TTL = 5
#: seconds a writer waits for a lock: past LOCK_TTL, so a lock left by a holder that
#: died is outlived by the requests waiting behind it
LOCK_WAIT = LOCK_TTL + 1.0
LOCK_SUFFIX = ":lock"
STRIPES = 256
_FIRST_PAUSE = 0.0005
_LONGEST_PAUSE = 0.02
#: a waiter looks at the holder's deadline this often (one read)
_STALE_CHECK_EVERY = 1.0
_DEADLINE = struct.Struct(">d")
_TOKEN_BYTES = 8


class SessionBusy(SessionContention):
    """One session's lock stayed taken (a request of that session is stuck) for the
    whole wait. Other sessions are unaffected."""

    def __init__(self, store: str, waited: float) -> None:
        super().__init__(store, f"another request of this session held its lock for "
                                f"more than {waited:g}s")


class Locks(Protocol):
    def hold(self, key: str, family: str) -> Any:
        """A context manager holding the lock of ``key`` (``family``: "r" records,
        "i" user indexes, so holding an index lock while taking a record lock never
        waits on itself)."""


def _pauses(wait: float) -> Iterator[float]:
    """Jittered, growing pauses until ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    pause = _FIRST_PAUSE
    while (remaining := deadline - time.monotonic()) > 0:
        yield min(random.uniform(pause / 2, pause), remaining)
        pause = min(pause * 2, _LONGEST_PAUSE)


class AddLocks:
    """Locks as cache entries claimed with ``add``; see the module doc."""

    def __init__(self, cache: Any, call: Callable[..., Any], store: str, *,
                 ttl: int = LOCK_TTL, wait: float = LOCK_WAIT) -> None:
        self.cache = cache
        self.call = call  # the store's wrapper: driver errors become StoreUnavailable
        self.store = store
        self.ttl = ttl
        self.wait = wait

    @contextmanager
    def hold(self, key: str, family: str = "r") -> Iterator[None]:
        lock_key = key + LOCK_SUFFIX
        token = self._acquire(lock_key)
        try:
            yield
        finally:
            self._release(lock_key, token)

    def _acquire(self, lock_key: str) -> bytes:
        token = os.urandom(_TOKEN_BYTES) + _DEADLINE.pack(time.time() + self.ttl)
        if self.call(self.cache.add, lock_key, token, self.ttl):
            return token
        next_check = time.monotonic() + _STALE_CHECK_EVERY
        for pause in _pauses(self.wait):
            time.sleep(pause)
            if self.call(self.cache.add, lock_key, token, self.ttl):
                return token
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + _STALE_CHECK_EVERY
                self._remove_if_stale(lock_key)
        raise SessionBusy(self.store, self.wait)

    def _remove_if_stale(self, lock_key: str) -> None:
        """Remove a lock whose deadline passed long ago but which is still there (its
        timeout was never set). Read twice, so a lock another waiter just took over is
        left alone; the window left between the second read and the delete is a few
        microseconds, once per lock that lost its timeout."""
        held = self.call(self.cache.get, lock_key)
        if held is None or not _expired(held):
            return
        if self.call(self.cache.get, lock_key) == held:
            logger.warning("removed a session lock left without a timeout")
            self.call(self.cache.delete, lock_key)

    def _release(self, lock_key: str, token: bytes) -> None:
        try:
            # Only our own: a lock that outlived its timeout may be someone else's now.
            if self.call(self.cache.get, lock_key) == token:
                self.call(self.cache.delete, lock_key)
        except StoreUnavailable as exc:
            # The write itself is done; the lock's timeout frees it.
            logger.warning("a session lock could not be released (%s); it expires in %ds",
                           exc.reason, self.ttl)


def _expired(held: object) -> bool:
    if not isinstance(held, bytes) or len(held) != _TOKEN_BYTES + _DEADLINE.size:
        return True  # not a lock this store wrote
    (deadline,) = _DEADLINE.unpack_from(held, _TOKEN_BYTES)
    return bool(deadline < time.time() - 1.0)


class FileLocks:
    """``flock`` on striped lock files in a FileSystemCache's directory."""

    def __init__(self, directory: str, suffix: str, store: str, *,
                 wait: float = LOCK_WAIT) -> None:
        self.directory = directory
        self.suffix = suffix
        self.store = store
        self.wait = wait

    def path(self, key: str, family: str = "r") -> str:
        stripe = hashlib.sha256(key.encode("utf-8")).digest()[0] % STRIPES
        return os.path.join(self.directory, f"sessionkeeper-lock-{family}{stripe:02x}"
                                            f"{self.suffix}")

    @contextmanager
    def hold(self, key: str, family: str = "r") -> Iterator[None]:
        try:
            fd = os.open(self.path(key, family), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreUnavailable(self.store, exc) from exc
        try:
            try:
                self._lock(fd)
            except OSError as exc:  # no flock on this filesystem, say
                raise StoreUnavailable(self.store, exc) from exc
            yield
        finally:
            os.close(fd)  # unlocks

    def _lock(self, fd: int) -> None:
        if _try_flock(fd):
            return
        for pause in _pauses(self.wait):
            time.sleep(pause)
            if _try_flock(fd):
                return
        raise SessionBusy(self.store, self.wait)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
