"""Sessions as files in a directory: one file per session, written atomically.

Layout of the directory:

- ``<percent-encoded key>.session``: one record. Its mtime is its expiry, so the sweep
  tells live files from expired ones without reading them.
- ``.users/<sha256 of user id>/<percent-encoded key>``: the per-user index
  (filesystem_index), one empty file per session bound to a user.
- ``.tmp-*``: a record being written, renamed into place; readers never see half a file
  and never wait.

A change of a session holds an ``flock`` on its own record file (filesystem_lock) for
at most ``lock_timeout`` seconds, so concurrent requests of one session never lose
updates and a stuck request never blocks another session. Expired files are removed a
batch at a time as new sessions are created (filesystem_sweep). Every folder is created
again when it was removed at run time.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from ..errors import ConfigurationError, StoreUnavailable, UndecodableRecord
from ..serialization import ValueCodec
from .base import RecordCodec, SessionRecord, SessionStore, SessionUpdate
from .filesystem_index import UserIndex, ensure_dir
from .filesystem_io import new_temp, read_fd, read_path, write_all
from .filesystem_lock import LockBusy, LockedRecord, SessionLocked, lock_record
from .filesystem_sweep import STALE_AGE, SUFFIX, Sweeper, sweep_pass

if TYPE_CHECKING:
    from ..settings import Settings

#: seconds a change waits for another request of the same session (SQLite's busy timeout)
DEFAULT_LOCK_TIMEOUT = 5.0
#: a refresh waits at most this long: a session being written is extended by that write
_TOUCH_WAIT = 0.05
_TEMP_PREFIX = ".tmp-"
_DIGEST = re.compile(r"[0-9a-f]{64}")
#: characters quote() leaves as they are
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


class FileSystemStore(SessionStore):
    name = "filesystem"
    sweeps_itself = True  # its sweep walks a batch of files as sessions are created

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        codec: ValueCodec | None = None,
        mode: int = 0o600,
        cleanup_interval: float = 300.0,
        key_prefix: str | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        """``key_prefix`` (SESSION_KEY_PREFIX) scopes ``keys_for_user`` to this app's
        keys and is checked against the file system's name length; None: every key."""
        if lock_timeout < 0:
            raise ConfigurationError(f"lock_timeout must not be negative, not {lock_timeout!r}")
        self.directory = Path(directory)
        self.directory_path = os.fspath(self.directory)
        self.records = RecordCodec(codec or ValueCodec())
        self.mode = mode
        # Folders get the file mode plus search permission where it allows reading.
        self.dir_mode = mode | ((mode & 0o444) >> 2) | 0o700
        self.cleanup_interval = cleanup_interval
        self.key_prefix = key_prefix
        self._quoted_prefix = quote(key_prefix or "", safe="")
        self._directory_slash = os.path.join(self.directory_path, "")
        self.lock_timeout = lock_timeout
        self._where = f"filesystem at {self.directory}"
        self.index = UserIndex(os.path.join(self.directory_path, ".users"),
                               dir_mode=self.dir_mode, file_mode=mode,
                               recreate=self._recreate)
        self._sweeper = Sweeper(self, interval=cleanup_interval)
        try:
            self._recreate()
        except OSError as exc:
            raise StoreUnavailable(self._where, exc) from exc
        if key_prefix is not None:
            self._check_name_length(key_prefix)

    # -- layout --------------------------------------------------------------------
    def _recreate(self) -> None:
        """Create the folders (again: a tmp cleaner may remove them at run time)."""
        ensure_dir(self.directory_path, self.dir_mode)
        if not self.index.complete() and not self._has_records():
            self.index.mark_complete()  # nothing written before the index to look for

    def _has_records(self) -> bool:
        with os.scandir(self.directory_path) as entries:
            return any(e.name.endswith(SUFFIX) and not e.name.startswith(".")
                       for e in entries)

    def _check_name_length(self, key_prefix: str) -> None:
        try:
            limit = os.pathconf(self.directory_path, "PC_NAME_MAX")
        except (OSError, ValueError):
            limit = 255
        longest = len(self._name(key_prefix + "0" * 64)) + len(SUFFIX)
        if 0 < limit < longest:
            room = limit - 64 - len(SUFFIX)
            raise ConfigurationError(
                f"SESSION_KEY_PREFIX is too long for the filesystem store: session file "
                f"names would be {longest} bytes, and the file system of SESSION_FILE_DIR "
                f"({self.directory}) allows {limit}. Set a SESSION_KEY_PREFIX of at most "
                f"{room} bytes once percent-encoded (letters, digits and - _ . ~ take one; "
                "any other character three per UTF-8 byte)")

    def _name(self, key: str) -> str:
        # Percent-encoding makes any key one safe file name and is reversible, so
        # keys_for_user hands back exactly the keys it was given. This app's keys (its
        # prefix, then hex) reuse the prefix's encoding: quote() walks every byte.
        prefix = self.key_prefix
        if prefix is not None and key.startswith(prefix) and _UNRESERVED.fullmatch(
                key, len(prefix)) is not None:
            return self._quoted_prefix + key[len(prefix):]
        return quote(key, safe="")

    def _path(self, key: str) -> str:
        return f"{self._directory_slash}{self._name(key)}{SUFFIX}"

    def _in_scope(self, key: str) -> bool:
        """True for this app's session keys: its prefix followed by a digest only, so
        an app whose prefix extends this one's is not mistaken for it."""
        prefix = self.key_prefix
        if prefix is None:
            return True
        return key.startswith(prefix) and _DIGEST.fullmatch(key, len(prefix)) is not None

    # -- reading and writing -------------------------------------------------------
    def _decode(self, blob: bytes) -> SessionRecord:
        try:
            return self.records.loads(blob)
        except UndecodableRecord as exc:
            raise UndecodableRecord(self.name, exc.reason) from exc

    def _read(self, path: str) -> SessionRecord | None:
        """The record at ``path``; None when there is none."""
        try:
            blob = read_path(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(self._where, exc) from exc
        return self._decode(blob)

    def _read_fd(self, fd: int) -> SessionRecord | None:
        """The record behind a locked descriptor; None when it cannot be decoded (a
        change cannot apply to it; the core removes it at its next load)."""
        try:
            return self._decode(read_fd(fd))
        except UndecodableRecord:
            return None
        except OSError as exc:
            raise StoreUnavailable(self._where, exc) from exc

    def _temp_file(self) -> tuple[int, str]:
        try:
            return new_temp(self.directory_path, _TEMP_PREFIX)
        except FileNotFoundError:
            self._recreate()
            return new_temp(self.directory_path, _TEMP_PREFIX)

    def _new_file(self, record: SessionRecord) -> tuple[int, str]:
        """A temporary file holding ``record``, still open; the caller renames or
        ``_discard``s it."""
        blob = self.records.dumps(record)
        fd, tmp = self._temp_file()
        try:
            write_all(fd, blob)
            if self.mode != 0o600:  # the temporary file's mode
                os.fchmod(fd, self.mode)
        except BaseException:
            self._discard(fd, tmp)
            raise
        return fd, tmp

    @staticmethod
    def _discard(fd: int, tmp: str) -> None:
        os.close(fd)
        with suppress(FileNotFoundError):
            os.unlink(tmp)

    @staticmethod
    def _stamp_expiry(fd: int, record: SessionRecord) -> None:
        # The sweep's hint only (the record itself decides), so a failure is harmless.
        with suppress(OSError, ValueError, OverflowError):
            os.utime(fd, (time.time(), record.expires_at))

    def _write(self, path: str, record: SessionRecord) -> None:
        try:
            fd, tmp = self._new_file(record)
            try:
                os.replace(tmp, path)
            except BaseException:
                self._discard(fd, tmp)
                raise
            try:
                self._stamp_expiry(fd, record)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreUnavailable(self._where, exc) from exc

    def _index_add(self, user_id: str, key: str) -> None:
        try:
            self.index.add(user_id, self._name(key))
        except OSError as exc:
            raise StoreUnavailable(self._where, exc) from exc

    def _locked(self, path: str, wait: float | None = None) -> AbstractContextManager[int | None]:
        return LockedRecord(path, self.lock_timeout if wait is None else wait, self._where)

    # -- the store interface -------------------------------------------------------
    def load(self, key: str, now: float) -> SessionRecord | None:
        record = self._read(self._path(key))
        if record is None or record.expires_at <= now:
            return None
        return record

    def create(self, key: str, record: SessionRecord) -> None:
        if record.user_id is not None:
            self._index_add(record.user_id, key)  # before the record: never unlisted
        self._write(self._path(key), record)
        self._sweeper.step(record.accessed_at)

    def add(self, key: str, record: SessionRecord) -> bool:
        if record.user_id is not None:
            self._index_add(record.user_id, key)  # a stale entry at worst, dropped on read
        path = self._path(key)
        try:
            fd, tmp = self._new_file(record)
            try:
                claimed = self._claim(tmp, path, record.accessed_at)
                if claimed:
                    self._stamp_expiry(fd, record)
            finally:
                self._discard(fd, tmp)  # a claim links or renames it: the name is spare
        except OSError as exc:
            raise StoreUnavailable(self._where, exc) from exc
        self._sweeper.step(record.accessed_at)
        return claimed

    def _claim(self, tmp: str, path: str, now: float) -> bool:
        """Give ``tmp`` the record's name unless a live record has it."""
        for _ in range(3):
            try:
                os.link(tmp, path)  # fails when the name exists: one claim wins
                return True
            except FileExistsError:
                pass
            with self._locked(path) as fd:
                if fd is None:
                    continue  # removed meanwhile: try to claim it again
                old = self._read_fd(fd)
                if old is not None and old.expires_at > now:
                    return False
                os.replace(tmp, path)  # an expired or damaged record counts as absent
                return True
        return False

    def update(self, key: str, update: SessionUpdate) -> bool:
        path = self._path(key)
        with self._locked(path) as fd:
            record = None if fd is None else self._read_fd(fd)
            if record is None:
                return False
            was = record.user_id
            record.apply(update)
            if record.user_id is not None and record.user_id != was:
                self._index_add(record.user_id, key)
            self._write(path, record)
            if was is not None and was != record.user_id:
                self.index.remove(was, self._name(key))
        return True

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        path = self._path(key)
        try:
            with self._locked(path, min(self.lock_timeout, _TOUCH_WAIT)) as fd:
                record = None if fd is None else self._read_fd(fd)
                if record is None or record.expires_at <= accessed_at:
                    return False  # gone, or expired: never revived
                record.accessed_at, record.expires_at = accessed_at, expires_at
                self._write(path, record)
                return True
        except SessionLocked:
            # Another request of this session holds it (and its write extends it too):
            # a read never waits for a refresh.
            try:
                record = self._read(path)
            except UndecodableRecord:
                return False
            return record is not None and record.expires_at > accessed_at

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._locked(path) as fd:
            if fd is None:
                return
            record = self._read_fd(fd)
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise StoreUnavailable(self._where, exc) from exc
            if record is not None and record.user_id is not None:
                self.index.remove(record.user_id, self._name(key))

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        if not self.index.complete():
            return self._scan_for_user(user_id, now)  # files written before the index
        keys = []
        for name in self.index.names(user_id):
            key = unquote(name)
            if not self._in_scope(key):
                continue
            path = os.path.join(self.directory_path, name + SUFFIX)
            try:
                record = self._read(path)
            except UndecodableRecord:
                record = None
            if record is not None and record.user_id == user_id and record.expires_at > now:
                keys.append(key)
            else:
                self._prune(user_id, name, path, now)
        return keys

    def _prune(self, user_id: str, name: str, path: str, now: float) -> None:
        """Drop an entry whose record is gone, expired or now someone else's."""
        try:
            fd = lock_record(path, 0.0)
        except (LockBusy, OSError):
            return  # being written: decided on a later read
        if fd is None:
            self.index.remove_if_older(user_id, name, STALE_AGE)
            return
        try:
            record = self._read_fd(fd)
            if record is None or record.user_id != user_id or record.expires_at <= now:
                self.index.remove(user_id, name)
        finally:
            os.close(fd)

    def _scan_for_user(self, user_id: str, now: float) -> list[str]:
        keys: list[str] = []
        try:
            entries = os.scandir(self.directory_path)
        except FileNotFoundError:
            return keys
        with entries:
            for entry in entries:
                if not entry.name.endswith(SUFFIX) or entry.name.startswith("."):
                    continue
                key = unquote(entry.name[: -len(SUFFIX)])
                try:
                    record = self._read(entry.path) if self._in_scope(key) else None
                except UndecodableRecord:
                    continue
                if record is not None and record.user_id == user_id and record.expires_at > now:
                    keys.append(key)
        return keys

    def delete_expired(self, now: float) -> int:
        """A whole pass at once (``flask sessions cleanup``); requests sweep a batch."""
        return sum(sweep_pass(self, now, rebuild_index=not self.index.complete()))

    def sweep_record(self, path: str, name: str, now: float, *, read: bool) -> int:
        """The sweep's visit of one record: 1 when it was dead and removed."""
        if not read:
            return 0
        try:
            fd = lock_record(path, 0.0)
        except LockBusy:
            # In use, so not dead; still indexed if the index is being built.
            with suppress(UndecodableRecord):
                self._index_existing(name, self._read(path), now)
            return 0
        if fd is None:
            return 0
        try:
            record = self._read_fd(fd)
            if record is not None and record.expires_at > now:
                # Written before expiries were mtimes (or before the index): fix both.
                self._index_existing(name, record, now)
                self._stamp_expiry(fd, record)
                return 0
            os.unlink(path)
            if record is not None and record.user_id is not None:
                self.index.remove(record.user_id, name)
            return 1
        finally:
            os.close(fd)

    def _index_existing(self, name: str, record: SessionRecord | None, now: float) -> None:
        if record is not None and record.user_id is not None and record.expires_at > now:
            self.index.add(record.user_id, name)

    def check(self) -> None:
        try:
            try:
                self._probe()
            except FileNotFoundError:
                self._recreate()
                self._probe()
        except OSError as exc:
            raise StoreUnavailable(self._where, exc) from exc

    def _probe(self) -> None:
        # A probe of its own: workers starting together must not delete each other's.
        with tempfile.NamedTemporaryFile(dir=self.directory_path, prefix=".probe-"):
            pass


def store_from_settings(settings: Settings, codec: ValueCodec) -> FileSystemStore:
    """The store SESSION_TYPE="filesystem" describes (SESSION_FILE_*, SESSION_KEY_PREFIX)."""
    from ..settings import seconds

    config = settings.config
    # Flask-Session's default directory, so switching keeps the same place on disk.
    directory = config.get("SESSION_FILE_DIR") or os.path.join(os.getcwd(), "flask_session")
    timeout = config.get("SESSION_FILE_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)
    return FileSystemStore(
        directory, codec=codec, mode=config.get("SESSION_FILE_MODE", 0o600),
        key_prefix=settings.key_prefix,
        lock_timeout=seconds(timeout, "SESSION_FILE_LOCK_TIMEOUT"),
    )
