"""The filesystem store's per-user index: ``.users/<sha256 of user id>/<record name>``.

One empty file per session bound to the user, so listing a user's sessions reads one
small directory instead of every record. Entries are written before the record they
name and removed after it, so a crash leaves a stale entry (dropped later), never a
session missing from its user's list.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from contextlib import suppress

#: marks an index that lists every record (written once all older files were indexed)
MARKER = ".complete"


def ensure_dir(path: str, mode: int) -> None:
    """Create ``path`` and any missing parents, each with ``mode``."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    except FileNotFoundError:
        ensure_dir(os.path.dirname(path), mode)
        with suppress(FileExistsError):
            os.mkdir(path, mode)


class UserIndex:
    def __init__(self, root: str, *, dir_mode: int, file_mode: int,
                 recreate: Callable[[], None]) -> None:
        self.root = root
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        #: called when the store's directory is gone (removed at run time)
        self._recreate = recreate

    def user_dir(self, user_id: str) -> str:
        digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()
        return os.path.join(self.root, digest)

    def add(self, user_id: str, name: str) -> None:
        folder = self.user_dir(user_id)
        path = os.path.join(folder, name)
        for _ in range(3):  # the sweep may remove an empty user folder meanwhile
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, self.file_mode)
            except FileNotFoundError:
                if not os.path.isdir(self.root):
                    self._recreate()
                ensure_dir(folder, self.dir_mode)
                continue
            try:
                os.utime(fd)  # young: the sweep leaves it alone while its record is written
            finally:
                os.close(fd)
            return
        raise FileNotFoundError(path)

    def remove(self, user_id: str, name: str) -> None:
        # After the record changed, a failure only leaves a stale entry, dropped later.
        with suppress(OSError):
            os.unlink(os.path.join(self.user_dir(user_id), name))

    def remove_if_older(self, user_id: str, name: str, age: float) -> None:
        """Remove an entry whose record is missing, unless it may be one being created."""
        path = os.path.join(self.user_dir(user_id), name)
        with suppress(OSError):
            if os.stat(path).st_mtime < time.time() - age:
                os.unlink(path)

    def names(self, user_id: str) -> list[str]:
        try:
            return os.listdir(self.user_dir(user_id))
        except FileNotFoundError:
            return []

    def complete(self) -> bool:
        return os.path.exists(os.path.join(self.root, MARKER))

    def mark_complete(self) -> None:
        ensure_dir(self.root, self.dir_mode)
        os.close(os.open(os.path.join(self.root, MARKER), os.O_WRONLY | os.O_CREAT,
                         self.file_mode))
