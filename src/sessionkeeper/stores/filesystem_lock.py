"""The filesystem store's per-session lock: an ``flock`` on the record file itself.

A record is replaced by renaming a new file over it, so a lock taken on a file is
checked once held: when the path now names another file (or none), the lock is dropped
and taken on the current one. ``flock`` cannot wait with a timeout, so waiting polls
with a growing pause: a frozen holder blocks only its own session, and only for the
bounded wait.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from ..errors import SessionContention, StoreUnavailable

_FIRST_PAUSE = 0.0002
_LONGEST_PAUSE = 0.01


class LockBusy(Exception):
    """The record stayed locked by someone else for the whole wait."""


class SessionLocked(SessionContention):
    """One session's record stayed locked (a request of that session is stuck) for
    longer than the filesystem store's lock timeout. Other sessions are unaffected."""

    def __init__(self, store: str, waited: float) -> None:
        super().__init__(store, f"another request of this session has held its lock for "
                                f"more than {waited:g}s (SESSION_FILE_LOCK_TIMEOUT)")


#: Records are locked through read-only descriptors: closing a descriptor opened for
#: writing costs ext4 more (the last writer's close releases its block preallocations),
#: and the lock's close is the one that frees a replaced record. Where an exclusive
#: flock needs write access (NFS emulates it with fcntl locks), every later lock opens
#: the file for writing instead.
_open_flags = os.O_RDONLY


class _Reopen(Exception):
    """The file system wants a writable descriptor for the lock: open it again."""


def _need_write_access() -> None:
    global _open_flags
    _open_flags = os.O_RDWR


def _same_file(fd: int, path: str) -> bool:
    held = os.fstat(fd)
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)


def lock_record(path: str, wait: float) -> int | None:
    """A descriptor of the file at ``path``, exclusively locked (closing it unlocks);
    None when there is no such file. Raises :class:`LockBusy` after ``wait`` seconds
    (``wait=0``: one try)."""
    deadline = time.monotonic() + wait
    pause = _FIRST_PAUSE
    while True:
        try:
            fd = os.open(path, _open_flags)
        except FileNotFoundError:
            return None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno == errno.EBADF and _open_flags == os.O_RDONLY:
                        _need_write_access()
                        raise _Reopen from None
                    if not isinstance(exc, BlockingIOError):
                        raise
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise LockBusy(path) from None
                    time.sleep(min(pause, remaining))
                    pause = min(pause * 2, _LONGEST_PAUSE)
            if _same_file(fd, path):
                return fd
        except _Reopen:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced or removed while we waited: lock the current file
        if time.monotonic() >= deadline:
            raise LockBusy(path)


class LockedRecord:
    """``lock_record`` for a ``with`` block; :class:`SessionLocked` after ``wait``.
    A class rather than a generator: it is entered on every change of a session."""

    __slots__ = ("_fd", "_path", "_store", "_wait")

    def __init__(self, path: str, wait: float, store: str) -> None:
        self._path, self._wait, self._store = path, wait, store
        self._fd: int | None = None

    def __enter__(self) -> int | None:
        try:
            self._fd = lock_record(self._path, self._wait)
        except LockBusy:
            raise SessionLocked(self._store, self._wait) from None
        except OSError as exc:
            raise StoreUnavailable(self._store, exc) from exc
        return self._fd

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
