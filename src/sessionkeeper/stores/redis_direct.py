"""The Redis store's hot path: commands sent on connections of its own, built by redis-py.

A ``redis.Redis`` command passes through per-call layers (connection-pool bookkeeping,
observability hooks, response callbacks) that cost more than the round trip itself on
a local server. The session store needs only a handful of commands with raw replies, so
it keeps a small free list of connections made exactly as the client's pool makes them
(same class and settings: address, password, database, TLS, timeouts, Sentinel master
lookup) and talks to them directly. Connecting, the protocol and error replies remain
redis-py's.

One connection is taken per command and given back after the reply, so a thread never
shares one mid-command; the list grows to the number of commands in flight at once.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import redis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

try:  # redis[hiredis], a dependency; the C packer is several times faster
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - only without hiredis
    _pack = None

# Every live free list, so that a forked child drops the connections it inherited
# (their sockets belong to the parent) instead of sharing them.
_ALL: weakref.WeakSet[DirectCommands] = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    for commands in list(_ALL):
        commands.idle = []


os.register_at_fork(after_in_child=_forget_inherited_connections)


class DirectCommands:
    """Sends commands to the server of a (non-cluster) ``redis.Redis`` client."""

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        #: connections not in use; list.pop and list.append are atomic, so no lock
        self.idle: list[Any] = []
        _ALL.add(self)

    def __call__(self, *args: EncodableT) -> Any:
        """The raw reply (bytes, int, list or None) to one command. Error replies raise
        redis-py's exceptions. A broken connection is dropped and the command sent once
        more on a new one (as the client's own retry does): the server may have
        restarted. Only connections that ended a command cleanly are kept."""
        try:
            connection = self.idle.pop()
        except IndexError:
            connection = self._connect()
        try:
            return self._exchange(connection, args)
        except redis.ConnectionError:
            return self._exchange(self._connect(), args)

    def _exchange(self, connection: Any, args: tuple[EncodableT, ...]) -> Any:
        """One command on ``connection``, which goes back to the free list only when it
        ended the command cleanly (an error reply leaves it in step)."""
        try:
            reply = self._send(connection, args)
        except redis.ResponseError:
            self.idle.append(connection)
            raise
        except BaseException:  # broken, timed out or interrupted: half a reply may be unread
            connection.disconnect()
            raise
        self.idle.append(connection)
        return reply

    def _connect(self) -> Any:
        # connect() explicitly: a Sentinel-managed connection looks up the master there,
        # which the implicit connect inside send_packed_command skips.
        connection = self._connection_class(**self._connection_kwargs)
        connection.connect()
        return connection

    def run_script(self, sha: str, source: str, keys: list[EncodableT],
                   args: list[EncodableT]) -> Any:
        """EVALSHA, loading the script first when the server does not have it (a restart
        or SCRIPT FLUSH empties its cache)."""
        try:
            return self("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            self("SCRIPT", "LOAD", source)
            return self("EVALSHA", sha, len(keys), *keys, *args)

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.disconnect()

    @staticmethod
    def _send(connection: Any, args: tuple[EncodableT, ...]) -> Any:
        # The store sends only str, bytes and int arguments, which both packers encode
        # as redis-py's own encoder does.
        packed = [_pack(args)] if _pack is not None else connection.pack_command(*args)
        connection.send_packed_command(packed)
        return connection.read_response()
