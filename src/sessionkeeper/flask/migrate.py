"""Moving from Flask-Session without logging anyone out.

``flask sessions migrate`` copies the sessions Flask-Session kept in Redis, SQLAlchemy or
MongoDB into the store the app is now configured with, under the same session ids, so
the cookies browsers already hold keep working. Two sources cannot be matched to ids
ahead of time: memcached cannot list its keys, and Flask-Session's filesystem backend
names its files by a hash of the id. :func:`migrate_on_first_use` finishes those when
each user comes back: it reads the user's memcached record (MessagePack or JSON, never
pickle), or moves the session the command converted from that user's file. Nothing is
unpickled while serving a request: pickled files are converted by the command only,
after a warning, with ``--allow-pickle``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from ..backend import logger
from ..breaker import unguarded
from ..errors import ConfigurationError, StoreUnavailable
from ..legacy import (
    DELETABLE,
    CachelibDirSource,
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
    cachelib_name,
    cachelib_path,
    converted_file_key,
    migrate,
    migrate_entry,
    select_candidates,
)
from ..server_side import ServerSideSessions

SOURCES = ("redis", "sqlalchemy", "mongodb", "filesystem")

#: read when each user comes back (see migrate_on_first_use), not copied ahead of time
FIRST_USE_SOURCES = ("memcached", "redis", "filesystem")

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
    if session_type == "cachelib":
        return "filesystem"
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


@contextmanager
def legacy_source(kind: str, config: Mapping[str, Any], backend: ServerSideSessions, *,
                  prefix: str, table: str, directory: Path | None = None,
                  ) -> Iterator[LegacySource]:
    """The Flask-Session records behind the app's store connection, else its settings."""
    with ExitStack() as owned:
        if kind == "filesystem":
            yield CachelibDirSource(_legacy_dir(config, directory))
        elif kind == "redis":
            yield RedisSource(_redis_client(config, backend), prefix)
        elif kind == "sqlalchemy":
            yield SQLAlchemySource(_sqlalchemy_engine(config, backend, owned), table=table,
                                   schema=config.get("SESSION_SQLALCHEMY_SCHEMA"),
                                   prefix=prefix)
        else:
            yield MongoDBSource(_mongodb_collection(config, owned), prefix)


def _legacy_dir(config: Mapping[str, Any], given: Path | None) -> Path:
    # Flask-Session's default directory, which is also sessionkeeper's.
    return Path(given or config.get("SESSION_FILE_DIR") or Path.cwd() / "flask_session")


# -- the command ------------------------------------------------------------------------
@click.command("migrate")
@click.option("--from", "source_kind", type=click.Choice(SOURCES),
              help="Where Flask-Session kept the sessions. Default: SESSION_TYPE.")
@click.option("--from-prefix",
              help="Flask-Session's SESSION_KEY_PREFIX. Default: this app's "
                   "SESSION_KEY_PREFIX, 'session:' unless set.")
@click.option("--from-table", default="sessions", show_default=True,
              help="Flask-Session's table (sqlalchemy; schema from SESSION_SQLALCHEMY_SCHEMA).")
@click.option("--from-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Flask-Session's SESSION_FILE_DIR (filesystem). Default: SESSION_FILE_DIR, "
                   "else ./flask_session.")
@click.option("--allow-pickle", is_flag=True,
              help="Also convert pickled records (Flask-Session before 0.7, and every "
                   "filesystem file). Pickle can run code: only for data you trust.")
@click.option("--delete-old", is_flag=True,
              help="Delete the old records that were migrated (now or before) or had expired.")
@click.option("--dry-run", is_flag=True, help="Count what would happen; write nothing.")
@with_appcontext
def migrate_command(source_kind: str | None, from_prefix: str | None, from_table: str,
                    from_dir: Path | None, allow_pickle: bool, delete_old: bool,
                    dry_run: bool) -> None:
    """Copy Flask-Session's sessions into this app's store, keeping users logged in.

    Each session keeps its id, so the cookie a browser already holds finds it, and keeps
    its remaining lifetime. Old records stay unless --delete-old. Filesystem files are
    named by a hash of the id: each converted one is handed to its user by
    migrate_on_first_use(app) on their next visit.
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
            if kind == "filesystem":
                # File names are hashes, not ids: every Flask-Session file is a candidate.
                candidates, foreign = source.candidates(), 0
            else:
                candidates, foreign = select_candidates(source, backend)
            with click.progressbar(length=len(candidates), label="Migrating sessions") as bar:
                report = migrate(source, backend, candidates, now=time.time(),
                                 allow_pickle=allow_pickle, delete_old=delete_old,
                                 dry_run=dry_run, progress=bar.update)
            report.foreign = foreign
    except (LegacySourceError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    _print_report(report, allow_pickle=allow_pickle, delete_old=delete_old, dry_run=dry_run,
                  files=kind == "filesystem")


def _print_report(report: MigrationReport, *, allow_pickle: bool, delete_old: bool,
                  dry_run: bool, files: bool) -> None:
    for outcome in Outcome:
        click.echo(f"  {outcome.value + ':':<44}{report.outcomes[outcome]:>8}")
    if report.foreign:
        click.echo(f"  {'other keys under the prefix (left alone):':<44}{report.foreign:>8}")
    for reason, count in report.reasons.most_common(5):
        click.echo(f"    {count} unreadable: {reason}")
    if not report.outcomes:
        click.echo("No Flask-Session sessions found there.")
        return
    pickled = report.outcomes[Outcome.PICKLED]
    if pickled and not allow_pickle:
        written_by = ("Flask-Session's filesystem backend always pickled" if files
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
    - ``"filesystem"``: moves the session ``flask sessions migrate --allow-pickle``
      converted from that user's file under the user's id, and deletes the file. Files
      are never read here.

    ``source`` defaults to SESSION_TYPE, the prefix to SESSION_KEY_PREFIX, ``directory``
    (filesystem) to SESSION_FILE_DIR, else ./flask_session. A source that cannot be
    reached answers 503, as the store does. Remove the call once
    PERMANENT_SESSION_LIFETIME has passed: every old session has expired by then.
    """
    state = app.extensions.get("sessionkeeper")
    if state is None or not isinstance(state.backend, ServerSideSessions):
        raise ConfigurationError(
            "migrate_on_first_use needs sessionkeeper set up first with a server-side "
            "SESSION_TYPE: call Session(app) before it")
    backend: ServerSideSessions = state.backend
    kind = (source or str(app.config.get("SESSION_TYPE") or "")).lower()
    kind = "filesystem" if kind == "cachelib" else kind
    if kind not in FIRST_USE_SOURCES:
        raise ConfigurationError(
            f"migrate_on_first_use reads Flask-Session's {', '.join(FIRST_USE_SOURCES)} "
            f"sessions, not {kind or 'an unset SESSION_TYPE'!r}: pass source=, or copy "
            "them with 'flask sessions migrate'")
    prefix = from_prefix if from_prefix is not None else state.settings.key_prefix

    adopt: Callable[[str], None]
    if kind == "filesystem":
        folder = _legacy_dir(app.config, Path(directory) if directory else None)

        def adopt_file(sid: str) -> None:
            if _adopt_converted_file(backend, cachelib_name(prefix, sid), sid):
                # Gone with its session: a re-run of the command must not convert it again.
                cachelib_path(folder, prefix, sid).unlink(missing_ok=True)

        adopt = adopt_file
    else:
        lookup: LegacyLookup = (
            RedisSource(_redis_client(app.config, backend), prefix) if kind == "redis"
            else MemcachedSource(_memcached_calls(app.config, backend), prefix))
        adopt = partial(_adopt_record, backend, lookup)

    def adopt_flask_session(sid: str) -> None:
        if accepts_sid(backend, sid):  # not one of sessionkeeper's own store keys
            adopt(sid)

    # At the store miss itself: the cookie is already parsed and its signature checked.
    backend.adopt_unknown = adopt_flask_session


def _adopt_record(backend: ServerSideSessions, lookup: LegacyLookup, sid: str) -> None:
    try:
        entry = lookup.lookup(sid)
        if entry is None:
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
