"""What the SQL stores do with the rows themselves, on the embedded SQLite store and the
SQLAlchemy store (PostgreSQL, MariaDB, SQLite):

- a row that no longer decodes (another SESSION_SERIALIZATION_FORMAT, garbage in the data
  column, a damaged metadata column) makes ``load`` raise ``UndecodableRecord``, on both
  of the SQLAlchemy store's read paths, and a request meeting it gets a fresh session,
  never a 500;
- ``touch`` says whether the row was there, and ``add`` claims a key exactly once;
- a session too large for the database fails the request that stores it with an error
  naming the limit, instead of a 503 that says "try again" when trying again never helps.

The damage is written straight into the table, beside the store.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from flask import Flask, session
from providers import _sqlalchemy, sqlalchemy_mariadb, sqlalchemy_postgresql

from sessionkeeper.errors import UndecodableRecord
from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionStore, SessionUpdate
from sessionkeeper.stores.sqlalchemy import SQLAlchemyStore, SQLRecordTooLarge, engine_from_url
from sessionkeeper.stores.sqlite import SQLiteStore

MakeApp = Callable[..., Flask]
MSGPACK, JSON = ValueCodec("msgpack"), ValueCodec("json")
KINDS = ["sqlite", "sqlalchemy-postgresql", "sqlalchemy-mariadb", "sqlalchemy-sqlite"]
SQLITE_KINDS = ("sqlite", "sqlalchemy-sqlite")
PREFIX = "session:"


def new_key() -> str:
    return PREFIX + storage_key(secrets.token_urlsafe(32))


def record(values: dict[str, Any] | None = None, *, user_id: str | None = None,
           now: float | None = None, lifetime: float = 600,
           codec: ValueCodec = MSGPACK) -> SessionRecord:
    now = time.time() if now is None else now
    return SessionRecord(values={k: codec.encode(v) for k, v in (values or {}).items()},
                         created_at=now, accessed_at=now, expires_at=now + lifetime,
                         permanent=True, user_id=user_id)


def delta(**set_values: Any) -> SessionUpdate:
    now = time.time()
    return SessionUpdate(set_values={k: MSGPACK.encode(v) for k, v in set_values.items()},
                         deleted_keys=set(), replace=False, accessed_at=now,
                         expires_at=now + 600, permanent=True)


# -- one table, shared by stores, apps and the raw writes ------------------------------


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def server_table(url: str) -> Iterator[tuple[str, str]]:
    table = _sqlalchemy.random_table()
    engine = engine_from_url(url)
    try:
        with _sqlalchemy.dropped_afterwards(engine, table):
            yield url, table
    finally:
        engine.dispose()


@pytest.fixture
def shared(kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """App config of one database and table that stores and apps share."""
    if kind == "sqlite":
        yield {"SESSION_TYPE": "sqlite", "SESSION_SQLITE_PATH": str(tmp_path / "shared.db")}
    elif kind == "sqlalchemy-sqlite":
        yield {"SESSION_TYPE": "sqlalchemy",
               "SESSION_SQLALCHEMY": f"sqlite:///{tmp_path / 'shared.db'}"}
    else:
        provider = sqlalchemy_postgresql if kind.endswith("postgresql") else sqlalchemy_mariadb
        with server_table(provider.url()) as (url, table):
            yield {"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY": url,
                   "SESSION_SQLALCHEMY_TABLE": table}


@pytest.fixture
def stores(shared: dict[str, Any]) -> Iterator[Callable[..., SessionStore]]:
    """Stores on the shared table (``codec``: their SESSION_SERIALIZATION_FORMAT)."""
    made: list[SessionStore] = []

    def make(codec: ValueCodec = MSGPACK, engine: sa.Engine | None = None) -> SessionStore:
        store: SessionStore
        if shared["SESSION_TYPE"] == "sqlite":
            store = SQLiteStore(shared["SESSION_SQLITE_PATH"], codec=codec)
        else:
            store = SQLAlchemyStore(
                engine or engine_from_url(shared["SESSION_SQLALCHEMY"]), codec=codec,
                table=shared.get("SESSION_SQLALCHEMY_TABLE", "sessions"),
                owns_engine=engine is None)
        made.append(store)
        store.check()
        return store

    yield make
    for store in made:
        store.close()


#: each store, and the SQLAlchemy store on both of its read paths: straight to the driver
#: and through Core (stores/sql_direct.py)
READ_PATHS = [("sqlite", "direct")] + [(kind, path) for kind in KINDS[1:]
                                       for path in ("direct", "core")]
each_read_path = pytest.mark.parametrize(("kind", "read_path"), READ_PATHS, indirect=["kind"])


def only(*kinds: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("kind", kinds, indirect=True)


@pytest.fixture
def store(stores: Callable[..., SessionStore], read_path: str) -> SessionStore:
    made = stores()
    if isinstance(made, SQLAlchemyStore):
        if read_path == "core":
            # A statement listener sends every read through Core.
            sa.event.listen(made.engine, "before_cursor_execute", lambda *args: None)
        assert made.reads_directly == (read_path == "direct")
    return made


class RawTable:
    """Writes straight into a store's table, as damage or another program would."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def set(self, key: str, **columns: Any) -> None:
        store = self.store
        if isinstance(store, SQLiteStore):
            assignments = ", ".join(f"{name} = ?" for name in columns)
            with closing(sqlite3.connect(store.path)) as conn, conn:
                changed = conn.execute(f"UPDATE {store.table} SET {assignments} WHERE key = ?",
                                       (*columns.values(), key)).rowcount
        else:
            assert isinstance(store, SQLAlchemyStore)
            t = store.table
            # Values as given, past the columns' types (bytes where text belongs...).
            raw = {name: sa.literal(value, _raw_type(value)) for name, value in columns.items()}
            with store.engine.begin() as conn:
                changed = conn.execute(sa.update(t).where(t.c.key == key).values(raw)).rowcount
        assert changed == 1

    def exists(self, key: str) -> bool:
        store = self.store
        if isinstance(store, SQLiteStore):
            with closing(sqlite3.connect(store.path)) as conn:
                query = f"SELECT count(*) FROM {store.table} WHERE key = ?"
                return bool(conn.execute(query, (key,)).fetchone()[0])
        assert isinstance(store, SQLAlchemyStore)
        t = store.table
        with store.engine.connect() as conn:
            return bool(conn.execute(sa.select(sa.func.count()).where(t.c.key == key))
                        .scalar_one())


def _raw_type(value: Any) -> sa.types.TypeEngine[Any]:
    if isinstance(value, bytes):
        return sa.LargeBinary()
    if isinstance(value, str):
        return sa.String()
    if isinstance(value, float):
        return sa.Double()
    return sa.Integer()


# -- rows read back exactly as written ----------------------------------------------------

#: times whose shortest digits are long, far ahead or tiny (MariaDB's read has the
#: server format them as text: stores/sql_packed.py)
EXACT_TIMES = [
    (1764848000.1234567, math.nextafter(1764848000.1234567, math.inf), 253402300799.99997),
    (0.1 + 0.2, 1e-7, 1.2345678901234567e300),
    (-1234.5678901234567, 5e-324, 2.2250738585072014e-308),
]
#: user ids holding what a packed row separates its fields with
ODD_USER_IDS = [None, "", " ", "-", "7", "3 a b  c ", "ünï cödé ", "a" * 255]


@each_read_path
def test_times_and_user_ids_read_back_exactly_as_written(store: SessionStore) -> None:
    for (created, accessed, expires), user_id in itertools.product(EXACT_TIMES, ODD_USER_IDS):
        key = new_key()
        values = {"note": MSGPACK.encode(" 1 - 2 "), "n": MSGPACK.encode(7)}
        store.create(key, SessionRecord(values=dict(values), created_at=created,
                                        accessed_at=accessed, expires_at=expires,
                                        permanent=False, user_id=user_id))
        # A save that did not load the row reads it (and its version) itself.
        assert store.update(key, SessionUpdate(
            set_values={"more": MSGPACK.encode("x y")}, deleted_keys=set(), replace=False,
            accessed_at=accessed, expires_at=expires, permanent=False))
        loaded = store.load(key, min(created, accessed) - 1)
        assert loaded is not None
        assert (loaded.values, loaded.created_at, loaded.accessed_at, loaded.expires_at,
                loaded.permanent, loaded.user_id) == (
            {**values, "more": MSGPACK.encode("x y")}, created, accessed, expires, False,
            user_id)


@pytest.fixture
def rounding_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores made from now on hear that their server rounds the doubles it formats
    (stores/sql_packed.py's start-up question), so they read column by column."""
    monkeypatch.setattr(SQLAlchemyStore, "_ask_packing", lambda self: False)


@pytest.mark.parametrize(("kind", "read_path"), [("sqlalchemy-mariadb", "direct"),
                                                 ("sqlalchemy-mariadb", "core")],
                         indirect=["kind"])
def test_a_server_that_rounds_its_doubles_is_read_column_by_column(
        rounding_server: None, store: SessionStore) -> None:
    assert isinstance(store, SQLAlchemyStore) and store._load is store._load_columns
    test_times_and_user_ids_read_back_exactly_as_written(store)


@only("sqlalchemy-postgresql")
def test_postgresql_reads_its_own_table_packed_in_one_column(
        stores: Callable[..., SessionStore]) -> None:
    store = stores()
    assert isinstance(store, SQLAlchemyStore) and store._load is store._load_packed
    key = new_key()
    store.create(key, record({"user": "alice"}, user_id="ünï cödé "))
    loaded = store.load(key, time.time())
    assert loaded is not None and (loaded.permanent, loaded.user_id) == (True, "ünï cödé ")
    assert store.update(key, SessionUpdate(
        set_values={}, deleted_keys={"user"}, replace=False, accessed_at=time.time(),
        expires_at=time.time() + 60, permanent=False, user_id=None, user_id_changed=True,
        version=loaded.version))
    loaded = store.load(key, time.time())
    assert loaded is not None and (loaded.values, loaded.permanent, loaded.user_id) == (
        {}, False, None)


@only("sqlalchemy-postgresql")
def test_a_postgresql_table_of_other_column_types_is_read_column_by_column(
        shared: dict[str, Any], stores: Callable[..., SessionStore]) -> None:
    # A NUMERIC version is no INTEGER PostgreSQL widens to BIGINT by itself: the packed
    # read fails to plan, and the seven columns find the version damaged.
    with closing(engine_from_url(shared["SESSION_SQLALCHEMY"]).connect()) as conn:
        conn.execute(sa.text(
            f"CREATE TABLE {shared['SESSION_SQLALCHEMY_TABLE']} (key VARCHAR(255) PRIMARY "
            "KEY, data BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL, accessed_at "
            "DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL, permanent "
            "BOOLEAN NOT NULL, user_id VARCHAR(255), version NUMERIC NOT NULL)"))
        conn.engine.dispose()
    store = stores()
    assert isinstance(store, SQLAlchemyStore) and store._load is store._load_columns
    key = new_key()
    store.create(key, record({"user": "alice"}))
    with pytest.raises(UndecodableRecord, match="version"):
        store.load(key, time.time())


@only("sqlalchemy-postgresql")
def test_a_postgresql_table_created_after_the_first_read_is_then_read_packed(
        shared: dict[str, Any]) -> None:
    store = SQLAlchemyStore(engine_from_url(shared["SESSION_SQLALCHEMY"]), owns_engine=True,
                            table=shared["SESSION_SQLALCHEMY_TABLE"], codec=MSGPACK)
    try:
        with pytest.raises(sa.exc.ProgrammingError):  # no table yet: as before
            store.load(new_key(), time.time())
        store.create_table()
        key = new_key()
        store.create(key, record({"user": "alice"}))
        loaded = store.load(key, time.time())
        assert loaded is not None and store._load is store._load_packed
    finally:
        store.close()


# -- records that no longer decode -------------------------------------------------------

#: the data column: garbage, nothing, a JSON document read as MessagePack, a truncated map
DATA_DAMAGE = {
    "garbage": b"\x00\xffnot a session\xc1",
    "empty": b"",
    "json": JSON.pack({"user": JSON.encode("alice")}),
    "truncated": MSGPACK.pack({"user": MSGPACK.encode("alice" * 10)})[:-7],
    "a number": MSGPACK.encode(42),
}


@each_read_path
@pytest.mark.parametrize("damage", sorted(DATA_DAMAGE))
def test_a_data_column_that_does_not_unpack_raises_undecodable_record(
        store: SessionStore, damage: str) -> None:
    key = new_key()
    store.create(key, record({"user": "alice"}))
    RawTable(store).set(key, data=DATA_DAMAGE[damage])

    with pytest.raises(UndecodableRecord) as raised:
        store.load(key, time.time())
    assert raised.value.store == store.name


@each_read_path
def test_sessions_stored_in_another_format_raise_undecodable_record(
        store: SessionStore, stores: Callable[..., SessionStore]) -> None:
    key = new_key()
    stores(JSON).create(key, record({"user": "alice", "cart": [1, 2]}, codec=JSON))
    with pytest.raises(UndecodableRecord):
        store.load(key, time.time())  # a MessagePack store


def damaged_columns(kind: str) -> dict[str, dict[str, Any]]:
    """Metadata damage each database can hold."""
    if kind in SQLITE_KINDS:  # SQLite keeps anything in any column
        damage = {
            "created_at text": {"created_at": "yesterday"},
            "accessed_at blob": {"accessed_at": b"\x01\x02"},
            "expires_at text": {"expires_at": "never"},  # text sorts above every number
            "permanent text": {"permanent": "maybe"},
            "user_id blob": {"user_id": b"\xff\xfe"},
            "data text": {"data": "a string, not a blob"},
        }
        if kind == "sqlalchemy-sqlite":
            damage["version text"] = {"version": "seven"}
        return damage
    if kind == "sqlalchemy-postgresql":
        return {"created_at NaN": {"created_at": float("nan")},
                "accessed_at infinite": {"accessed_at": float("-inf")},
                "expires_at infinite": {"expires_at": float("inf")}}
    return {"user_id not UTF-8": {"user_id": b"\xff\xfe"}}  # MariaDB: VARBINARY


@each_read_path
def test_damaged_metadata_columns_raise_undecodable_record(store: SessionStore,
                                                          kind: str) -> None:
    for what, columns in damaged_columns(kind).items():
        key = new_key()
        store.create(key, record({"user": "alice"}, user_id="alice"))
        RawTable(store).set(key, **columns)
        with pytest.raises(UndecodableRecord):
            store.load(key, time.time())
            pytest.fail(f"{what}: loaded")


def test_a_save_meeting_a_damaged_row_raises_undecodable_record(
        stores: Callable[..., SessionStore]) -> None:
    store = stores()
    key = new_key()
    store.create(key, record({"user": "alice"}))
    RawTable(store).set(key, data=DATA_DAMAGE["garbage"])
    with pytest.raises(UndecodableRecord):
        store.update(key, delta(cart=[1]))


# -- ... and through an app ----------------------------------------------------------------


def session_app(make_app: MakeApp, config: dict[str, Any], **more: Any) -> Flask:
    app = make_app(config, **more)

    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        session["visits"] = 1
        return "in"

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    @app.post("/visit")
    def visit() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    @app.post("/logout")
    def logout() -> str:
        session.clear()
        return "out"

    return app


@pytest.fixture
def make_app(make_app: MakeApp) -> Iterator[MakeApp]:
    """The shared factory, plus closing the stores of the apps made (their pools)."""
    made: list[Flask] = []

    def make(config: dict[str, Any] | None = None, **more: Any) -> Flask:
        app = make_app(config, **more)
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["sessionkeeper"].backend.store.close()


def store_of(app: Flask) -> SessionStore:
    store = app.extensions["sessionkeeper"].backend.store
    return getattr(store, "inner", store)  # behind the circuit breaker, when there is one


def key_of(app: Flask, client: Any) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return str(app.extensions["sessionkeeper"].backend.key(cookie.value))


@pytest.mark.parametrize("before", ["json", "msgpack"])
def test_switching_the_serialization_format_gives_fresh_sessions_not_500s(
        make_app: MakeApp, shared: dict[str, Any], before: str) -> None:
    old = session_app(make_app, shared, SESSION_SERIALIZATION_FORMAT=before)
    browser = old.test_client()
    assert browser.post("/login").status_code == 200
    key = key_of(old, browser)

    after = "msgpack" if before == "json" else "json"
    new = session_app(make_app, shared, SESSION_SERIALIZATION_FORMAT=after)
    browser.application = new  # the same browser, cookie and all, after the deploy
    answer = browser.get("/whoami")
    assert (answer.status_code, answer.text) == (200, "anonymous")
    assert not RawTable(store_of(new)).exists(key)  # removed, not met again
    assert browser.post("/visit").text == "1"       # a fresh session that works
    assert browser.post("/logout").status_code == 200


@pytest.mark.parametrize("damage", ["garbage", "json"])
def test_garbage_in_the_data_column_gives_a_fresh_session_not_a_500(
        make_app: MakeApp, shared: dict[str, Any], damage: str) -> None:
    app = session_app(make_app, shared)
    browser = app.test_client()
    browser.post("/login")
    key = key_of(app, browser)
    RawTable(store_of(app)).set(key, data=DATA_DAMAGE[damage])

    assert browser.post("/logout").status_code == 200  # logout included
    browser.post("/login")
    key = key_of(app, browser)
    RawTable(store_of(app)).set(key, data=DATA_DAMAGE[damage])
    answer = browser.get("/whoami")
    assert (answer.status_code, answer.text) == (200, "anonymous")
    assert not RawTable(store_of(app)).exists(key)  # removed, not met again
    assert browser.post("/visit").text == "1"


def test_one_value_that_does_not_decode_gives_no_500(make_app: MakeApp,
                                                    shared: dict[str, Any]) -> None:
    # The row unpacks, but one value in it does not decode (a tagged date that is none).
    app = session_app(make_app, shared)

    @app.get("/visits")
    def visits() -> str:
        return str(session.get("visits"))

    browser = app.test_client()
    browser.post("/login")
    key = key_of(app, browser)
    store = store_of(app)
    loaded = store.load(key, time.time())
    assert loaded is not None
    damaged = dict(loaded.values, visits=msgspec.msgpack.encode({" d": "not a date"}))
    RawTable(store).set(key, data=MSGPACK.pack(damaged))

    for view in ("/visits", "/whoami"):
        assert browser.get(view).status_code == 200, view
    assert browser.post("/visit").status_code == 200
    assert browser.post("/logout").status_code == 200


def test_a_damaged_metadata_column_gives_a_fresh_session_not_a_500(
        make_app: MakeApp, shared: dict[str, Any], kind: str) -> None:
    app = session_app(make_app, shared)
    for what, columns in damaged_columns(kind).items():
        browser = app.test_client()
        browser.post("/login")
        RawTable(store_of(app)).set(key_of(app, browser), **columns)
        answer = browser.get("/whoami")
        assert (answer.status_code, answer.text) == (200, "anonymous"), what


# -- touch and add ------------------------------------------------------------------------


def test_touch_says_whether_the_row_was_there(stores: Callable[..., SessionStore]) -> None:
    store = stores()
    key = new_key()
    store.create(key, record({"n": 1}))
    later = time.time() + 60
    assert store.touch(key, later, later + 600) is True
    loaded = store.load(key, later)
    assert loaded is not None and loaded.expires_at == pytest.approx(later + 600)

    store.delete(key)
    assert store.touch(key, later, later + 600) is False
    assert store.load(key, later) is None  # nothing written


def test_add_claims_a_key_once_and_replaces_only_an_expired_row(
        stores: Callable[..., SessionStore]) -> None:
    store = stores()
    key = new_key()
    assert store.add(key, record({"n": 1})) is True
    assert store.add(key, record({"n": 2})) is False
    loaded = store.load(key, time.time())
    assert loaded is not None and MSGPACK.decode(loaded.values["n"]) == 1

    expired = new_key()
    store.create(expired, record({"n": 1}, now=time.time() - 100, lifetime=10))
    assert store.add(expired, record({"n": 3})) is True
    loaded = store.load(expired, time.time())
    assert loaded is not None and MSGPACK.decode(loaded.values["n"]) == 3


def test_concurrent_adds_of_one_key_have_exactly_one_winner(
        stores: Callable[..., SessionStore]) -> None:
    store = stores()
    threads = 8
    for _round in range(20):
        key = new_key()
        # An expired row under the key: every adder may replace it, only one does.
        store.create(key, record({"n": -1}, now=time.time() - 100, lifetime=10))
        start = threading.Barrier(threads, timeout=30)

        def claim(i: int, key: str = key, start: threading.Barrier = start) -> bool:
            start.wait()
            return store.add(key, record({"n": i}))

        with ThreadPoolExecutor(max_workers=threads) as pool:
            won = [f.result(timeout=60) for f in [pool.submit(claim, i)
                                                  for i in range(threads)]]
        assert won.count(True) == 1, won
        loaded = store.load(key, time.time())
        assert loaded is not None and MSGPACK.decode(loaded.values["n"]) == won.index(True)


def lock_waits(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT COUNT(*) FROM information_schema.innodb_trx "
            "WHERE trx_state = 'LOCK WAIT'")).scalar_one())


@only("sqlalchemy-mariadb")
def test_claims_that_mariadb_deadlocks_are_run_again_not_reported_as_an_outage(
        mariadb_store: SQLAlchemyStore) -> None:
    # InnoDB's classic duplicate-key deadlock: while one transaction deletes the row,
    # two INSERTs of its key wait for a shared lock; once it commits, both hold one and
    # both want the exclusive lock, and InnoDB rolls one back (error 1213).
    key = new_key()
    t = mariadb_store.table
    mariadb_store.create(key, record({"n": -1}, now=time.time() - 100, lifetime=10))
    with mariadb_store.engine.connect() as deleter, ThreadPoolExecutor(2) as pool:
        deleter.exec_driver_sql("BEGIN")  # the store's engine autocommits otherwise
        deleter.execute(sa.delete(t).where(t.c.key == key))
        claims = [pool.submit(mariadb_store.add, key, record({"n": i})) for i in range(2)]
        deadline = time.monotonic() + 20
        while lock_waits(mariadb_store.engine) < 2 and time.monotonic() < deadline:
            time.sleep(0.15)  # InnoDB refreshes innodb_trx only when unread for 0.1 s
        assert lock_waits(mariadb_store.engine) == 2  # both INSERTs wait on the row
        deleter.exec_driver_sql("COMMIT")
        won = [claim.result(timeout=60) for claim in claims]
    assert sorted(won) == [False, True]
    loaded = mariadb_store.load(key, time.time())
    assert loaded is not None and MSGPACK.decode(loaded.values["n"]) == won.index(True)


# -- sessions too large for the database ---------------------------------------------------


def packed_size(value: str) -> int:
    return len(MSGPACK.pack({"v": MSGPACK.encode(value)}))


def text_of_packed_size(size: int, char: str = "x") -> str:
    """A value that packs (under the name "v") to exactly ``size`` bytes."""
    overhead = packed_size(char * 100_000) - 100_000  # the same headers from 64 KB up
    return char * (size - overhead)


@pytest.fixture
def mariadb_store(stores: Callable[..., SessionStore]) -> SQLAlchemyStore:
    made = stores()
    assert isinstance(made, SQLAlchemyStore)
    return made


def max_allowed_packet(store: SQLAlchemyStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT @@max_allowed_packet")).scalar_one())


@only("sqlalchemy-mariadb")
@pytest.mark.parametrize("char", ["x", "'"])  # "'" is sent escaped, two bytes a byte
def test_mariadb_keeps_data_up_to_half_of_max_allowed_packet(
        mariadb_store: SQLAlchemyStore, char: str) -> None:
    limit = (max_allowed_packet(mariadb_store) - 4096) // 2
    key, grown = new_key(), new_key()
    largest = text_of_packed_size(limit, char)
    mariadb_store.create(key, record({"v": largest}))
    loaded = mariadb_store.load(key, time.time())
    assert loaded is not None and MSGPACK.decode(loaded.values["v"]) == largest

    with pytest.raises(SQLRecordTooLarge, match=r"max_allowed_packet of \d+ bytes") as raised:
        mariadb_store.create(new_key(), record({"v": largest + char}))
    assert (raised.value.size, raised.value.limit) == (limit + 1, limit)

    # A session that grows past it: the save fails the same way, the stored one stays.
    mariadb_store.create(grown, record({"v": "small"}))
    assert mariadb_store.load(grown, time.time()) is not None
    with pytest.raises(SQLRecordTooLarge):
        mariadb_store.update(grown, delta(v=largest + char))
    kept = mariadb_store.load(grown, time.time())
    assert kept is not None and MSGPACK.decode(kept.values["v"]) == "small"


@only("sqlalchemy-mariadb")
def test_a_session_over_the_mariadb_limit_fails_its_request_clearly_not_with_503(
        make_app: MakeApp, shared: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    app = session_app(make_app, shared, PROPAGATE_EXCEPTIONS=False)

    @app.post("/upload/<int:megabytes>")
    def upload(megabytes: int) -> str:
        session["photo"] = secrets.token_bytes(megabytes * 1_000_000)  # base64: 4/3 larger
        return "stored"

    browser = app.test_client()
    assert browser.post("/login").status_code == 200
    assert browser.post("/upload/5").status_code == 200  # 6.7 MB of data: fits
    with caplog.at_level(logging.ERROR):
        answer = browser.post("/upload/7")               # 9.3 MB: over 8 MB
    assert answer.status_code == 500
    errors = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any(isinstance(e, SQLRecordTooLarge) and "max_allowed_packet" in str(e)
               for e in errors), errors
    # The store is not down and the session is as it was: no 503 for anyone.
    assert browser.get("/whoami").text == "alice"
    assert browser.post("/visit").text == "2"


@only(*SQLITE_KINDS)
@pytest.mark.skipif(not hasattr(sqlite3.Connection, "setlimit"),
                    reason="Connection.setlimit needs Python 3.11")
def test_a_session_over_sqlites_length_limit_fails_its_request_clearly_not_with_503(
        make_app: MakeApp, shared: dict[str, Any], kind: str,
        caplog: pytest.LogCaptureFixture) -> None:
    limit = 1_000_000  # lowered from SQLite's 1 GB, so the test need not send a gigabyte
    config = dict(shared)
    if kind == "sqlalchemy-sqlite":
        engine = engine_from_url(config["SESSION_SQLALCHEMY"])

        @sa.event.listens_for(engine, "connect")
        def lower(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)

        config["SESSION_SQLALCHEMY"] = engine
    app = session_app(make_app, config, PROPAGATE_EXCEPTIONS=False)
    store = store_of(app)
    if isinstance(store, SQLiteStore):
        store._connection().setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)  # this thread's

    @app.post("/note/<int:kilobytes>")
    def note(kilobytes: int) -> str:
        session["note"] = "n" * (kilobytes * 1000)
        return "stored"

    try:
        browser = app.test_client()
        assert browser.post("/login").status_code == 200
        assert browser.post("/note/900").status_code == 200
        with caplog.at_level(logging.ERROR):
            answer = browser.post("/note/1100")
        assert answer.status_code == 500
        errors = [r.exc_info[1] for r in caplog.records if r.exc_info]
        assert any(isinstance(e, SQLRecordTooLarge)
                   and "SQLITE_LIMIT_LENGTH of 1000000" in str(e) for e in errors), errors
        assert browser.get("/whoami").text == "alice"
        assert browser.post("/visit").text == "2"
    finally:
        if isinstance(config.get("SESSION_SQLALCHEMY"), sa.Engine):
            config["SESSION_SQLALCHEMY"].dispose()

