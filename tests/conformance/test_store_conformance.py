"""Every store keeps the ``SessionStore`` contract; every provider in tests/providers/ runs it.

The tests speak only the store interface and a ``ValueCodec``, so a store joins by adding
a provider. Expiry is tested with timestamps in the past or the future; a store that
leaves expiry to its server's native TTL instead of comparing ``expires_at`` with
``now`` gets a bounded wait, and only that store ever waits.

The second half drives each store through ``ServerSideSessions``, the way requests do:
regeneration, id strength, only issued ids, and hashed store keys.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from counting import CountingStore
from providers._shared import random_prefix

from sessionkeeper.backend import CookieUpdate
from sessionkeeper.errors import ConfigurationError, SessionKeeperError, StoreUnavailable
from sessionkeeper.ids import SessionIds, storage_key
from sessionkeeper.model import Session
from sessionkeeper.policy import ExpiryPolicy
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.server_side import ServerSideSessions
from sessionkeeper.stores.base import SessionRecord, SessionStore, SessionUpdate
from sessionkeeper.stores.filesystem import FileSystemStore
from sessionkeeper.stores.memory import MemoryStore
from sessionkeeper.stores.sqlite import SQLiteStore

CODEC = ValueCodec()  # the format the `store` fixture's stores are built with
LIFETIME = 600.0
# Stores may keep times to the second (server TTLs); the core needs no finer precision.
TIME_TOLERANCE = 1.0
# How long a store relying on its server's TTL may keep answering for an expired record.
NATIVE_TTL_GRACE = 4.0
SHORT_TTL = 1.5
THREADS = 50


# -- helpers ---------------------------------------------------------------------------
def new_key() -> str:
    """A key shaped like the core's (prefix + sha256 hex), unique to this call."""
    return random_prefix("conformance") + storage_key(secrets.token_urlsafe(32))


def encoded(values: dict[str, Any]) -> dict[str, bytes]:
    return {key: CODEC.encode(value) for key, value in values.items()}


def decoded(record: SessionRecord | None) -> dict[str, Any]:
    assert record is not None, "the record is missing"
    return {key: CODEC.decode(blob) for key, blob in record.values.items()}


def make_record(values: dict[str, Any], *, now: float | None = None,
                expires_at: float | None = None, user_id: str | None = None,
                permanent: bool = True) -> SessionRecord:
    now = time.time() if now is None else now
    return SessionRecord(
        values=encoded(values), created_at=now, accessed_at=now,
        expires_at=now + LIFETIME if expires_at is None else expires_at,
        permanent=permanent, user_id=user_id,
    )


def make_delta(*, set_values: dict[str, Any] | None = None, deleted: set[str] | None = None,
               replace: bool = False, user_id: str | None = None,
               user_id_changed: bool = False, permanent: bool = True,
               now: float | None = None) -> SessionUpdate:
    now = time.time() if now is None else now
    return SessionUpdate(
        set_values=encoded(set_values or {}), deleted_keys=set(deleted or ()),
        replace=replace, accessed_at=now, expires_at=now + LIFETIME, permanent=permanent,
        user_id=user_id, user_id_changed=user_id_changed,
    )


def eventually(check: Callable[[], bool], what: str, *, until: float | None = None) -> None:
    """Wait (bounded) for ``check``: stores that compare with ``now`` pass at once;
    stores that leave expiry to their server's TTL pass once that TTL has run out."""
    deadline = until if until is not None else time.time() + NATIVE_TTL_GRACE
    while not check():
        if time.time() > deadline:
            pytest.fail(f"{what} (waited {NATIVE_TTL_GRACE:g}s for a server TTL to run out)")
        time.sleep(0.1)


def held(store: SessionStore, key: str, at: float) -> bool:
    """True when the store still holds ``key`` (asked as of ``at``, before it expired)."""
    return store.load(key, at) is not None


# -- create and load -------------------------------------------------------------------
def test_create_then_load_returns_values_and_metadata(store: SessionStore) -> None:
    now = time.time()
    user = f"user-{secrets.token_hex(4)}"
    key = new_key()
    values = {"user": "alice", "visits": 3, "cart": [1, 2, {"sku": "A-1"}], "ok": True}
    store.create(key, SessionRecord(
        values=encoded(values), created_at=now - 30, accessed_at=now - 5,
        expires_at=now + LIFETIME, permanent=False, user_id=user,
    ))

    loaded = store.load(key, now)

    assert loaded is not None
    assert loaded.values == encoded(values)  # the encoded bytes, unchanged
    assert decoded(loaded) == values
    assert loaded.created_at == pytest.approx(now - 30, abs=TIME_TOLERANCE)
    assert loaded.accessed_at == pytest.approx(now - 5, abs=TIME_TOLERANCE)
    assert loaded.expires_at == pytest.approx(now + LIFETIME, abs=TIME_TOLERANCE)
    assert loaded.permanent is False
    assert loaded.user_id == user


def test_a_record_without_user_round_trips_as_permanent(store: SessionStore) -> None:
    key = new_key()
    store.create(key, make_record({"n": 1}))

    loaded = store.load(key, time.time())

    assert loaded is not None
    assert loaded.permanent is True
    assert loaded.user_id is None


def test_load_of_an_unknown_key_returns_none(store: SessionStore) -> None:
    assert store.load(new_key(), time.time()) is None


def test_changing_a_loaded_record_does_not_change_the_stored_one(store: SessionStore) -> None:
    key = new_key()
    store.create(key, make_record({"a": 1}))
    first = store.load(key, time.time())
    assert first is not None
    first.values["a"] = CODEC.encode(999)
    first.values["b"] = CODEC.encode(2)

    assert decoded(store.load(key, time.time())) == {"a": 1}


# -- expiry ----------------------------------------------------------------------------
def test_a_record_created_already_expired_never_loads(store: SessionStore) -> None:
    key = new_key()
    now = time.time()
    store.create(key, make_record({"a": 1}, now=now - 100, expires_at=now - 10))

    eventually(lambda: store.load(key, time.time()) is None, "an expired record still loads")


def test_load_returns_none_once_expires_at_has_passed(store: SessionStore) -> None:
    key = new_key()
    expires_at = time.time() + SHORT_TTL
    store.create(key, make_record({"a": 1}, expires_at=expires_at))

    assert decoded(store.load(key, time.time())) == {"a": 1}
    if store.load(key, expires_at + 0.01) is None:
        return  # the store compares expires_at with `now`
    # The store leaves expiry to its server's TTL: the record must go once it runs out.
    eventually(lambda: store.load(key, time.time()) is None, "an expired record still loads",
               until=expires_at + NATIVE_TTL_GRACE)


def test_delete_expired_removes_only_expired_records(store: SessionStore) -> None:
    now = time.time()
    dead, live, other_live = new_key(), new_key(), new_key()
    store.create(dead, make_record({"d": 1}, now=now - 100, expires_at=now - 10))
    store.create(live, make_record({"l": 1}, now=now))
    store.create(other_live, make_record({"o": 1}, now=now, expires_at=now + 60))

    removed = store.delete_expired(time.time())

    # Asked as of a time before it expired, a record still held would load again.
    before_expiry = now - 50
    if removed > 0:
        assert not held(store, dead, before_expiry), "delete_expired kept the expired record"
    else:  # stores with native TTLs report 0; their server removes the record itself
        eventually(lambda: not held(store, dead, before_expiry),
                   "the expired record is still held")
    assert decoded(store.load(live, time.time())) == {"l": 1}
    assert decoded(store.load(other_live, time.time())) == {"o": 1}


# -- update ----------------------------------------------------------------------------
def test_update_applies_a_delta_and_keeps_untouched_keys(store: SessionStore) -> None:
    key = new_key()
    created = time.time() - 60
    store.create(key, make_record({"a": 1, "b": 2, "c": 3}, now=created, permanent=False))
    later = time.time()

    applied = store.update(key, make_delta(set_values={"b": 20, "d": [4]}, deleted={"c"},
                                           permanent=True, now=later))

    assert applied is True
    loaded = store.load(key, later)
    assert decoded(loaded) == {"a": 1, "b": 20, "d": [4]}
    assert loaded is not None
    assert loaded.created_at == pytest.approx(created, abs=TIME_TOLERANCE)
    assert loaded.accessed_at == pytest.approx(later, abs=TIME_TOLERANCE)
    assert loaded.expires_at == pytest.approx(later + LIFETIME, abs=TIME_TOLERANCE)
    assert loaded.permanent is True


def test_deleting_an_absent_key_in_a_delta_is_harmless(store: SessionStore) -> None:
    key = new_key()
    store.create(key, make_record({"a": 1}))

    assert store.update(key, make_delta(set_values={"b": 2}, deleted={"never-there"}))

    assert decoded(store.load(key, time.time())) == {"a": 1, "b": 2}


def test_update_with_replace_drops_every_old_value(store: SessionStore) -> None:
    key = new_key()
    store.create(key, make_record({"a": 1, "b": 2}))

    assert store.update(key, make_delta(set_values={"z": "fresh"}, replace=True))

    assert decoded(store.load(key, time.time())) == {"z": "fresh"}


def test_update_of_a_missing_record_returns_false_and_creates_nothing(
    store: SessionStore,
) -> None:
    key = new_key()

    assert store.update(key, make_delta(set_values={"a": 1})) is False

    assert store.load(key, time.time()) is None


# -- touch -----------------------------------------------------------------------------
def test_touch_extends_expiry_without_changing_values(store: SessionStore) -> None:
    key = new_key()
    now = time.time()
    store.create(key, make_record({"a": 1, "cart": [1, 2]}, now=now, expires_at=now + 60))

    store.touch(key, now + 30, now + 900)

    later = now + 120  # past the first expiry
    loaded = store.load(key, later)
    assert loaded is not None, "touch did not extend the record's life"
    assert decoded(loaded) == {"a": 1, "cart": [1, 2]}
    assert loaded.accessed_at == pytest.approx(now + 30, abs=TIME_TOLERANCE)
    assert loaded.expires_at == pytest.approx(now + 900, abs=TIME_TOLERANCE)


def test_touch_of_a_missing_record_creates_nothing(store: SessionStore) -> None:
    key = new_key()
    now = time.time()

    store.touch(key, now, now + LIFETIME)

    assert store.load(key, now) is None


# -- delete ----------------------------------------------------------------------------
def test_delete_removes_the_record_and_is_a_no_op_when_gone(store: SessionStore) -> None:
    key, kept = new_key(), new_key()
    store.create(key, make_record({"a": 1}))
    store.create(kept, make_record({"b": 2}))

    store.delete(key)
    store.delete(key)  # already gone: nothing happens
    store.delete(new_key())

    assert store.load(key, time.time()) is None
    assert decoded(store.load(kept, time.time())) == {"b": 2}


# -- values ----------------------------------------------------------------------------
def test_values_of_a_megabyte_and_more_round_trip(store: SessionStore, store_kind: str) -> None:
    limit = getattr(importlib.import_module(f"providers.{store_kind}"), "MAX_RECORD_BYTES", None)
    if limit is not None:
        # A store with a smaller cap (DynamoDB's 400 KB items) refuses such a session with
        # an error naming its limit - never a silent loss, never a 503 to retry.
        key = new_key()
        store.create(key, make_record({"small": 1}))
        with pytest.raises(SessionKeeperError, match=str(limit // 1024)) as refused:
            store.update(key, make_delta(set_values={"blob": os.urandom(limit + 1)}))
        assert not isinstance(refused.value, StoreUnavailable)
        assert decoded(store.load(key, time.time())) == {"small": 1}
        return
    key = new_key()
    big_text = secrets.token_hex(600_000)  # 1.2 MB
    big_bytes = os.urandom(1_100_000)
    store.create(key, make_record({"text": big_text, "small": 1}))

    assert store.update(key, make_delta(set_values={"blob": big_bytes}))

    loaded = decoded(store.load(key, time.time()))
    assert loaded["text"] == big_text
    assert loaded["blob"] == big_bytes
    assert loaded["small"] == 1


UNICODE = {
    "emoji 😀🎉": "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag",
    "键": "中文字符与日本語のテキスト",
    "مفتاح": "نص من اليمين إلى اليسار",
    "מפתח": "טקסט בעברית",
    "\u202eoverride": "a\u202bembedded\u202c RTL",
    "control\t\x01\x1f\x7f": "bell\x07 escape\x1b form\x0c line\nfeed",
    "e\u0301 combining": "ñ vs n\u0303",
    "astral \U0001d518\U0001d52b\U0001d526": "\U0010fffd last plane",
}


def test_unicode_keys_and_values_round_trip(store: SessionStore) -> None:
    key = new_key()
    store.create(key, make_record(UNICODE))
    assert decoded(store.load(key, time.time())) == UNICODE

    assert store.update(key, make_delta(set_values={"新しい 🔑": "ключ"}, deleted={"键"}))

    expected = {k: v for k, v in UNICODE.items() if k != "键"} | {"新しい 🔑": "ключ"}
    assert decoded(store.load(key, time.time())) == expected


# -- the per-user index ----------------------------------------------------------------
def test_keys_for_user_lists_only_live_sessions_of_that_user(store: SessionStore) -> None:
    user, other = f"user-{secrets.token_hex(4)}", f"user-{secrets.token_hex(4)}"
    now = time.time()
    first, second, others, expired, deleted = (new_key() for _ in range(5))
    store.create(first, make_record({"n": 1}, user_id=user))
    store.create(second, make_record({"n": 2}, user_id=user))
    store.create(others, make_record({"n": 3}, user_id=other))
    store.create(expired, make_record({"n": 4}, user_id=user, now=now - 100,
                                      expires_at=now - 10))
    store.create(deleted, make_record({"n": 5}, user_id=user))
    store.delete(deleted)

    eventually(lambda: set(store.keys_for_user(user, time.time())) == {first, second},
               f"keys_for_user should list exactly the two live sessions of the user, "
               f"not {store.keys_for_user(user, time.time())}")
    assert store.keys_for_user(other, time.time()) == [others]
    assert store.keys_for_user(f"user-{secrets.token_hex(4)}", time.time()) == []


def test_updates_bind_and_unbind_a_user_only_when_asked(store: SessionStore) -> None:
    user = f"user-{secrets.token_hex(4)}"
    key = new_key()
    store.create(key, make_record({"n": 1}))
    assert store.keys_for_user(user, time.time()) == []

    assert store.update(key, make_delta(set_values={"n": 2}, user_id=user,
                                        user_id_changed=True))
    assert store.keys_for_user(user, time.time()) == [key]

    # Without user_id_changed the binding stays, whatever user_id says.
    assert store.update(key, make_delta(set_values={"n": 3}, user_id=None))
    loaded = store.load(key, time.time())
    assert loaded is not None and loaded.user_id == user
    assert store.keys_for_user(user, time.time()) == [key]

    assert store.update(key, make_delta(user_id=None, user_id_changed=True))
    loaded = store.load(key, time.time())
    assert loaded is not None and loaded.user_id is None
    assert store.keys_for_user(user, time.time()) == []


# -- concurrent requests of one session ------------------------------------------------
def test_two_interleaved_deltas_on_different_keys_both_survive(store: SessionStore) -> None:
    key = new_key()
    store.create(key, make_record({"a": 1, "b": 2}))
    # Two requests read the same state, then each saves its own change.
    assert store.load(key, time.time()) is not None
    assert store.load(key, time.time()) is not None

    assert store.update(key, make_delta(set_values={"x": "first"}, deleted={"a"}))
    assert store.update(key, make_delta(set_values={"y": "second"}))

    assert decoded(store.load(key, time.time())) == {"b": 2, "x": "first", "y": "second"}


def test_fifty_concurrent_deltas_to_one_record_lose_nothing(store: SessionStore) -> None:
    key = new_key()
    store.create(key, make_record({"base": 0}))
    start = threading.Barrier(THREADS, timeout=30)

    def save(i: int) -> bool:
        start.wait()
        return store.update(key, make_delta(set_values={f"k{i}": i}))

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(save, i) for i in range(THREADS)]]

    assert all(results)
    values = decoded(store.load(key, time.time()))
    lost = [i for i in range(THREADS) if values.get(f"k{i}") != i]
    assert lost == [], f"{len(lost)} of {THREADS} concurrent updates were lost"
    assert values["base"] == 0


def test_logout_racing_a_slow_read_only_request_stays_logged_out(store: SessionStore) -> None:
    key = new_key()
    store.create(key, make_record({"user": "alice"}))
    assert store.load(key, time.time()) is not None  # the slow reader started

    store.delete(key)  # meanwhile: logout
    now = time.time()
    store.touch(key, now, now + LIFETIME)  # the reader finishes with a refresh

    assert store.load(key, time.time()) is None


def test_a_write_after_logout_is_refused_and_resurrects_nothing(store: SessionStore) -> None:
    key = new_key()
    store.create(key, make_record({"user": "alice"}))
    assert store.load(key, time.time()) is not None  # the slow writer started

    store.delete(key)  # meanwhile: logout

    assert store.update(key, make_delta(set_values={"cart": [1]})) is False
    assert store.load(key, time.time()) is None


# -- through ServerSideSessions --------------------------------------------------------
def sessions_for(store: SessionStore) -> ServerSideSessions:
    return ServerSideSessions(store, policy=ExpiryPolicy(lifetime=3600), codec=CODEC,
                              key_prefix=random_prefix("backend"))


def run(backend: ServerSideSessions, token: str | None,
        view: Callable[[Session], object]) -> tuple[Session, CookieUpdate | None]:
    """One request: open the session for the cookie ``token``, run ``view``, save."""
    session = backend.open(token)
    view(session)
    return session, backend.save(session)


def issued_token(backend: ServerSideSessions, **values: Any) -> str:
    _, cookie = run(backend, None, lambda s: s.update(values))
    assert cookie is not None and cookie.value is not None
    return cookie.value


def test_regeneration_keeps_the_data_and_retires_the_old_id(store: SessionStore) -> None:
    backend = sessions_for(store)
    old = issued_token(backend, cart=[1, 2], user="alice")

    _, cookie = run(backend, old, lambda s: s.regenerate())

    assert cookie is not None and cookie.value not in (None, old)
    renewed, _ = run(backend, cookie.value, lambda s: None)
    assert dict(renewed) == {"cart": [1, 2], "user": "alice"}
    # Within SESSION_ROTATION_GRACE the old id gets no session (it never sees the new
    # one) and its response leaves the browser's new cookie alone.
    stale, stale_cookie = run(backend, old, lambda s: s.get("user"))
    assert stale.new and "user" not in stale
    assert stale_cookie is None
    assert store.load(backend.key(old), time.time()) is None


def test_a_write_in_flight_during_a_login_lands_in_the_new_session(store: SessionStore) -> None:
    """A slow request loaded the session before a login rotated its id: its change is
    saved under the new id, and its response leaves the new cookie alone."""
    backend = sessions_for(store)
    user = f"user-{secrets.token_hex(4)}"
    old = issued_token(backend, started=True)
    slow = backend.open(old)
    slow["cart"] = ["book"]  # loaded (and changed) before the login

    _, login_cookie = run(backend, old, lambda s: s.login(user))
    assert backend.save(slow) is None
    assert login_cookie is not None and login_cookie.value is not None

    now_seen, _ = run(backend, login_cookie.value, lambda s: None)
    assert dict(now_seen) == {"started": True, "cart": ["book"]}
    assert now_seen.user_id == user


def test_a_refresh_due_on_a_rotated_id_sends_no_cookie(store: SessionStore) -> None:
    backend = sessions_for(store)
    old = issued_token(backend, started=True)
    backend.policy = ExpiryPolicy(lifetime=3600, refresh_fraction=0)  # every read refreshes
    slow = backend.open(old)
    assert slow.get("started")
    _, cookie = run(backend, old, lambda s: s.regenerate())
    assert cookie is not None
    assert backend.save(slow) is None  # never re-sends the rotated id


def test_a_double_submitted_login_leaves_one_session_of_the_user(store: SessionStore) -> None:
    backend = sessions_for(store)
    user = f"user-{secrets.token_hex(4)}"
    old = issued_token(backend, started=True)
    first, second = backend.open(old), backend.open(old)
    for submit in (first, second):
        submit.get("started")  # both loaded before either saved
        submit.login(user)
        submit["name"] = user
    cookies = [backend.save(first), backend.save(second)]

    values = {cookie.value for cookie in cookies if cookie is not None}
    assert len(values) == 1, "both responses carry the one new session"
    assert len(store.keys_for_user(user, time.time())) == 1


def test_without_a_grace_window_a_regenerated_id_is_cleared_like_any_stale_one(
        store: SessionStore) -> None:
    backend = sessions_for(store)
    backend.rotation_grace = 0
    old = issued_token(backend, user="alice")
    _, cookie = run(backend, old, lambda s: s.regenerate())
    assert cookie is not None and cookie.value not in (None, old)
    stale, stale_cookie = run(backend, old, lambda s: s.get("user"))
    assert stale.new and stale_cookie is not None and stale_cookie.delete


def test_login_binds_the_user_to_a_new_id(store: SessionStore) -> None:
    backend = sessions_for(store)
    user = f"user-{secrets.token_hex(4)}"
    anonymous = issued_token(backend, cart=[1])

    _, cookie = run(backend, anonymous, lambda s: s.login(user))

    assert cookie is not None and cookie.value not in (None, anonymous)
    assert store.keys_for_user(user, time.time()) == [backend.key(cookie.value)]
    assert store.load(backend.key(anonymous), time.time()) is None
    assert run(backend, cookie.value, lambda s: None)[0]["cart"] == [1]


def test_session_ids_carry_at_least_128_random_bits(store: SessionStore) -> None:
    backend = sessions_for(store)
    tokens = {issued_token(backend, n=i) for i in range(20)}

    assert len(tokens) == 20
    for token in tokens:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) * 8 >= 128
    with pytest.raises(ConfigurationError, match="128 bits"):
        SessionIds(15)


def test_an_unknown_well_formed_id_gets_a_new_id_never_the_clients(store: SessionStore) -> None:
    backend = sessions_for(store)
    forged = SessionIds().new()  # the right shape, but never issued

    seen_new: list[bool] = []

    def view(session: Session) -> None:
        seen_new.append(session.new)
        session["user"] = "mallory"

    _, cookie = run(backend, forged, view)

    assert seen_new == [True]
    assert cookie is not None and cookie.value not in (None, forged)
    assert store.load(backend.key(forged), time.time()) is None
    assert run(backend, cookie.value, lambda s: None)[0]["user"] == "mallory"


@pytest.mark.parametrize("token", [
    "short", "../../etc/passwd", "A" * 42 + "!", "A" * 44, "%00" * 15, "é" * 43,
    "' OR 1=1 --" + "A" * 32,
])
def test_malformed_ids_never_reach_the_store(store: SessionStore, token: str) -> None:
    counting = CountingStore(store)
    backend = sessions_for(counting)

    session, cookie = run(backend, token, lambda s: s.get("user"))

    assert session.new
    assert counting.reads == 0 and counting.writes == 0
    assert cookie is not None and cookie.delete  # the bad cookie is not sent again


def test_the_store_key_is_the_sha256_of_the_id_behind_the_prefix(store: SessionStore) -> None:
    backend = sessions_for(store)
    token = issued_token(backend, user="alice")

    hashed = backend.key_prefix + hashlib.sha256(token.encode()).hexdigest()
    assert decoded(store.load(hashed, time.time())) == {"user": "alice"}
    assert store.load(backend.key_prefix + token, time.time()) is None


@contextmanager
def inspectable_store(kind: str) -> Iterator[SessionStore]:
    with importlib.import_module(f"providers.{kind}").store(CODEC) as made:
        yield made


def everything_kept(store: SessionStore) -> bytes:
    """All a store keeps - keys, values, metadata, file names - as one byte string."""
    if isinstance(store, MemoryStore):
        return repr(store._records).encode()
    if isinstance(store, SQLiteStore):
        files = sorted(store.path.parent.glob(store.path.name + "*"))  # db, -wal, -shm
        return b"".join(path.read_bytes() for path in files)
    if isinstance(store, FileSystemStore):
        paths = sorted(Path(store.directory).rglob("*"))
        return b"".join(p.name.encode() + (p.read_bytes() if p.is_file() else b"")
                        for p in paths)
    raise AssertionError(f"cannot inspect a {type(store).__name__}")


@pytest.mark.parametrize("kind", ["memory", "sqlite", "filesystem"])
def test_the_raw_session_id_appears_nowhere_in_the_store(kind: str) -> None:
    with inspectable_store(kind) as store:
        backend = sessions_for(store)
        token = issued_token(backend, user="alice", note="the id must not leak")
        _, cookie = run(backend, token, lambda s: s.__setitem__("visits", 2))
        assert cookie is not None  # an update was written too

        kept = everything_kept(store)

    assert storage_key(token).encode() in kept  # the inspection sees the records
    assert token.encode() not in kept
