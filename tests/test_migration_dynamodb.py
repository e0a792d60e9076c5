"""Switching from Flask-Session's DynamoDB backend keeps users logged in.

A real Flask-Session 0.8 app logs a user in on dynalite (a DynamoDB-compatible server
started by the tests), in a fresh table; the same app with the import changed runs
``flask sessions migrate``, or converts each session when its user comes back
(``migrate_on_first_use``); the browser's cookie still shows the user logged in.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import types
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from flask import Flask
from providers import dynamodb as provider
from servers import unused_port
from test_migration import (  # the same apps and helpers as every migration test
    SID_SHAPED,
    browser_with,
    count_line,
    flask_session_app,
    log_in,
    run_migrate,
    sessionkeeper_app,
    with_login,
)

from sessionkeeper.flask.migrate import migrate_on_first_use

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:flask_session",  # SESSION_USE_SIGNER; its utcnow()
)

TARGETS = ["same store", "sqlite"]


def load_flask_session_dynamodb() -> None:
    """Flask-Session 0.8's dynamodb module imports the type-stubs package
    mypy_boto3_dynamodb for one annotation, never used at run time. When the stubs are
    not installed, a stand-in module lets the real interface load."""
    try:
        import mypy_boto3_dynamodb.service_resource  # noqa: F401
    except ImportError:
        package = types.ModuleType("mypy_boto3_dynamodb")
        stubs = types.ModuleType("mypy_boto3_dynamodb.service_resource")
        stubs.DynamoDBServiceResource = object  # type: ignore[attr-defined]
        package.service_resource = stubs  # type: ignore[attr-defined]
        sys.modules.setdefault("mypy_boto3_dynamodb", package)
        sys.modules.setdefault("mypy_boto3_dynamodb.service_resource", stubs)
    import flask_session.dynamodb  # noqa: F401


load_flask_session_dynamodb()


def resource() -> Any:
    """A boto3 resource on dynalite, as Flask-Session's SESSION_DYNAMODB must be."""
    return boto3.resource("dynamodb", endpoint_url=provider.server().endpoint_url,
                          region_name=provider.REGION, aws_access_key_id="dummy",
                          aws_secret_access_key="dummy")


@pytest.fixture
def table() -> Iterator[str]:
    name = provider.random_table()
    with provider.dropped_afterwards(name):
        yield name


def fs_config(table: str, **extra: Any) -> dict[str, Any]:
    """Flask-Session's configuration (it creates the table, as it does in production)."""
    return {"SESSION_TYPE": "dynamodb", "SESSION_DYNAMODB": resource(),
            "SESSION_DYNAMODB_TABLE": table, **extra}


def moved(target: str, config: dict[str, Any], tmp_path: Path,
          ) -> tuple[dict[str, Any], list[str]]:
    """The sessionkeeper app's config and migrate arguments. On its own DynamoDB store it
    keeps Flask-Session's resource and table; moving to SQLite it reads the table with a
    low-level client, so both kinds of boto3 client are read from."""
    if target == "same store":
        return config, []
    return ({**config, "SESSION_TYPE": "sqlite", "SESSION_DYNAMODB": provider.client(),
             "SESSION_SQLITE_PATH": str(tmp_path / "new.sqlite3")}, ["--from", "dynamodb"])


def items(table: str) -> list[dict[str, Any]]:
    return list(provider.client().scan(TableName=table, ConsistentRead=True)["Items"])


def flask_session_items(table: str) -> list[dict[str, Any]]:
    return [item for item in items(table) if "val" in item]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("fmt", "signed"), [("msgpack", False), ("json", True)])
def test_dynamodb_users_stay_logged_in_after_migrate(table: str, tmp_path: Path, target: str,
                                                     fmt: str, signed: bool) -> None:
    config = fs_config(table, SESSION_SERIALIZATION_FORMAT=fmt, SESSION_USE_SIGNER=signed)
    cookie, seen_before = log_in(flask_session_app(config))
    sid = cookie.split(".")[0]
    [old] = flask_session_items(table)
    assert old["id"] == {"S": "session:" + sid}
    left = float(old["expiration"]["N"]) - time.time()

    settings, args = moved(target, config, tmp_path)
    app = sessionkeeper_app(settings, tmp_path)
    assert browser_with(cookie, app).get("/whoami").text == "anonymous"  # not yet

    result = run_migrate(app, *args)
    assert result.exit_code == 0, result.output
    assert f"DynamoDB table '{table}'" in result.output
    assert count_line(result.output, "migrated:") == 1
    browser = browser_with(cookie, app)
    assert browser.get("/whoami").text == "alice"
    assert browser.get("/dump").text == seen_before
    backend = app.extensions["sessionkeeper"].backend
    record = backend.store.load(backend.key(sid), time.time())
    assert record.permanent is True
    assert record.expires_at - time.time() == pytest.approx(left, abs=5)
    assert len(flask_session_items(table)) == 1  # still there without --delete-old

    cleaned = run_migrate(app, *args, "--delete-old")
    assert count_line(cleaned.output, "already migrated") == 1
    assert "Deleted 1 old records." in cleaned.output
    assert flask_session_items(table) == []
    if target == "same store":  # sessionkeeper's own item, in the same table, stays
        assert [item["id"]["S"] for item in items(table)] == [backend.key(sid)]
    assert browser_with(cookie, app).get("/whoami").text == "alice"


@pytest.mark.parametrize("target", TARGETS)
def test_dynamodb_users_stay_logged_in_on_their_next_visit(table: str, tmp_path: Path,
                                                           target: str) -> None:
    config = fs_config(table, SESSION_KEY_PREFIX="app1:")
    cookie, seen_before = log_in(flask_session_app(config))
    settings, _ = moved(target, config, tmp_path)
    app = sessionkeeper_app(settings, tmp_path)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    migrate_on_first_use(app, "dynamodb")
    browser = browser_with(cookie, app)
    assert browser.get("/ping").text == "pong"
    assert len(flask_session_items(table)) == 1  # not looked up: the view left the session

    assert browser.get("/whoami").text == "alice"
    assert browser.get("/dump").text == seen_before
    assert flask_session_items(table) == []  # moved once, then served from the store
    assert browser_with(cookie, app).get("/whoami").text == "alice"


def test_dynamodb_flask_login_users_stay_logged_in(table: str, tmp_path: Path) -> None:
    config = fs_config(table)
    old = with_login(flask_session_app(config)).test_client()
    old.post("/sign-in")
    cookie = old.get_cookie("session")
    assert cookie is not None and old.get("/me").text == "user 7"

    app = with_login(sessionkeeper_app(config, tmp_path))
    migrate_on_first_use(app)  # source: SESSION_TYPE
    assert browser_with(cookie.value, app).get("/me").text == "user 7"


def test_expired_dynamodb_items_are_skipped_and_deleted_with_delete_old(
        table: str, tmp_path: Path) -> None:
    config = fs_config(table)
    cookie, _ = log_in(flask_session_app(config))
    # Flask-Session 0.8 never turns the table's TTL on, nor reads expiration itself.
    resource().Table(table).update_item(
        Key={"id": "session:" + cookie}, UpdateExpression="SET expiration = :past",
        ExpressionAttributeValues={":past": Decimal(int(time.time()) - 60)})
    settings, args = moved("sqlite", config, tmp_path)
    app = sessionkeeper_app(settings, tmp_path)

    result = run_migrate(app, *args, "--delete-old")
    assert count_line(result.output, "skipped, expired") == 1
    assert "Deleted 1 old records." in result.output
    assert flask_session_items(table) == []
    assert browser_with(cookie, app).get("/whoami").text == "anonymous"


@contextlib.contextmanager
def time_zone(name: str) -> Iterator[None]:
    """This process on local time ``name`` (a POSIX TZ string: no tz database needed)."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_the_remaining_life_is_kept_on_a_machine_not_on_utc(table: str, tmp_path: Path) -> None:
    # Flask-Session writes (utcnow() + lifetime).timestamp(): UTC read as local time.
    with time_zone("JST-9"):
        config = fs_config(table)
        cookie, _ = log_in(flask_session_app(config))
        app = sessionkeeper_app(config, tmp_path)
        assert count_line(run_migrate(app).output, "migrated:") == 1
    backend = app.extensions["sessionkeeper"].backend
    record = backend.store.load(backend.key(cookie), time.time())
    lifetime = Flask("x").permanent_session_lifetime.total_seconds()
    assert record.expires_at - time.time() == pytest.approx(lifetime, abs=60)


def test_an_unreachable_dynamodb_is_a_503_and_a_clear_error(tmp_path: Path) -> None:
    nowhere = provider.make_client(f"http://127.0.0.1:{unused_port()}", timeout=1.0)
    app = sessionkeeper_app({"SESSION_TYPE": "sqlite", "SESSION_DYNAMODB": nowhere,
                             "SESSION_SQLITE_PATH": str(tmp_path / "new.sqlite3")}, tmp_path)
    result = run_migrate(app, "--from", "dynamodb")
    assert result.exit_code == 1
    assert "cannot list DynamoDB table 'Sessions'" in result.output
    assert "Traceback" not in result.output

    migrate_on_first_use(app, "dynamodb")
    assert browser_with(SID_SHAPED, app).get("/whoami").status_code == 503


def test_a_missing_table_is_named(tmp_path: Path) -> None:
    app = sessionkeeper_app({"SESSION_TYPE": "sqlite", "SESSION_DYNAMODB": provider.client(),
                             "SESSION_SQLITE_PATH": str(tmp_path / "new.sqlite3")}, tmp_path)
    result = run_migrate(app, "--from", "dynamodb", "--from-table", "sktest_missing")
    assert result.exit_code == 1
    assert "'sktest_missing'" in result.output and "no such table" in result.output

