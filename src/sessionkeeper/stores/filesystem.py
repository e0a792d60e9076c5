"""Sessions as files in a directory: one file per session, written atomically.

Writes go to a temporary file renamed over the old one, so readers never see half a
file. Delta saves hold an ``flock`` on one of a fixed set of lock files (picked by key),
so concurrent requests of one session - in threads or processes - never lose updates.
There is no eviction by count: expired files are removed instead.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

from ..errors import StoreUnavailable
from ..serialization import ValueCodec
from .base import RecordCodec, SessionRecord, SessionStore, SessionUpdate

_SUFFIX = ".session"
_LOCK_SLOTS = 64


class FileSystemStore(SessionStore):
    name = "filesystem"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        codec: ValueCodec | None = None,
        mode: int = 0o600,
        cleanup_interval: float = 300.0,
    ) -> None:
        self.directory = Path(directory)
        self.records = RecordCodec(codec or ValueCodec())
        self.mode = mode
        self.cleanup_interval = cleanup_interval
        self._next_cleanup = 0.0
        self._locks = self.directory / ".locks"
        try:
            self._locks.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"filesystem at {self.directory}", exc) from exc

    def _path(self, key: str) -> Path:
        # Percent-encoding makes any key one safe file name and is reversible, so
        # keys_for_user hands back exactly the keys it was given.
        return self.directory / (quote(key, safe="") + _SUFFIX)

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        slot = zlib.crc32(key.encode()) % _LOCK_SLOTS
        try:
            fd = os.open(self._locks / f"{slot:02d}", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreUnavailable(f"filesystem at {self.directory}", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self, path: Path) -> SessionRecord | None:
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"filesystem at {self.directory}", exc) from exc
        try:
            return self.records.loads(blob)
        except ValueError:
            return None  # a damaged file is treated as no session, never as a crash

    def _write(self, path: Path, record: SessionRecord) -> None:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(self.records.dumps(record))
                os.chmod(tmp, self.mode)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            raise StoreUnavailable(f"filesystem at {self.directory}", exc) from exc

    def load(self, key: str, now: float) -> SessionRecord | None:
        record = self._read(self._path(key))
        if record is None or record.expires_at <= now:
            return None
        return record

    def create(self, key: str, record: SessionRecord) -> None:
        self._write(self._path(key), record)
        self._maybe_cleanup(record.accessed_at)

    def update(self, key: str, update: SessionUpdate) -> bool:
        path = self._path(key)
        with self._locked(key):
            record = self._read(path)
            if record is None:
                return False
            record.apply(update)
            self._write(path, record)
        return True

    def touch(self, key: str, accessed_at: float, expires_at: float) -> None:
        path = self._path(key)
        with self._locked(key):
            record = self._read(path)
            if record is not None:
                record.accessed_at, record.expires_at = accessed_at, expires_at
                self._write(path, record)

    def delete(self, key: str) -> None:
        with self._locked(key):
            self._path(key).unlink(missing_ok=True)

    def _files(self) -> Iterator[Path]:
        return self.directory.glob("*" + _SUFFIX)

    def delete_expired(self, now: float) -> int:
        removed = 0
        for path in self._files():
            record = self._read(path)
            if record is None or record.expires_at <= now:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        keys = []
        for path in self._files():
            record = self._read(path)
            if record is not None and record.user_id == user_id and record.expires_at > now:
                keys.append(unquote(path.name[: -len(_SUFFIX)]))
        return keys

    def check(self) -> None:
        try:
            # A probe of its own: workers starting together must not delete each other's.
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-"):
                pass
        except OSError as exc:
            raise StoreUnavailable(f"filesystem at {self.directory}", exc) from exc

    def _maybe_cleanup(self, now: float) -> None:
        if now >= self._next_cleanup:
            self._next_cleanup = now + self.cleanup_interval
            self.delete_expired(time.time())
