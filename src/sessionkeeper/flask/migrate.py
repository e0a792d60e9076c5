"""Moving from Flask-Session without logging anyone out.

``flask sessions migrate`` copies the sessions Flask-Session kept in Redis, SQLAlchemy,
MongoDB, DynamoDB or a cachelib RedisCache into the store the app is now configured
with, under the same session ids, so the cookies browsers already hold keep working.
Two sources cannot be matched to ids ahead of time: memcached cannot list its keys, and
a cachelib FileSystemCache (Flask-Session's filesystem backend, and its cachelib
backend's default) names its files by a hash of the id. :func:`migrate_on_first_use`
finishes those when each user comes back: it reads the user's memcached record
(MessagePack or JSON, never pickle), or moves the session the command converted from
that user's file. Nothing is unpickled while serving a request: cachelib pickles every
session Flask-Session gave it, so those are converted by the command only, after a
warning, with ``--allow-pickle``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from ..backend import logger
from ..breaker import unguarded
from ..errors import ConfigurationError, StoreUnavailable
from ..legacy import (
    DELETABLE,
    LegacyLookup,
    LegacySource,
    LegacySourceError,
    MemcachedSource,
    MigrationReport,
    MongoDBSource,
    Outcome,
    RedisSource,
    SQLAlchemySource,
    accepts_sid,
    migrate,
    migrate_entry,
    select_candidates,
)
from ..legacy_cachelib import (
    CachelibDirSource,
    CachelibRedisSource,
    HashMethod,
    cachelib_name,
    cachelib_path,
    converted_file_key,
    file_cache_layout,
    is_redis_cache,
)
from ..server_side import ServerSideSessions

if TYPE_CHECKING:  # boto3 is an optional extra
    from ..legacy_dynamodb import DynamoDBSource

SOURCES = ("redis", "sqlalchemy", "mongodb", "dynamodb", "filesystem", "cachelib")

#: read when each user comes back (see migrate_on_first_use), not copied ahead of time
FIRST_USE_SOURCES = ("memcached", "redis", "dynamodb", "filesystem", "cachelib")

PICKLE_WARNING = (
    "WARNING: --allow-pickle reads pickled Flask-Session records. Unpickling can run code\n"
    "chosen by whoever could write to that store. They are read with a loader that accepts\n"
    "plain data types only, but use this only for data you trust."
)


# -- where Flask-Session kept its sessions ----------------------------------------------
def _server_side_backend() -> ServerSideSessions:
    state = current_app.extensions.get("sessionkeeper")
    if state is None:
        raise click.ClickException("sessionkeeper is not set up on this app: call Session(app)")
    backend = state.backend
    if not isinstance(backend, ServerSideSessions):
        raise click.ClickException(
            "SESSION_TYPE='cookie' keeps sessions in browsers, so there is nowhere to copy "
            "Flask-Session's sessions to: set a server-side SESSION_TYPE")
    return backend


def _default_source(session_type: str) -> str:
    if session_type in SOURCES:
        return session_type
    if session_type == "memcached":
        raise click.ClickException(
            "memcached cannot list its keys, so Flask-Session's sessions there cannot be "
            "copied ahead of time. Convert each one when its user comes back instead: "
            "call migrate_on_first_use(app) (from sessionkeeper.flask.migrate) right "
            "after Session(app)")
    raise click.ClickException(
        f"SESSION_TYPE={session_type!r} is a sessionkeeper store Flask-Session did not have: "
        f"say where Flask-Session kept its sessions with --from ({', '.join(SOURCES)})")


def _store_connection(backend: ServerSideSessions, kind: str, attribute: str) -> Any:
    """The connection the app's own store holds, when it is a store of that kind."""
    store = backend.store
    return getattr(store, attribute, None) if store.name == kind else None


def _redis_client(config: Mapping[str, Any], backend: ServerSideSessions) -> Any:
    import redis

    own = _store_connection(backend, "redis", "client")
    if hasattr(own, "scan_iter") and hasattr(own, "pipeline"):
        return own
    value = config.get("SESSION_REDIS")
    if value is None:
        return redis.Redis()  # Flask-Session's default: localhost:6379, db 0
    if isinstance(value, str):
        return redis.Redis.from_url(value, socket_connect_timeout=10)
    if hasattr(value, "scan_iter") and hasattr(value, "pipeline"):
        return value
    raise click.ClickException(
        f"SESSION_REDIS must be a redis client or a redis:// URL, not {type(value).__name__}")


def _sqlalchemy_engine(config: Mapping[str, Any], backend: ServerSideSessions,
                       owned: ExitStack) -> Any:
    import sqlalchemy as sa

    own = _store_connection(backend, "sqlalchemy", "engine")
    if isinstance(own, sa.engine.Engine):
        return own
    value = config.get("SESSION_SQLALCHEMY")
    if value is None or isinstance(value, str):
        url = value or config.get("SQLALCHEMY_DATABASE_URI")
        if not url:
            raise click.ClickException(
                "set SESSION_SQLALCHEMY (or SQLALCHEMY_DATABASE_URI) to the database "
                "Flask-Session used")
        engine = sa.create_engine(url)
        owned.callback(engine.dispose)
        return engine
    if isinstance(value, sa.engine.Engine):
        return value
    if hasattr(value, "engines"):  # a Flask-SQLAlchemy extension, as Flask-Session took
        bind = config.get("SESSION_SQLALCHEMY_BIND_KEY")
        return value.engines[bind] if bind else value.engine
    raise click.ClickException(
        "SESSION_SQLALCHEMY must be a Flask-SQLAlchemy instance, an Engine or a URL, "
        f"not {type(value).__name__}")


def _mongodb_collection(config: Mapping[str, Any], owned: ExitStack) -> Any:
    from ..stores.mongodb import DEFAULT_COLLECTION, DEFAULT_DB, client_from_setting

    try:
        client, made_here = client_from_setting(config.get("SESSION_MONGODB"), 10.0)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    if made_here:
        owned.callback(client.close)
    database = config.get("SESSION_MONGODB_DB") or DEFAULT_DB
    return client[database][config.get("SESSION_MONGODB_COLLECT") or DEFAULT_COLLECTION]


def _memcached_calls(config: Mapping[str, Any], backend: ServerSideSessions,
                     ) -> Callable[[Callable[[Any], Any]], Any]:
    """Runs operations on the app's memcached store connection, else SESSION_MEMCACHED."""
    from ..settings import seconds
    from ..stores.memcached import DEFAULT_TIMEOUT, MemcachedStore, client_from_setting

    store = unguarded(backend.store)
    if not isinstance(store, MemcachedStore):
        timeout = seconds(config.get("SESSION_MEMCACHED_TIMEOUT", DEFAULT_TIMEOUT),
                          "SESSION_MEMCACHED_TIMEOUT")
        # Only for its call wrapper: errors become StoreUnavailable (503, retried) instead
        # of a logged-out user, and a connection is never shared across a fork.
        store = MemcachedStore(client_from_setting(config.get("SESSION_MEMCACHED"), timeout))
    return store._call


def _dynamodb_source(config: Mapping[str, Any], backend: ServerSideSessions,
                     owned: ExitStack | None, *, prefix: str,
                     table: str | None = None) -> DynamoDBSource:
    """Flask-Session's table on the app's DynamoDB store client, else SESSION_DYNAMODB.

    ``owned`` (the command) closes a client made here; without it (requests) the client
    lives with the app, with the store's request timeout.
    """
    from ..legacy_dynamodb import DEFAULT_TABLE, DynamoDBSource
    from ..settings import seconds
    from ..stores.dynamodb import DynamoDBStore
    from ..stores.dynamodb_client import DEFAULT_TIMEOUT, client_from_setting

    store = unguarded(backend.store)
    if isinstance(store, DynamoDBStore):
        client = store.client
    else:
        timeout = 10.0 if owned is not None else seconds(
            config.get("SESSION_DYNAMODB_TIMEOUT", DEFAULT_TIMEOUT), "SESSION_DYNAMODB_TIMEOUT")
        client, made_here = client_from_setting(config.get("SESSION_DYNAMODB"), timeout)
        if made_here and owned is not None:
            owned.callback(client.close)
    return DynamoDBSource(client, table or config.get("SESSION_DYNAMODB_TABLE") or DEFAULT_TABLE,
                          prefix)


@contextmanager
def legacy_source(kind: str, config: Mapping[str, Any], backend: ServerSideSessions, *,
                  prefix: str, table: str | None = None, directory: Path | None = None,
                  ) -> Iterator[LegacySource]:
    """The Flask-Session records behind the app's store connection, else its settings."""
    with ExitStack() as owned:
        if kind in ("filesystem", "cachelib"):
            files = _legacy_files(kind, config, directory)
            if files is not None:
                yield CachelibDirSource(*files)
            elif is_redis_cache(config.get("SESSION_CACHELIB")):
                yield CachelibRedisSource(config["SESSION_CACHELIB"], prefix)
            else:
                raise click.ClickException(_unlisted_cache(config))
        elif kind == "redis":
            yield RedisSource(_redis_client(config, backend), prefix)
        elif kind == "sqlalchemy":
            yield SQLAlchemySource(_sqlalchemy_engine(config, backend, owned),
                                   table=table or "sessions",
                                   schema=config.get("SESSION_SQLALCHEMY_SCHEMA"),
                                   prefix=prefix)
        elif kind == "dynamodb":
            yield _dynamodb_source(config, backend, owned, prefix=prefix, table=table)
        else:
            yield MongoDBSource(_mongodb_collection(config, owned), prefix)


def _legacy_dir(config: Mapping[str, Any], given: Path | None) -> Path:
    # Flask-Session's default directory, which is also sessionkeeper's.
    return Path(given or config.get("SESSION_FILE_DIR") or Path.cwd() / "flask_session")


def _legacy_files(kind: str, config: Mapping[str, Any], given: Path | None,
                  ) -> tuple[Path, HashMethod] | None:
    """The directory and file-name hash of Flask-Session's FileSystemCache; None when
    its SESSION_CACHELIB cache is of another kind."""
    if kind == "filesystem":
        return _legacy_dir(config, given), hashlib.sha256
    cache = config.get("SESSION_CACHELIB")
    layout = file_cache_layout(cache) if cache is not None else None
    if given is not None:
        return Path(given), layout[1] if layout else hashlib.sha256
    if cache is None:  # Flask-Session's default: FileSystemCache("flask_session")
        return Path.cwd() / "flask_session", hashlib.sha256
    return layout


def _unlisted_cache(config: Mapping[str, Any]) -> str:
    kind = type(config.get("SESSION_CACHELIB")).__name__
    return (f"SESSION_CACHELIB is a {kind}: Flask-Session's sessions can be read from a "
            "cachelib FileSystemCache, RedisCache or ValkeyCache only (the others cannot "
            "list their keys, and every session cachelib stored is pickled, which is never "
            "read while serving requests); those users log in again")


# -- the command ------------------------------------------------------------------------
@click.command("migrate")
@click.option("--from", "source_kind", type=click.Choice(SOURCES),
              help="Where Flask-Session kept the sessions. Default: SESSION_TYPE.")
@click.option("--from-prefix",
              help="Flask-Session's SESSION_KEY_PREFIX. Default: this app's "
                   "SESSION_KEY_PREFIX, 'session:' unless set.")
@click.option("--from-table",
              help="Flask-Session's table. sqlalchemy: default 'sessions' (schema from "
                   "SESSION_SQLALCHEMY_SCHEMA); dynamodb: default SESSION_DYNAMODB_TABLE, "
                   "else 'Sessions'.")
@click.option("--from-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Flask-Session's cache directory (filesystem, cachelib). Default: "
                   "SESSION_FILE_DIR (filesystem) or SESSION_CACHELIB's directory "
                   "(cachelib), else ./flask_session.")
@click.option("--allow-pickle", is_flag=True,
              help="Also convert pickled records (Flask-Session before 0.7, and every "
                   "filesystem or cachelib session). Pickle can run code: only for data "
                   "you trust.")
@click.option("--delete-old", is_flag=True,
              help="Delete the old records that were migrated (now or before) or had expired.")
@click.option("--dry-run", is_flag=True, help="Count what would happen; write nothing.")
@with_appcontext
def migrate_command(source_kind: str | None, from_prefix: str | None, from_table: str | None,
                    from_dir: Path | None, allow_pickle: bool, delete_old: bool,
                    dry_run: bool) -> None:
    """Copy Flask-Session's sessions into this app's store, keeping users logged in.

    Each session keeps its id, so the cookie a browser already holds finds it, and keeps
    its remaining lifetime. Old records stay unless --delete-old. Files of a cachelib
    FileSystemCache are named by a hash of the id: each converted one is handed to its
    user by migrate_on_first_use(app) on their next visit.
    """
    backend = _server_side_backend()
    config = current_app.config
    kind = source_kind or _default_source(str(config.get("SESSION_TYPE") or "sqlite").lower())
    prefix = from_prefix if from_prefix is not None else str(
        config.get("SESSION_KEY_PREFIX", "session:"))
    if allow_pickle:
        click.secho(PICKLE_WARNING, fg="red", bold=True, err=True)
    try:
        with legacy_source(kind, config, backend, prefix=prefix, table=from_table,
                           directory=from_dir) as source:
            click.echo(f"Copying Flask-Session sessions from {source.description} into the "
                       f"{backend.store.name} store.")
            files = isinstance(source, CachelibDirSource)
            always_pickled = files or isinstance(source, CachelibRedisSource)
            if files:
                # File names are hashes, not ids: every Flask-Session file is a candidate.
                candidates, foreign = source.candidates(), 0
            else:
                candidates, foreign = select_candidates(source, backend)
            with click.progressbar(length=len(candidates), label="Migrating sessions") as bar:
                report = migrate(source, backend, candidates, now=time.time(),
                                 allow_pickle=allow_pickle, delete_old=delete_old,
                                 dry_run=dry_run, progress=bar.update)
            report.foreign += foreign
    except (LegacySourceError, StoreUnavailable, ConfigurationError) as exc:
        raise click.ClickException(str(exc)) from exc
    _print_report(report, allow_pickle=allow_pickle, delete_old=delete_old, dry_run=dry_run,
                  files=files, always_pickled=always_pickled)


def _print_report(report: MigrationReport, *, allow_pickle: bool, delete_old: bool,
                  dry_run: bool, files: bool, always_pickled: bool) -> None:
    for outcome in Outcome:
        click.echo(f"  {outcome.value + ':':<44}{report.outcomes[outcome]:>8}")
    if report.foreign:
        other = ("other files in the directory (left alone):" if files
                 else "other keys under the prefix (left alone):")
        click.echo(f"  {other:<44}{report.foreign:>8}")
    for reason, count in report.reasons.most_common(5):
        click.echo(f"    {count} unreadable: {reason}")
    if not report.outcomes:
        click.echo("No Flask-Session sessions found there.")
        return
    pickled = report.outcomes[Outcome.PICKLED]
    if pickled and not allow_pickle:
        written_by = ("cachelib pickles every session Flask-Session's filesystem and "
                      "cachelib backends stored" if always_pickled
                      else "written by Flask-Session before 0.7")
        click.echo(f"{_records(pickled)} pickled ({written_by}). "
                   "If you trust that data, re-run with --allow-pickle to migrate "
                   f"{'it' if pickled == 1 else 'them'}; otherwise those users log in again.")
    if files and report.outcomes[Outcome.MIGRATED] + report.outcomes[Outcome.ALREADY_MIGRATED]:
        click.echo(
            "A file's name is a hash, not the session id, so each converted session waits "
            "in the\nstore until its user comes back. Call this right after Session(app) "
            "to hand it over:\n\n"
            "    from sessionkeeper.flask.migrate import migrate_on_first_use\n"
            "    migrate_on_first_use(app)\n")
    if dry_run:
        click.echo("Dry run: nothing was written or deleted.")
    elif delete_old:
        kept = pickled + report.outcomes[Outcome.UNREADABLE]
        click.echo(f"Deleted {report.deleted} old records"
                   + (f"; kept {kept} that could not be migrated." if kept else "."))
    else:
        click.echo("The old records are still in place. Once the app runs on sessionkeeper, "
                   "delete them by running this command again with --delete-old "
                   "(records already copied are not copied again).")


def _records(count: int) -> str:
    return "1 record is" if count == 1 else f"{count} records are"


# -- sessions finished when their user comes back ---------------------------------------
def migrate_on_first_use(app: Flask, source: str | None = None, *,
                         from_prefix: str | None = None,
                         directory: str | os.PathLike[str] | None = None) -> None:
    """Keep a returning Flask-Session user logged in, for sources not copied ahead of time.

    Call it after ``Session(app)``. When a request reads a session whose id the store
    does not know (so never for requests that leave the session alone, nor for sessions
    sessionkeeper already keeps):

    - ``"memcached"`` (and ``"redis"``): reads ``<prefix><id>`` from SESSION_MEMCACHED
      (SESSION_REDIS), copies a MessagePack or JSON session into the app's store and
      deletes the old key. A pickled record is left alone, never unpickled: that user
      logs in again.
    - ``"dynamodb"``: reads the item ``<prefix><id>`` of SESSION_DYNAMODB_TABLE (the
      app's DynamoDB store client, else SESSION_DYNAMODB), copies it and deletes it.
    - ``"filesystem"`` and ``"cachelib"`` (a FileSystemCache, or SESSION_CACHELIB
      unset): moves the session ``flask sessions migrate --allow-pickle`` converted from
      that user's file under the user's id, and deletes the file. Files are never read
      here. Sessions in a cachelib RedisCache need no call: the command copies them
      under their ids.

    ``source`` defaults to SESSION_TYPE, the prefix to SESSION_KEY_PREFIX, ``directory``
    to SESSION_FILE_DIR (filesystem) or the SESSION_CACHELIB FileSystemCache's
    (cachelib), else ./flask_session. A source that cannot be reached answers 503, as
    the store does. Remove the call once PERMANENT_SESSION_LIFETIME has passed: every
    old session has expired by then.
    """
    state = app.extensions.get("sessionkeeper")
    if state is None or not isinstance(state.backend, ServerSideSessions):
        raise ConfigurationError(
            "migrate_on_first_use needs sessionkeeper set up first with a server-side "
            "SESSION_TYPE: call Session(app) before it")
    backend: ServerSideSessions = state.backend
    kind = (source or str(app.config.get("SESSION_TYPE") or "")).lower()
    if kind not in FIRST_USE_SOURCES:
        raise ConfigurationError(
            f"migrate_on_first_use reads Flask-Session's {', '.join(FIRST_USE_SOURCES)} "
            f"sessions, not {kind or 'an unset SESSION_TYPE'!r}: pass source=, or copy "
            "them with 'flask sessions migrate'")
    prefix = from_prefix if from_prefix is not None else state.settings.key_prefix

    adopt: Callable[[str], None]
    if kind in ("filesystem", "cachelib"):
        files = _legacy_files(kind, app.config, Path(directory) if directory else None)
        if files is None:
            raise ConfigurationError(_no_first_use_for_cache(app.config))
        folder, hash_method = files

        def adopt_file(sid: str) -> None:
            if _adopt_converted_file(backend, cachelib_name(prefix, sid, hash_method), sid):
                # Gone with its session: a re-run of the command must not convert it again.
                cachelib_path(folder, prefix, sid, hash_method).unlink(missing_ok=True)

        adopt = adopt_file
    else:
        lookup: LegacyLookup
        if kind == "redis":
            lookup = RedisSource(_redis_client(app.config, backend), prefix)
        elif kind == "dynamodb":
            lookup = _dynamodb_source(app.config, backend, None, prefix=prefix)
        else:
            lookup = MemcachedSource(_memcached_calls(app.config, backend), prefix)
        adopt = partial(_adopt_record, backend, lookup)

    def adopt_flask_session(sid: str) -> None:
        if accepts_sid(backend, sid):  # not one of sessionkeeper's own store keys
            adopt(sid)

    # At the store miss itself: the cookie is already parsed and its signature checked.
    backend.adopt_unknown = adopt_flask_session


def _no_first_use_for_cache(config: Mapping[str, Any]) -> str:
    if is_redis_cache(config.get("SESSION_CACHELIB")):
        return ("Flask-Session's sessions in a cachelib RedisCache are stored under their "
                "ids, pickled: copy them with 'flask sessions migrate --allow-pickle' "
                "(migrate_on_first_use is not needed, and never unpickles while serving "
                "requests)")
    return _unlisted_cache(config)


def _adopt_record(backend: ServerSideSessions, lookup: LegacyLookup, sid: str) -> None:
    try:
        entry = lookup.lookup(sid)
        if entry is None or entry.foreign:
            return
        # allow_pickle is False: a pickled record is refused by its header, unread.
        outcome, reason = migrate_entry(entry, backend, now=time.time())
        if outcome in DELETABLE:
            lookup.discard(entry.handle)
    except LegacySourceError as exc:
        raise StoreUnavailable(lookup.description, exc) from exc
    logger.info("Flask-Session record of session %s: %s%s", backend.log_id(sid),
                outcome.value, f" ({reason})" if reason else "")


def _adopt_converted_file(backend: ServerSideSessions, name: str, sid: str) -> bool:
    """Move a converted file's session under ``sid``; False when there is none."""
    store, now = backend.store, time.time()
    waiting = converted_file_key(backend, name)
    record = store.load(waiting, now)
    if record is None:
        return False
    key = backend.key(sid)
    if store.load(key, now) is None:  # never overwrite newer sessionkeeper data
        store.create(key, record)
    store.delete(waiting)
    logger.info("Flask-Session file of session %s: moved under its id", backend.log_id(sid))
    return True
