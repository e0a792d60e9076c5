"""Flask-Session's sessions in cachelib caches: its ``filesystem`` backend and its
``cachelib`` backend (any cachelib cache in SESSION_CACHELIB).

Both hand cachelib ``dict(session)`` (Flask-Session's MessagePack/JSON serializer is not
used), and cachelib pickles it (``P`` is SESSION_KEY_PREFIX, ``sid`` the cookie's id):

- FileSystemCache: a file named ``hash(P + sid)`` (sha256, unless the cache was made
  with another ``hash_method``) holding a 4-byte native expiry (0 = never), then the
  pickle;
- RedisCache / ValkeyCache: the key ``<the cache's key_prefix>P + sid`` holding
  ``b"!" + pickle``, with a TTL of the remaining life.

So every such session is pickled: it is converted only by the command, with
``--allow-pickle``, by the loader limited to plain data (legacy.load_pickled_payload);
never while a request is served. sessionkeeper's cachelib store may share the cache:
what it stores unpickles to ``bytes``, and Flask-Session's entries to a dict, which
:func:`legacy.pickle_opens_dict` tells apart without unpickling.

A file's name cannot be turned back into its ``sid``, so a converted file is kept under
a key derived from that name (:func:`converted_file_key`) until its user's cookie shows
which session it is. A Redis key names its ``sid``: it is copied under that id directly.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .legacy import (
    Candidate,
    LegacyEntry,
    LegacySourceError,
    RedisSource,
    UnreadableLegacyData,
    is_pickle,
    pickle_opens_dict,
)
from .server_side import ServerSideSessions

HashMethod = Callable[[bytes], Any]

_CACHELIB_HEADER = struct.Struct("I")  # cachelib writes the expiry in native "I" format
_COUNT_KEY = b"__wz_cache_count"  # a FileSystemCache with a threshold counts its files here
#: a converted file's stand-in id: never a valid session id (":" is not in any id)
_CONVERTED_FILE = "flask-session-file:"
#: cachelib's RedisSerializer: pickles follow this byte, whole numbers are plain digits
_REDIS_PICKLE_MARK = b"!"


def cachelib_name(prefix: str, sid: str, hash_method: HashMethod = hashlib.sha256) -> str:
    """The name a FileSystemCache gives the file of Flask-Session's ``sid``."""
    return str(hash_method((prefix + sid).encode("utf-8")).hexdigest())


def cachelib_path(directory: str | Path, prefix: str, sid: str,
                  hash_method: HashMethod = hashlib.sha256) -> Path:
    """Where a FileSystemCache keeps Flask-Session's ``sid``."""
    return Path(directory) / cachelib_name(prefix, sid, hash_method)


def converted_file_key(backend: ServerSideSessions, name: str) -> str:
    """The store key a converted cachelib file waits under until its user returns."""
    return backend.key(_CONVERTED_FILE + name)


def file_cache_layout(cache: Any) -> tuple[Path, HashMethod] | None:
    """The directory and file-name hash of a cachelib FileSystemCache, else None."""
    from cachelib.file import FileSystemCache

    if not isinstance(cache, FileSystemCache):
        return None
    path = getattr(cache, "_path", None)
    hash_method = getattr(cache, "_hash_method", hashlib.sha256)
    if not isinstance(path, str) or not callable(hash_method):
        return None  # a cachelib that no longer keeps these: not one we can read
    return Path(path), hash_method


def is_redis_cache(cache: Any) -> bool:
    """True for cachelib's RedisCache and ValkeyCache (keys in a Redis we can scan)."""
    client = getattr(cache, "_write_client", None)
    return (callable(getattr(cache, "_get_prefix", None))
            and hasattr(client, "scan_iter") and hasattr(client, "pipeline"))


def read_cachelib_file(path: Path) -> tuple[float | None, bytes]:
    """The expiry (None: never) and the payload of a cachelib file.

    Raises FileNotFoundError when absent and UnreadableLegacyData when damaged.
    """
    blob = path.read_bytes()
    if len(blob) < _CACHELIB_HEADER.size:
        raise UnreadableLegacyData("the cachelib file is truncated")
    (expiry,) = _CACHELIB_HEADER.unpack_from(blob)
    return (float(expiry) if expiry else None), blob[_CACHELIB_HEADER.size:]


def is_flask_session_pickle(payload: bytes) -> bool:
    """A pickled dict: what Flask-Session hands cachelib, and nothing else stored there."""
    return is_pickle(payload) and pickle_opens_dict(payload)


class CachelibDirSource:
    """Flask-Session's FileSystemCache files, converted under :func:`converted_file_key`.

    Each candidate's ``sid`` is the stand-in id of its file name, so :func:`migrate`
    stores the converted session where the request path finds it from the cookie.
    sessionkeeper's own files in the same directory (``*.session``, the cachelib
    store's entries, lock and temporary files) are left alone.
    """

    def __init__(self, directory: str | Path, hash_method: HashMethod = hashlib.sha256) -> None:
        self.directory = Path(directory)
        self.hash_method = hash_method
        self.description = f"Flask-Session files in {str(self.directory)!r}"
        digits = len(str(hash_method(b"").hexdigest()))
        self._name = re.compile(f"[0-9a-f]{{{digits}}}")
        self._count_file = str(hash_method(_COUNT_KEY).hexdigest())

    def candidates(self) -> list[Candidate]:
        try:
            paths = list(self.directory.iterdir())
        except OSError as exc:
            raise LegacySourceError(f"cannot list {self.description}: {exc}") from exc
        return [Candidate(_CONVERTED_FILE + path.name, path) for path in sorted(paths)
                if self._name.fullmatch(path.name) and path.name != self._count_file]

    def fetch(self, batch: Sequence[Candidate]) -> list[LegacyEntry]:
        entries = []
        for candidate in batch:
            try:
                expires_at, payload = read_cachelib_file(candidate.handle)
            except FileNotFoundError:
                continue
            except (OSError, UnreadableLegacyData):
                expires_at, payload = None, b""  # counted as unreadable, left in place
            else:
                if not is_flask_session_pickle(payload):
                    entries.append(LegacyEntry(candidate.sid, candidate.handle, b"",
                                               expires_at, foreign=True))
                    continue
            entries.append(LegacyEntry(candidate.sid, candidate.handle, payload, expires_at))
        return entries

    def delete(self, handles: Sequence[Any]) -> int:
        removed = 0
        for path in handles:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise LegacySourceError(f"cannot delete {path}: {exc}") from exc
        return removed


class CachelibRedisSource(RedisSource):
    """Flask-Session's sessions in a cachelib RedisCache (or ValkeyCache): keys
    ``<cache key_prefix><prefix><sid>`` holding ``b"!"`` and a pickled dict, with a TTL.

    Read through the cache's own Redis client. Values that are not a pickled dict
    (sessionkeeper's cachelib store keeps bytes there) are reported foreign.
    """

    def __init__(self, cache: Any, prefix: str) -> None:
        super().__init__(cache._write_client, str(cache._get_prefix()) + prefix)
        self.description = f"cachelib {type(cache).__name__} keys {self.prefix + '*'!r}"

    def fetch(self, batch: Sequence[Candidate]) -> list[LegacyEntry]:
        entries = []
        for entry in super().fetch(batch):
            value = entry.payload
            payload = value[len(_REDIS_PICKLE_MARK):]
            if not (value.startswith(_REDIS_PICKLE_MARK) and is_flask_session_pickle(payload)):
                entries.append(LegacyEntry(entry.sid, entry.handle, b"", entry.expires_at,
                                           foreign=True))
                continue
            entries.append(LegacyEntry(entry.sid, entry.handle, payload, entry.expires_at))
        return entries
