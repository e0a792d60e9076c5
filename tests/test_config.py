"""Configuration: every Flask-Session key keeps its meaning and default.

Each test configures an app the way a Flask-Session user would and checks what a user
can see: the Set-Cookie header, whether the user stays logged in, what lands in the
store. Misconfiguration must fail at start-up with a message saying what to set.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import COOKIE_KINDS
from flask import Flask, Response, request, session
from flask.testing import FlaskClient
from itsdangerous import Signer

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.flask import Session, SessionKeeperInterface

MakeApp = Callable[..., Flask]
THIRTY_ONE_DAYS = 31 * 24 * 3600


@dataclass
class SetCookie:
    """One parsed Set-Cookie header: the value and its attributes (lower-case names)."""

    value: str
    attrs: dict[str, str]

    def has(self, name: str) -> bool:
        return name.lower() in self.attrs


def set_cookie(response: Response, name: str = "session") -> SetCookie | None:
    for header in response.headers.getlist("Set-Cookie"):
        first, *attrs = header.split("; ")
        key, _, value = first.partition("=")
        if key == name:
            parsed = {}
            for attr in attrs:
                attr_name, _, attr_value = attr.partition("=")
                parsed[attr_name.lower()] = attr_value
            return SetCookie(value, parsed)
    return None


def issued_cookie(response: Response, name: str = "session") -> SetCookie:
    found = set_cookie(response, name)
    assert found is not None, f"no {name} cookie in {response.headers.getlist('Set-Cookie')}"
    return found


def add_views(app: Flask, prefix: str = "") -> Flask:
    """The seeds' login flow: log in, see who you are, log out."""

    @app.post(f"{prefix}/login")
    def login() -> str:
        session["user"] = request.args.get("user", "alice")
        return "ok"

    @app.get(f"{prefix}/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    @app.get(f"{prefix}/logout")
    def logout() -> str:
        session.clear()
        return "bye"

    return app


def logged_in(app: Flask, client: FlaskClient | None = None) -> tuple[FlaskClient, SetCookie]:
    client = client or app.test_client()
    response = client.post("/login")
    assert response.status_code == 200
    return client, issued_cookie(response, app.config.get("SESSION_COOKIE_NAME") or "session")


def stored_rows(path: Path) -> list[tuple[str, bytes]]:
    with sqlite3.connect(path) as conn:
        return [(key, bytes(data)) for key, data in conn.execute("SELECT key, data FROM sessions")]


def move_clock(app: Flask, seconds: float) -> None:
    """Let the session backend believe ``seconds`` more have passed than really did."""
    app.extensions["sessionkeeper"].backend.clock = lambda: time.time() + seconds


# -- SESSION_TYPE ------------------------------------------------------------------


def test_unset_session_type_means_sqlite_file_in_instance_folder(tmp_path: Path) -> None:
    app = add_views(Flask("cfg", instance_path=str(tmp_path / "instance")))
    app.config.update(SECRET_KEY="k" * 32)
    Session(app)

    client, _ = logged_in(app)

    database = tmp_path / "instance" / "sessions.sqlite3"
    assert database.is_file()
    assert len(stored_rows(database)) == 1
    assert client.get("/whoami").text == "alice"


def test_session_type_is_case_insensitive(make_app: MakeApp) -> None:
    app = add_views(make_app(SESSION_TYPE="Memory"))
    client, _ = logged_in(app)
    assert client.get("/whoami").text == "alice"
    assert app.extensions["sessionkeeper"].backend.store.name == "memory"


# -- SESSION_PERMANENT and PERMANENT_SESSION_LIFETIME -------------------------------


def test_sessions_are_permanent_by_default_with_max_age_of_lifetime(make_app: MakeApp) -> None:
    app = add_views(make_app())
    _, cookie = logged_in(app)
    assert cookie.attrs["max-age"] == str(THIRTY_ONE_DAYS)
    assert cookie.has("expires")


def test_session_permanent_false_gives_browser_session_cookie(make_app: MakeApp) -> None:
    app = add_views(make_app(SESSION_PERMANENT=False))
    client, cookie = logged_in(app)
    assert not cookie.has("max-age")
    assert not cookie.has("expires")
    assert client.get("/whoami").text == "alice"


@pytest.mark.parametrize("lifetime", [7200, timedelta(hours=2)], ids=["int", "timedelta"])
def test_permanent_session_lifetime_sets_max_age_and_server_expiry(
    make_app: MakeApp, lifetime: int | timedelta
) -> None:
    app = add_views(make_app(PERMANENT_SESSION_LIFETIME=lifetime))
    client, cookie = logged_in(app)
    assert cookie.attrs["max-age"] == "7200"

    move_clock(app, 60)
    assert client.get("/whoami").text == "alice"
    # The server enforces the lifetime too: a replayed cookie is no good after it.
    move_clock(app, 7201)
    assert client.get("/whoami").text == "anonymous"


def test_permanent_session_lifetime_applies_to_cookie_sessions(make_app: MakeApp) -> None:
    app = add_views(make_app(SESSION_TYPE="cookie", PERMANENT_SESSION_LIFETIME=7200,
                             SESSION_PERMANENT=True))
    client, cookie = logged_in(app)
    assert cookie.attrs["max-age"] == "7200"
    move_clock(app, 7201)
    assert client.get("/whoami").text == "anonymous"


# -- SESSION_USE_SIGNER ------------------------------------------------------------


def test_use_signer_issues_id_dot_signature_verifiable_like_flask_session(
    make_app: MakeApp,
) -> None:
    app = add_views(make_app(SESSION_USE_SIGNER=True))
    client, cookie = logged_in(app)

    sid, _, signature = cookie.value.rpartition(".")
    assert sid and signature
    # Flask-Session's own signer (salt "flask-session", hmac derivation) accepts it.
    flask_session_signer = Signer(app.config["SECRET_KEY"], salt="flask-session",
                                  key_derivation="hmac")
    assert flask_session_signer.unsign(cookie.value).decode() == sid
    assert client.get("/whoami").text == "alice"


@pytest.mark.parametrize("forge", [
    pytest.param(lambda value: value[:-2] + ("AA" if not value.endswith("AA") else "BB"),
                 id="tampered-signature"),
    pytest.param(lambda value: value.rpartition(".")[0], id="signature-stripped"),
    pytest.param(lambda value: value.rpartition(".")[0] + ".", id="empty-signature"),
])
def test_use_signer_rejects_a_forged_signature_with_a_fresh_session(
    make_app: MakeApp, forge: Callable[[str], str]
) -> None:
    app = add_views(make_app(SESSION_USE_SIGNER=True))
    _, cookie = logged_in(app)

    attacker = app.test_client()
    attacker.set_cookie("session", forge(cookie.value))
    response = attacker.get("/whoami")
    assert response.status_code == 200
    assert response.text == "anonymous"


def test_without_signer_the_cookie_is_the_bare_id(make_app: MakeApp) -> None:
    app = add_views(make_app())
    _, cookie = logged_in(app)
    assert "." not in cookie.value
    assert len(cookie.value) == math.ceil(32 * 4 / 3)


# -- SESSION_KEY_PREFIX ------------------------------------------------------------


@pytest.mark.parametrize(("config", "prefix"), [
    ({}, "session:"),
    ({"SESSION_KEY_PREFIX": "shop:"}, "shop:"),
])
def test_store_key_is_prefix_plus_hash_of_id(
    make_app: MakeApp, tmp_path: Path, config: dict[str, Any], prefix: str
) -> None:
    database = tmp_path / "keys.sqlite3"
    app = add_views(make_app(config, SESSION_SQLITE_PATH=str(database)))
    _, cookie = logged_in(app)

    [(key, _)] = stored_rows(database)
    assert key == prefix + hashlib.sha256(cookie.value.encode()).hexdigest()
    assert cookie.value not in key  # a leaked store does not leak live cookies


# -- SESSION_ID_LENGTH -------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 24, 48])
def test_session_id_length_sets_id_entropy(make_app: MakeApp, length: int) -> None:
    app = add_views(make_app(SESSION_ID_LENGTH=length))
    client, cookie = logged_in(app)
    assert len(cookie.value) == math.ceil(length * 4 / 3)
    assert client.get("/whoami").text == "alice"


@pytest.mark.parametrize("length", [8, 15])
def test_session_id_length_below_16_bytes_is_rejected(make_app: MakeApp, length: int) -> None:
    with pytest.raises(ConfigurationError, match=r"SESSION_ID_LENGTH.*16"):
        make_app(SESSION_ID_LENGTH=length)


# -- SESSION_SERIALIZATION_FORMAT --------------------------------------------------


def test_serialization_format_defaults_to_msgpack(make_app: MakeApp, tmp_path: Path) -> None:
    database = tmp_path / "fmt.sqlite3"
    app = add_views(make_app(SESSION_SQLITE_PATH=str(database)))
    logged_in(app)
    [(_, data)] = stored_rows(database)
    assert msgspec.msgpack.decode(data) == {"user": "alice"}
    with pytest.raises(ValueError):
        json.loads(data)


def test_serialization_format_json_stores_readable_json(make_app: MakeApp, tmp_path: Path) -> None:
    database = tmp_path / "fmt.sqlite3"
    app = add_views(make_app(SESSION_SQLITE_PATH=str(database),
                             SESSION_SERIALIZATION_FORMAT="json"))
    client, _ = logged_in(app)
    [(_, data)] = stored_rows(database)
    assert json.loads(data) == {"user": "alice"}
    assert client.get("/whoami").text == "alice"


# -- SESSION_FILE_DIR --------------------------------------------------------------


def test_session_file_dir_holds_the_filesystem_sessions(make_app: MakeApp, tmp_path: Path) -> None:
    folder = tmp_path / "my-sessions"
    app = add_views(make_app(SESSION_TYPE="filesystem", SESSION_FILE_DIR=str(folder)))
    client, cookie = logged_in(app)

    files = list(folder.glob("*.session"))
    assert len(files) == 1
    assert hashlib.sha256(cookie.value.encode()).hexdigest() in files[0].name
    assert client.get("/whoami").text == "alice"


def test_session_file_dir_defaults_to_flask_session_in_working_directory(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = add_views(make_app(SESSION_TYPE="filesystem"))
    logged_in(app)
    assert len(list((tmp_path / "flask_session").glob("*.session"))) == 1


# -- Flask's cookie settings ---------------------------------------------------------


def test_default_cookie_attributes_match_flask(make_app: MakeApp, app_kind: str,
                                               app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config))
    _, cookie = logged_in(app)
    assert cookie.attrs["path"] == "/"
    assert cookie.has("httponly")
    assert not cookie.has("secure")
    assert not cookie.has("domain")
    if app_kind in COOKIE_KINDS:  # Flask's own cookie session: no SameSite unless set
        assert not cookie.has("samesite")
    else:  # sessionkeeper's default for its session ids, where Flask sets none
        assert cookie.attrs["samesite"] == "Lax"
    assert not cookie.has("partitioned")


def test_flask_cookie_settings_reach_set_cookie_and_its_deletion(
    make_app: MakeApp, app_config: dict[str, Any]
) -> None:
    app = add_views(make_app(
        app_config,
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN="example.test",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    ), prefix="/app")
    client = app.test_client()
    site = "https://www.example.test"

    response = client.post("/app/login", base_url=site)
    issued = issued_cookie(response, "sid")
    assert set_cookie(response, "session") is None
    assert client.get("/app/whoami", base_url=site).text == "alice"
    deleted = issued_cookie(client.get("/app/logout", base_url=site), "sid")

    # A deletion must carry the same Domain and Path, or browsers keep the old cookie.
    for cookie in (issued, deleted):
        assert cookie.attrs["domain"] == "example.test"
        assert cookie.attrs["path"] == "/app"
        assert cookie.attrs["samesite"] == "Strict"
        assert cookie.has("secure")
        assert cookie.has("partitioned")
        assert not cookie.has("httponly")
    assert deleted.attrs["max-age"] == "0"
    assert client.get("/app/whoami", base_url=site).text == "anonymous"


# -- SESSION_REFRESH_EACH_REQUEST --------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "cookie"])
def test_refresh_each_request_extends_a_session_that_is_only_read(
    make_app: MakeApp, kind: str
) -> None:
    app = add_views(make_app(SESSION_TYPE=kind, PERMANENT_SESSION_LIFETIME=1000,
                             SESSION_PERMANENT=True))
    client, _ = logged_in(app)

    move_clock(app, 500)  # past the refresh threshold, well inside the lifetime
    response = client.get("/whoami")
    assert response.text == "alice"
    assert issued_cookie(response).attrs["max-age"] == "1000"

    move_clock(app, 1200)  # past the first expiry, within the refreshed one
    assert client.get("/whoami").text == "alice"


@pytest.mark.parametrize("kind", ["sqlite", "cookie"])
def test_no_refresh_each_request_lets_a_read_only_session_expire(
    make_app: MakeApp, kind: str
) -> None:
    app = add_views(make_app(SESSION_TYPE=kind, PERMANENT_SESSION_LIFETIME=1000,
                             SESSION_REFRESH_EACH_REQUEST=False))
    client, _ = logged_in(app)

    move_clock(app, 500)
    response = client.get("/whoami")
    assert response.text == "alice"
    assert set_cookie(response) is None

    move_clock(app, 1200)
    assert client.get("/whoami").text == "anonymous"


def test_a_read_soon_after_a_write_sends_no_cookie(make_app: MakeApp) -> None:
    app = add_views(make_app())
    client, _ = logged_in(app)
    move_clock(app, 30)
    response = client.get("/whoami")
    assert response.text == "alice"
    assert set_cookie(response) is None


# -- SECRET_KEY_FALLBACKS ----------------------------------------------------------


def test_secret_key_fallbacks_keep_signed_ids_valid_after_rotation(
    make_app: MakeApp, tmp_path: Path
) -> None:
    shared = {"SESSION_USE_SIGNER": True, "SESSION_SQLITE_PATH": str(tmp_path / "s.sqlite3")}
    before = add_views(make_app(shared, SECRET_KEY="old-key-" * 4))
    _, cookie = logged_in(before)

    after = add_views(make_app(shared, SECRET_KEY="new-key-" * 4,
                               SECRET_KEY_FALLBACKS=["old-key-" * 4]))
    client = after.test_client()
    client.set_cookie("session", cookie.value)
    assert client.get("/whoami").text == "alice"

    # The next cookie it issues is signed with the new key only.
    reissued = issued_cookie(client.post("/login?user=bob"))
    new_only = Signer("new-key-" * 4, salt="flask-session", key_derivation="hmac")
    assert new_only.unsign(reissued.value)
    assert client.get("/whoami").text == "bob"


def test_without_fallbacks_a_rotated_key_starts_fresh_sessions(
    make_app: MakeApp, tmp_path: Path
) -> None:
    shared = {"SESSION_USE_SIGNER": True, "SESSION_SQLITE_PATH": str(tmp_path / "s.sqlite3")}
    before = add_views(make_app(shared, SECRET_KEY="old-key-" * 4))
    _, cookie = logged_in(before)

    after = add_views(make_app(shared, SECRET_KEY="new-key-" * 4))
    client = after.test_client()
    client.set_cookie("session", cookie.value)
    assert client.get("/whoami").text == "anonymous"


# -- Session(app) and Session().init_app(app) ----------------------------------------


def test_session_app_and_init_app_both_install_sessionkeeper(tmp_path: Path) -> None:
    direct = Flask("direct", instance_path=str(tmp_path / "a"))
    direct.config.update(SECRET_KEY="k" * 32)
    Session(direct)

    extension = Session()  # the application-factory pattern
    factory_made = []
    for name in ("first", "second"):
        app = Flask(name, instance_path=str(tmp_path / name))
        app.config.update(SECRET_KEY="k" * 32, SESSION_TYPE="memory")
        extension.init_app(app)
        factory_made.append(app)

    for app in (direct, *factory_made):
        add_views(app)
        assert isinstance(app.session_interface, SessionKeeperInterface)
        client, _ = logged_in(app)
        assert client.get("/whoami").text == "alice"


# -- start-up failures -------------------------------------------------------------


def bare_app(tmp_path: Path, **config: Any) -> Flask:
    app = Flask("misconfigured", instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    return app


@pytest.mark.parametrize("name", ["mongo", "reddis", 42])
def test_unknown_session_type_lists_the_valid_ones(tmp_path: Path, name: object) -> None:
    app = bare_app(tmp_path, SECRET_KEY="k", SESSION_TYPE=name)
    with pytest.raises(ConfigurationError) as caught:
        Session(app)
    message = str(caught.value)
    assert "SESSION_TYPE" in message
    for valid in ("sqlite", "filesystem", "memory", "redis", "memcached", "mongodb",
                  "sqlalchemy", "cachelib", "dynamodb", "cookie"):
        assert valid in message


def test_configuration_errors_are_value_errors_as_in_flask_session(tmp_path: Path) -> None:
    app = bare_app(tmp_path, SESSION_TYPE="no-such-store")
    with pytest.raises(ValueError, match="SESSION_TYPE"):
        Session(app)


@pytest.mark.parametrize("name", ["null"])
def test_flask_session_types_not_offered_say_what_to_use_instead(
    tmp_path: Path, name: str
) -> None:
    app = bare_app(tmp_path, SECRET_KEY="k", SESSION_TYPE=name)
    with pytest.raises(ConfigurationError, match=rf"SESSION_TYPE='{name}'.*use"):
        Session(app)


@pytest.mark.parametrize(("config", "needs"), [
    ({"SESSION_TYPE": "cookie"}, "SESSION_TYPE='cookie'"),
    ({"SESSION_USE_SIGNER": True}, "SESSION_USE_SIGNER"),
    ({"SESSION_TYPE": "cookie", "SESSION_COOKIE_ENCRYPT": True}, "SESSION_COOKIE_ENCRYPT"),
])
def test_features_that_sign_or_encrypt_need_secret_key(
    tmp_path: Path, config: dict[str, Any], needs: str
) -> None:
    app = bare_app(tmp_path, **config)
    with pytest.raises(ConfigurationError) as caught:
        Session(app)
    message = str(caught.value)
    assert needs in message
    assert "SECRET_KEY" in message


def test_server_side_sessions_without_signer_need_no_secret_key(tmp_path: Path) -> None:
    app = add_views(bare_app(tmp_path, SESSION_TYPE="memory"))
    Session(app)
    client, _ = logged_in(app)
    assert client.get("/whoami").text == "alice"


@pytest.mark.parametrize("fmt", ["pickle", "JSON ", "yaml"])
def test_bad_serialization_format_is_rejected(tmp_path: Path, fmt: str) -> None:
    app = bare_app(tmp_path, SECRET_KEY="k", SESSION_SERIALIZATION_FORMAT=fmt)
    with pytest.raises(ConfigurationError,
                       match=r"SESSION_SERIALIZATION_FORMAT.*'msgpack' or 'json'"):
        Session(app)


@pytest.mark.parametrize("lifetime", ["2h", 0, -60, timedelta(0), None, True])
def test_bad_lifetime_is_rejected(tmp_path: Path, lifetime: object) -> None:
    app = bare_app(tmp_path, SECRET_KEY="k", PERMANENT_SESSION_LIFETIME=lifetime)
    with pytest.raises(ConfigurationError, match="PERMANENT_SESSION_LIFETIME"):
        Session(app)


@pytest.mark.parametrize("keep", ["1h", -60, True])
def test_bad_keep_expired_is_rejected(tmp_path: Path, keep: object) -> None:
    app = bare_app(tmp_path, SESSION_KEEP_EXPIRED=keep)
    with pytest.raises(ConfigurationError, match="SESSION_KEEP_EXPIRED must be"):
        Session(app)


@pytest.mark.parametrize(("key", "value"), [
    ("SESSION_PERMANENT", "yes"),
    ("SESSION_USE_SIGNER", 1),
    ("SESSION_REFRESH_EACH_REQUEST", "false"),
])
def test_flags_must_be_booleans(tmp_path: Path, key: str, value: object) -> None:
    app = bare_app(tmp_path, SECRET_KEY="k", **{key: value})
    with pytest.raises(ConfigurationError, match=rf"{key} must be True or False"):
        Session(app)


def test_unreachable_sqlite_store_fails_at_start_up(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = blocker / "sessions" / "sessions.sqlite3"
    app = bare_app(tmp_path, SECRET_KEY="k", SESSION_SQLITE_PATH=str(path))
    with pytest.raises(ConfigurationError) as caught:
        Session(app)
    message = str(caught.value)
    assert str(path) in message
    assert "SESSION_TYPE='sqlite'" in message


def test_unusable_session_file_dir_fails_at_start_up(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    folder = blocker / "sessions"
    app = bare_app(tmp_path, SECRET_KEY="k", SESSION_TYPE="filesystem",
                   SESSION_FILE_DIR=str(folder))
    with pytest.raises(ConfigurationError) as caught:
        Session(app)
    message = str(caught.value)
    assert str(folder) in message
    assert "SESSION_TYPE='filesystem'" in message


def test_bad_sqlite_table_name_is_a_configuration_error(tmp_path: Path) -> None:
    app = bare_app(tmp_path, SECRET_KEY="k", SESSION_SQLITE_TABLE="sessions; DROP TABLE x")
    with pytest.raises(ConfigurationError, match="SESSION_SQLITE_TABLE"):
        Session(app)
