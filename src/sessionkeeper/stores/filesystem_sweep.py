"""The filesystem store's sweep: expired records, leftover temporary files and stale
index entries removed a few directory entries at a time.

A pass walks the directory lazily (``os.scandir``) and stops after ``batch`` entries;
the next new session continues it. No request ever waits for a whole directory. A
record's mtime is its expiry, so live records are skipped without being read; records
with an mtime in the past (expired, or written before mtimes were expiries) are read.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Protocol

from ..backend import logger
from .filesystem_index import UserIndex

SUFFIX = ".session"
#: temporary files of writes and start-up checks; left behind only by killed processes
TEMP_PREFIXES = (".tmp-", ".probe-")
#: seconds after which a temporary file or an entry without its record is abandoned
STALE_AGE = 60.0
#: directory entries looked at per new session
BATCH = 64


class Sweepable(Protocol):
    directory_path: str
    index: UserIndex

    def sweep_record(self, path: str, name: str, now: float, *, read: bool) -> int:
        """Remove the record at ``path`` if it is dead, index it if not; 1 if removed."""


def sweep_pass(store: Sweepable, now: float, *, rebuild_index: bool) -> Iterator[int]:
    """One pass, one directory entry per step; each step yields the records removed.

    ``rebuild_index`` reads every record (to index files written before the index
    existed) and marks the index complete at the end.
    """
    try:
        with os.scandir(store.directory_path) as entries:
            for entry in entries:
                yield _visit(store, entry, now, rebuild_index)
        yield from _sweep_index(store.index, store.directory_path)
    except FileNotFoundError:
        return  # the directory was removed; the next write recreates it
    if rebuild_index:
        store.index.mark_complete()


def _visit(store: Sweepable, entry: os.DirEntry[str], now: float, rebuild: bool) -> int:
    name = entry.name
    try:
        if name.endswith(SUFFIX) and not name.startswith("."):
            # A live record's mtime is its expiry: no need to read it.
            read = rebuild or entry.stat().st_mtime <= now
            return store.sweep_record(entry.path, name[: -len(SUFFIX)], now, read=read)
        if name.startswith(TEMP_PREFIXES) and entry.stat().st_mtime < time.time() - STALE_AGE:
            os.unlink(entry.path)
    except Exception:  # whatever one file does, the pass goes on
        logger.debug("sweep skipped %s", entry.path, exc_info=True)
    return 0


def _sweep_index(index: UserIndex, directory: str) -> Iterator[int]:
    """Entries whose record is gone (a crash between the two); young ones may belong
    to a record being written."""
    with os.scandir(index.root) as users:
        for user in users:
            if not user.is_dir(follow_symlinks=False):
                continue
            with os.scandir(user.path) as entries:
                for entry in entries:
                    with suppress(OSError):
                        if (not os.path.exists(os.path.join(directory, entry.name + SUFFIX))
                                and entry.stat().st_mtime < time.time() - STALE_AGE):
                            os.unlink(entry.path)
                    yield 0
            with suppress(OSError):
                os.rmdir(user.path)  # only succeeds when empty


class Sweeper:
    """Runs passes a batch at a time; one pass every ``interval`` seconds per process."""

    def __init__(self, store: Sweepable, *, interval: float, batch: int = BATCH) -> None:
        self.store = store
        self.interval = interval
        self.batch = batch
        self._next = 0.0
        self._reset()

    def _reset(self) -> None:
        # Per process: a fork must not share a half-done pass (or a held lock).
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._pass: Iterator[int] | None = None

    def step(self, now: float) -> None:
        """Continue (or start) a pass for at most ``batch`` entries."""
        if self._pass is None and now < self._next:
            return
        if self._pid != os.getpid():
            self._reset()
        if not self._lock.acquire(blocking=False):
            return  # another thread of this process is sweeping
        try:
            if self._pass is None:
                if now < self._next:
                    return
                rebuild = not self.store.index.complete()
                self._pass = sweep_pass(self.store, now, rebuild_index=rebuild)
            for _ in range(self.batch):
                next(self._pass)
        except StopIteration:
            self._finish(now)
        except Exception:  # the sweep never fails the request it rides on
            logger.warning("session file sweep stopped; tried again in %.0fs",
                           self.interval, exc_info=True)
            self._finish(now)
        finally:
            self._lock.release()

    def _finish(self, now: float) -> None:
        self._pass = None
        self._next = now + self.interval
