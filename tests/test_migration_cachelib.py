"""Switching from Flask-Session's cachelib backend (SESSION_TYPE="cachelib") keeps users
logged in.

A real Flask-Session 0.8 app logs a user in with a real cachelib cache (a FileSystemCache
directory, or a RedisCache on the machine's Redis under this test's prefix); the same app
with the import changed runs ``flask sessions migrate --allow-pickle`` (cachelib pickles
every session Flask-Session hands it) and, for files, hands each converted session over
with ``migrate_on_first_use``; the browser's cookie still shows the user logged in.
Nothing is unpickled by the migration while a request is served.
"""

from __future__ import annotations

import hashlib
import pickle
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from cachelib import FileSystemCache, RedisCache, SimpleCache
from test_migration import (  # the same apps, fixtures and helpers as every migration test
    RAN,
    SID_SHAPED,
    Exploit,
    browser_with,
    count_line,
    flask_session_app,
    log_in,
    no_unpickling,
    redis_client,
    redis_prefix,
    run_migrate,
    sessionkeeper_app,
)

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.flask.migrate import migrate_on_first_use
from sessionkeeper.legacy import pickle_opens_dict
from sessionkeeper.legacy_cachelib import cachelib_path

__all__ = ["no_unpickling", "redis_client", "redis_prefix"]  # fixtures used by name

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:flask_session",
    "ignore:No valid cachelib instance:RuntimeWarning",  # Flask-Session's default cache
)

TARGETS = ["same store", "sqlite"]


def file_cache(folder: Path, **options: Any) -> FileSystemCache:
    return FileSystemCache(str(folder), **options)


def moved(target: str, cache: Any, tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    """The sessionkeeper app's config on ``cache`` (its store, or only where the
    migration reads), and the migrate arguments it needs."""
    if target == "same store":
        return {"SESSION_TYPE": "cachelib", "SESSION_CACHELIB": cache}, []
    return ({"SESSION_TYPE": "sqlite", "SESSION_SQLITE_PATH": str(tmp_path / "new.sqlite3"),
             "SESSION_CACHELIB": cache}, ["--from", "cachelib"])


# -- FileSystemCache ---------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_file_cache_users_stay_logged_in(tmp_path: Path, target: str,
                                         no_unpickling: Callable[..., None],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cache"
    old_app = flask_session_app({"SESSION_TYPE": "cachelib",
                                 "SESSION_CACHELIB": file_cache(folder, threshold=500)})
    cookie, seen_before = log_in(old_app)
    legacy_file = cachelib_path(folder, "session:", cookie)
    assert legacy_file.exists()

    # sessionkeeper's own cachelib store shares the directory (threshold=0: no eviction).
    config, args = moved(target, file_cache(folder, threshold=0), tmp_path)
    app = sessionkeeper_app(config, tmp_path)
    if target == "same store":
        migrate_on_first_use(app)  # source: SESSION_TYPE
    else:
        migrate_on_first_use(app, "cachelib")
    refused = run_migrate(app, *args)
    assert count_line(refused.output, "skipped, pickled") == 1
    assert "cachelib pickles every session" in refused.output
    assert browser_with(cookie, app).get("/whoami").text == "anonymous"

    result = run_migrate(app, *args, "--allow-pickle")
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.output
    assert count_line(result.output, "migrated:") == 1
    assert "migrate_on_first_use(app)" in result.output

    # Serving requests from here on: the migration unpickles nothing (on the cachelib
    # store, cachelib still unpickles the bytes that store itself wrote).
    no_unpickling(any_pickle=target != "same store")
    browser = browser_with(cookie, app)
    assert browser.get("/whoami").text == "alice"
    assert browser.get("/dump").text == seen_before
    assert not legacy_file.exists()
    assert browser_with(cookie, app).get("/whoami").text == "alice"

    monkeypatch.undo()
    again = run_migrate(app, *args)
    # sessionkeeper's own entries in that directory are neither pickled sessions nor
    # unreadable ones: they are left alone.
    assert "No Flask-Session sessions found there." in again.output
    if target == "same store":
        assert count_line(again.output, "other files in the directory") >= 1


def test_flask_sessions_default_cache_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SESSION_CACHELIB unset: Flask-Session's FileSystemCache("flask_session"), which is
    # also where sessionkeeper's cachelib store puts its default cache.
    monkeypatch.chdir(tmp_path)
    cookie, seen_before = log_in(flask_session_app({"SESSION_TYPE": "cachelib"}))
    assert cachelib_path(tmp_path / "flask_session", "session:", cookie).exists()

    app = sessionkeeper_app({"SESSION_TYPE": "cachelib"}, tmp_path)
    migrate_on_first_use(app)
    assert count_line(run_migrate(app, "--allow-pickle").output, "migrated:") == 1
    assert browser_with(cookie, app).get("/dump").text == seen_before


def test_a_file_cache_with_another_hash_method(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    cache = file_cache(folder, hash_method=hashlib.md5)
    cookie, _ = log_in(flask_session_app({"SESSION_TYPE": "cachelib",
                                          "SESSION_CACHELIB": cache}))
    legacy_file = cachelib_path(folder, "session:", cookie, hashlib.md5)
    assert legacy_file.exists()

    config, args = moved("sqlite", cache, tmp_path)
    app = sessionkeeper_app(config, tmp_path)
    migrate_on_first_use(app, "cachelib")
    assert count_line(run_migrate(app, *args, "--allow-pickle").output, "migrated:") == 1
    assert browser_with(cookie, app).get("/whoami").text == "alice"
    assert not legacy_file.exists()


# -- RedisCache ---------------------------------------------------------------------------
def redis_cache(client: redis.Redis, prefix: str) -> RedisCache:
    """A RedisCache on ``client``'s server whose own key_prefix is this test's (its keys
    are removed by the redis_prefix fixture)."""
    server = client.connection_pool.connection_kwargs
    return RedisCache(host=redis.Redis(host=server["host"], port=server["port"],
                                       socket_timeout=5, socket_connect_timeout=5),
                      key_prefix=prefix)


@pytest.mark.parametrize("target", TARGETS)
def test_redis_cache_users_stay_logged_in(redis_client: redis.Redis, redis_prefix: str,
                                          tmp_path: Path, target: str,
                                          no_unpickling: Callable[..., None],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache = redis_cache(redis_client, redis_prefix)
    cookie, seen_before = log_in(flask_session_app({"SESSION_TYPE": "cachelib",
                                                    "SESSION_CACHELIB": cache}))
    old_key = redis_prefix + "session:" + cookie
    ttl_before = redis_client.ttl(old_key)
    assert ttl_before > 0
    not_a_session = redis_prefix + "session:" + secrets.token_urlsafe(32)
    redis_client.set(not_a_session, b"!" + pickle.dumps(b"bytes, not a dict"))

    config, args = moved(target, cache, tmp_path)
    app = sessionkeeper_app(config, tmp_path)
    refused = run_migrate(app, *args)
    assert count_line(refused.output, "skipped, pickled") == 1
    assert "cachelib pickles every session" in refused.output
    assert count_line(refused.output, "other keys under the prefix") == 1

    result = run_migrate(app, *args, "--allow-pickle")
    assert count_line(result.output, "migrated:") == 1
    assert "migrate_on_first_use" not in result.output  # found by id: nothing to hand over

    no_unpickling(any_pickle=target != "same store")
    browser = browser_with(cookie, app)
    assert browser.get("/whoami").text == "alice"
    assert browser.get("/dump").text == seen_before
    backend = app.extensions["sessionkeeper"].backend
    record = backend.store.load(backend.key(cookie), time.time())
    assert record.permanent is True
    assert record.expires_at - time.time() == pytest.approx(ttl_before, abs=5)

    monkeypatch.undo()
    cleaned = run_migrate(app, *args, "--delete-old")
    assert count_line(cleaned.output, "already migrated") == 1
    assert "Deleted 1 old records." in cleaned.output
    assert redis_client.exists(old_key) == 0
    assert redis_client.exists(not_a_session) == 1  # not Flask-Session's: left alone
    assert browser_with(cookie, app).get("/whoami").text == "alice"


def test_redis_cache_sessions_need_no_first_use_hook(redis_client: redis.Redis,
                                                     redis_prefix: str,
                                                     tmp_path: Path) -> None:
    config, _ = moved("same store", redis_cache(redis_client, redis_prefix), tmp_path)
    app = sessionkeeper_app(config, tmp_path)
    with pytest.raises(ConfigurationError, match="--allow-pickle"):
        migrate_on_first_use(app)


def test_a_malicious_pickle_in_a_redis_cache_is_not_run(redis_client: redis.Redis,
                                                        redis_prefix: str,
                                                        tmp_path: Path) -> None:
    cache = redis_cache(redis_client, redis_prefix)
    cache.set("session:" + SID_SHAPED, {"user": Exploit()}, timeout=600)
    config, args = moved("sqlite", cache, tmp_path)
    app = sessionkeeper_app(config, tmp_path)
    result = run_migrate(app, *args, "--allow-pickle")
    assert count_line(result.output, "skipped, unreadable") == 1
    assert "record_that_code_ran" in result.output
    assert RAN == []
    assert browser_with(SID_SHAPED, app).get("/whoami").text == "anonymous"


# -- caches that cannot be read ahead of time ----------------------------------------------
def test_a_cache_that_cannot_be_listed_is_a_clear_refusal(tmp_path: Path) -> None:
    config, args = moved("sqlite", SimpleCache(), tmp_path)
    app = sessionkeeper_app(config, tmp_path)
    result = run_migrate(app, *args)
    assert result.exit_code == 1
    assert "SimpleCache" in result.output and "log in again" in result.output
    with pytest.raises(ConfigurationError, match="SimpleCache"):
        migrate_on_first_use(app, "cachelib")


# -- telling Flask-Session's entries from others, without unpickling ---------------------------
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickled_dict_is_told_from_other_values(protocol: int) -> None:
    assert pickle_opens_dict(pickle.dumps({"user": "alice"}, protocol))
    assert pickle_opens_dict(pickle.dumps({}, protocol))
    for other in (b"record bytes", 5, [{"a": 1}], "text", None):
        assert not pickle_opens_dict(pickle.dumps(other, protocol)), other
    for garbage in (b"", b"\x00\x01garbage", b"\x82\xa1a\x01"):
        assert not pickle_opens_dict(garbage)
    # Judged by its opening only, never run: what it names is refused by the loader.
    assert pickle_opens_dict(pickle.dumps({"user": Exploit()}, protocol))
    assert RAN == []

