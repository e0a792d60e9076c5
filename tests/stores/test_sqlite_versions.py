"""The embedded SQLite store when a request's load and save run on different threads.

An ASGI server loads a session on one thread (or task) and saves it on another, and
many requests interleave on one event loop. The row as the request read it travels with
the loaded record's ``version``, so the save stays one compare-and-swap ``UPDATE`` (no
write lock taken for a read-merge-write) whatever thread it runs on, and a write that
landed in between is merged, never lost.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.sqlite import SQLiteStore

CODEC = ValueCodec()
T = TypeVar("T")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    made = SQLiteStore(tmp_path / "sessions.sqlite3", codec=CODEC)
    try:
        yield made
    finally:
        made.close()


def new_key() -> str:
    return "session:" + storage_key(secrets.token_urlsafe(32))


def stored(store: SQLiteStore, values: dict[str, Any], user_id: str | None = None) -> str:
    key = new_key()
    now = time.time()
    store.create(key, SessionRecord({k: CODEC.encode(v) for k, v in values.items()},
                                    now, now, now + 600, True, user_id))
    return key


def delta(version: Any, **values: Any) -> SessionUpdate:
    now = time.time()
    return SessionUpdate({k: CODEC.encode(v) for k, v in values.items()}, set(), False,
                         now, now + 600, True, version=version)


def loaded_version(store: SQLiteStore, key: str) -> Any:
    loaded = store.load(key, time.time())
    assert loaded is not None
    return loaded.version


def values_of(store: SQLiteStore, key: str) -> dict[str, Any]:
    loaded = store.load(key, time.time())
    assert loaded is not None, f"{key} is gone"
    return {k: CODEC.decode(v) for k, v in loaded.values.items()}


def on_another_thread(action: Callable[[], T]) -> T:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(action).result()


def statements(store: SQLiteStore, action: Callable[[], T]) -> tuple[T, list[str]]:
    """What ``action`` returns, and the statements it sent on this thread's connection
    (their first words: a save is one UPDATE, or BEGIN IMMEDIATE ... COMMIT)."""
    sent: list[str] = []
    conn = store._connection()  # this thread's
    conn.set_trace_callback(lambda sql: sent.append(" ".join(sql.split()[:2])))
    try:
        return action(), sent
    finally:
        conn.set_trace_callback(None)


def test_a_save_on_another_thread_than_its_load_is_one_compare_and_swap(
        store: SQLiteStore) -> None:
    key = stored(store, {"a": 1})
    version = loaded_version(store, key)
    saved, sent = on_another_thread(
        lambda: statements(store, lambda: store.update(key, delta(version, b=2))))
    assert saved
    assert sent == ["UPDATE sessions"]  # no write lock held for a read-merge-write
    assert values_of(store, key) == {"a": 1, "b": 2}


def test_two_sessions_loaded_in_turn_on_one_thread_each_save_in_one_statement(
        store: SQLiteStore) -> None:
    first, second = stored(store, {"n": 1}), stored(store, {"n": 2})
    # Two requests on one event loop: both load, then both save.
    first_version = loaded_version(store, first)
    second_version = loaded_version(store, second)

    def save_both() -> None:
        assert store.update(first, delta(first_version, x="first"))
        assert store.update(second, delta(second_version, x="second"))

    _, sent = statements(store, save_both)
    assert sent == ["UPDATE sessions", "UPDATE sessions"]
    assert values_of(store, first) == {"n": 1, "x": "first"}
    assert values_of(store, second) == {"n": 2, "x": "second"}


def test_a_write_landing_between_load_and_a_save_on_another_thread_is_kept(
        store: SQLiteStore) -> None:
    key = stored(store, {"a": 1}, user_id="alice")
    slow = loaded_version(store, key)  # a slow request loads ...
    quick = loaded_version(store, key)  # ... a quick one loads and saves meanwhile
    assert on_another_thread(lambda: store.update(key, delta(quick, b=2)))

    saved, sent = on_another_thread(
        lambda: statements(store, lambda: store.update(key, delta(slow, c=3))))
    # The slow request's row changed since it read it: its compare-and-swap matches
    # nothing, so it reads, merges and writes under the write lock.
    assert saved
    assert sent == ["UPDATE sessions", "BEGIN IMMEDIATE", "SELECT data,",
                    "UPDATE sessions", "COMMIT"]
    assert values_of(store, key) == {"a": 1, "b": 2, "c": 3}
    assert store.keys_for_user("alice", time.time()) == [key]


def test_a_version_of_another_key_is_not_used(store: SQLiteStore) -> None:
    loaded, other = stored(store, {"a": 1}), stored(store, {"b": 2})
    version = loaded_version(store, loaded)
    # As after an id rotation: the delta goes to another key, read under the lock.
    saved, sent = statements(store, lambda: store.update(other, delta(version, c=3)))
    assert saved
    assert sent[0] == "BEGIN IMMEDIATE"
    assert values_of(store, other) == {"b": 2, "c": 3}
    assert values_of(store, loaded) == {"a": 1}


def test_a_save_with_no_version_still_merges_and_a_gone_row_stays_gone(
        store: SQLiteStore) -> None:
    key = stored(store, {"a": 1})
    assert store.update(key, delta(None, b=2))
    assert values_of(store, key) == {"a": 1, "b": 2}

    version = loaded_version(store, key)
    store.delete(key)  # a logout while the request ran
    assert on_another_thread(lambda: store.update(key, delta(version, c=3))) is False
    assert store.load(key, time.time()) is None


def bound(version: Any, user_id: str | None, **values: Any) -> SessionUpdate:
    update = delta(version, **values)
    update.user_id, update.user_id_changed = user_id, True
    return update


def test_a_save_that_binds_rebinds_or_unbinds_the_user_keeps_the_user_index(
        store: SQLiteStore) -> None:
    key = stored(store, {"a": 1})
    now = time.time
    assert store.update(key, bound(loaded_version(store, key), "alice"))
    assert store.keys_for_user("alice", now()) == [key]
    # The same user again, and a save that does not touch the user: still listed.
    assert store.update(key, bound(loaded_version(store, key), "alice", b=2))
    assert store.update(key, delta(loaded_version(store, key), c=3))
    assert store.keys_for_user("alice", now()) == [key]
    # Under the write lock too (a version of another key: as after an id rotation).
    other = stored(store, {"z": 0})
    assert store.update(key, bound(loaded_version(store, other), "bob"))
    assert (store.keys_for_user("alice", now()), store.keys_for_user("bob", now())) == (
        [], [key])
    assert store.update(key, bound(loaded_version(store, other), "bob", d=4))
    assert store.keys_for_user("bob", now()) == [key]
    assert store.update(key, bound(loaded_version(store, key), None))
    assert store.keys_for_user("bob", now()) == []
    assert values_of(store, key) == {"a": 1, "b": 2, "c": 3, "d": 4}


def test_a_user_bound_meanwhile_fails_the_compare_and_swap_of_a_save_keeping_it(
        store: SQLiteStore) -> None:
    key = stored(store, {"a": 1})
    slow = loaded_version(store, key)
    assert store.update(key, bound(loaded_version(store, key), "alice"))
    # The slow save leaves the user as it read it (none): the row's user now differs,
    # so it is merged under the lock and the binding stays.
    saved, sent = statements(store, lambda: store.update(key, delta(slow, b=2)))
    assert saved and sent[1] == "BEGIN IMMEDIATE"
    assert store.keys_for_user("alice", time.time()) == [key]
    assert values_of(store, key) == {"a": 1, "b": 2}


def test_values_the_session_changes_after_its_load_are_not_what_its_save_merges_into(
        store: SQLiteStore) -> None:
    key = stored(store, {"a": 1, "b": 2})
    loaded = store.load(key, time.time())
    assert loaded is not None
    # The session layer works on record.values in place; only its delta is saved.
    loaded.values["a"] = CODEC.encode("changed in place")
    del loaded.values["b"]
    assert store.update(key, delta(loaded.version, c=3))
    assert values_of(store, key) == {"a": 1, "b": 2, "c": 3}
