"""What the cachelib store needs to know about a ``FileSystemCache``: where its files
are, and how to remove the expired ones.

A FileSystemCache removes expired files only once it holds more than its ``threshold``
entries, and then also evicts live ones; with ``threshold=0`` (no eviction) it never
removes anything. So the store sweeps expired files itself: a batch at a time as new
sessions are created, and all at once from ``delete_expired`` (``flask sessions
cleanup``). A file's first four bytes are its expiry (cachelib's own format, a native
unsigned int of unix seconds, 0 for never): the sweep reads only those, never the
pickle behind them.
"""

from __future__ import annotations

import os
import secrets
import struct
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

_HEADER = struct.Struct("I")
#: seconds between two sweeps of the directory by one process
SWEEP_INTERVAL = 300.0
#: files one new session looks at while a sweep is under way
SWEEP_BATCH = 100


@dataclass(frozen=True)
class CacheDir:
    """The parts of a FileSystemCache the store uses (cachelib's own attributes)."""

    cache: Any
    path: str
    suffix: str  # cachelib ignores files with this suffix (its temporary files)
    threshold: int


def cache_dir(cache: Any) -> CacheDir | None:
    """The directory of a FileSystemCache, None for other caches (or a cachelib whose
    FileSystemCache no longer has these attributes)."""
    from cachelib.file import FileSystemCache

    if not isinstance(cache, FileSystemCache):
        return None
    path = getattr(cache, "_path", None)
    suffix = getattr(cache, "_fs_transaction_suffix", None)
    threshold = getattr(cache, "_threshold", None)
    if not isinstance(path, str) or not isinstance(suffix, str) or not suffix:
        return None
    return CacheDir(cache, os.path.abspath(path), suffix,
                    threshold if isinstance(threshold, int) else 0)


def remove_if_expired(folder: CacheDir, name: str, now: float) -> bool:
    """Remove the cache file ``name`` when its expiry has passed; True when removed.

    Moved aside first and checked again there, so a file written under the same name
    between the check and the move (a claim of that key) is put back, never lost.
    """
    path = os.path.join(folder.path, name)
    if name.endswith(folder.suffix) or not _expired(path, now):
        return False
    aside = f"{path}.{secrets.token_hex(4)}{folder.suffix}"
    try:
        os.rename(path, aside)
    except OSError:
        return False
    try:
        if _expired(aside, now):
            return True
        with suppress(FileExistsError):  # written again meanwhile: the newer one stays
            os.link(aside, path)
        return False
    finally:
        with suppress(OSError):
            os.unlink(aside)


def _expired(path: str, now: float) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
    except OSError:
        return False
    if len(head) < _HEADER.size:
        return False  # being written, or not a cache file
    (expires,) = _HEADER.unpack(head)
    return bool(expires != 0 and expires < now)


def _uncount(folder: CacheDir, removed: int) -> None:
    """Tell a counting cache (threshold > 0) that files went away."""
    update = getattr(folder.cache, "_update_count", None)
    if removed and folder.threshold and callable(update):
        with suppress(Exception):
            update(delta=-removed)


def sweep_all(folder: CacheDir, now: float) -> int:
    """Remove every expired file; how many."""
    try:
        names = os.listdir(folder.path)
    except OSError:
        return 0
    removed = sum(remove_if_expired(folder, name, now) for name in names)
    _uncount(folder, removed)
    return removed


class Sweeper:
    """The incremental sweep: every SWEEP_INTERVAL seconds a pass over the directory,
    SWEEP_BATCH files per new session, one thread at a time (the others skip)."""

    def __init__(self, folder: CacheDir, *, interval: float = SWEEP_INTERVAL,
                 batch: int = SWEEP_BATCH) -> None:
        self.folder = folder
        self.interval = interval
        self.batch = batch
        self._pending: list[str] = []
        # The first pass starts after one interval: start-up stays quick.
        self._next_pass = time.monotonic() + interval
        self._busy = threading.Lock()

    def step(self, now: float) -> int:
        if not self._pending and time.monotonic() < self._next_pass:
            return 0
        if not self._busy.acquire(blocking=False):
            return 0
        try:
            if not self._pending:
                try:
                    self._pending = os.listdir(self.folder.path)
                except OSError:
                    self._pending = []
                self._next_pass = time.monotonic() + self.interval
            batch = self._pending[-self.batch:]
            del self._pending[-self.batch:]
            removed = sum(remove_if_expired(self.folder, name, now) for name in batch)
            _uncount(self.folder, removed)
            return removed
        finally:
            self._busy.release()
