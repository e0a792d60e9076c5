"""The session object apps use: a mapping that loads lazily and knows what changed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from sessionkeeper.errors import UnserializableValue
from sessionkeeper.model import DEVICE_KEY, LoadedState, Session
from sessionkeeper.serialization import MAX_DEPTH, ValueCodec

CODEC = ValueCodec()
NOW = 1_700_000_000.0


class Loader:
    """Hands a session its stored state and counts how often it was asked."""

    def __init__(self, values: dict[str, Any] | None = None, *, new: bool = False,
                 permanent: bool = True) -> None:
        self.calls = 0
        self.values = values or {}
        self.new = new
        self.permanent = permanent

    def __call__(self) -> LoadedState:
        self.calls += 1
        return LoadedState(
            sid=None if self.new else "the-id", new=self.new, permanent=self.permanent,
            created_at=NOW - 100, accessed_at=NOW - 10, expires_at=NOW + 3600,
            user_id=None, raw={k: CODEC.encode(v) for k, v in self.values.items()},
            had_cookie=not self.new,
        )


def stored(**values: Any) -> tuple[Session, Loader]:
    loader = Loader(values)
    return Session(loader, CODEC), loader


def changed_keys(session: Session) -> tuple[set[str], set[str], bool]:
    changes = session.changes()
    return set(changes.set_values), changes.deleted_keys, changes.replace


def saved_values(session: Session) -> dict[str, Any]:
    """What a store would hold after saving (the stored values merged with the delta)."""
    return {k: CODEC.decode(v) for k, v in session.encoded_values().items()}


# -- the mapping -------------------------------------------------------------------------
def test_set_get_and_membership() -> None:
    session, _ = stored(user="alice")

    session["cart"] = [1]

    assert session["user"] == "alice"
    assert session["cart"] == [1]
    assert session.get("missing") is None
    assert session.get("missing", 7) == 7
    assert "user" in session and "cart" in session and "missing" not in session
    with pytest.raises(KeyError):
        session["missing"]


def test_len_iteration_and_dict_conversion() -> None:
    session, _ = stored(a=1, b=2)
    session["c"] = 3

    assert len(session) == 3
    assert sorted(session) == ["a", "b", "c"]
    assert dict(session) == {"a": 1, "b": 2, "c": 3}
    assert sorted(session.items()) == [("a", 1), ("b", 2), ("c", 3)]
    assert bool(session)


def test_pop_del_and_clear() -> None:
    session, _ = stored(a=1, b=2, c=3)

    assert session.pop("a") == 1
    assert session.pop("a", "gone") == "gone"
    del session["b"]
    with pytest.raises(KeyError):
        del session["b"]
    with pytest.raises(KeyError):
        session.pop("b")
    assert dict(session) == {"c": 3}

    session.clear()

    assert len(session) == 0 and not session
    assert session.cleared


def test_setdefault_and_update() -> None:
    session, _ = stored(a=1)

    assert session.setdefault("a", 99) == 1
    assert session.setdefault("b", [2]) == [2]
    session.update({"c": 3}, d=4)

    assert dict(session) == {"a": 1, "b": [2], "c": 3, "d": 4}
    assert changed_keys(session) == ({"b", "c", "d"}, set(), False)


def test_an_empty_new_session_is_falsy() -> None:
    session = Session(Loader(new=True), CODEC)

    assert not session
    assert len(session) == 0
    assert list(session) == []


# -- change tracking ---------------------------------------------------------------------
def test_changes_list_exactly_the_keys_set_and_deleted() -> None:
    session, _ = stored(keep=1, change=2, drop=3)

    session["change"] = 20
    session["added"] = "new"
    del session["drop"]

    sets, deletes, replace = changed_keys(session)
    assert sets == {"change", "added"}
    assert deletes == {"drop"}
    assert replace is False
    assert session.modified
    assert saved_values(session) == {"keep": 1, "change": 20, "added": "new"}


def test_setting_a_deleted_key_again_is_a_set_not_a_delete() -> None:
    session, _ = stored(a=1)

    del session["a"]
    session["a"] = 2

    assert changed_keys(session) == ({"a"}, set(), False)


def test_reading_without_mutating_is_no_change() -> None:
    session, _ = stored(user="alice", cart=[1, 2], profile={"tags": ["x"]}, when=(1, 2))

    _ = session["user"], session["cart"], session["profile"]["tags"], session.get("when")
    _ = dict(session), len(session), "user" in session

    assert not session.changes()
    assert not session.modified


@pytest.mark.parametrize(("mutate", "key"), [
    (lambda s: s["cart"].append(3), "cart"),
    (lambda s: s["cart"].pop(), "cart"),
    (lambda s: s["profile"]["tags"].append("y"), "profile"),
    (lambda s: s["profile"].update(name="bob"), "profile"),
    (lambda s: s["profile"].pop("tags"), "profile"),
], ids=["append", "list-pop", "nested-append", "dict-update", "dict-pop"])
def test_in_place_changes_of_nested_values_are_detected(
    mutate: Callable[[Session], Any], key: str,
) -> None:
    session, _ = stored(cart=[1, 2], profile={"tags": ["x"]}, user="alice")

    mutate(session)  # and no `session.modified = True`

    assert changed_keys(session) == ({key}, set(), False)
    assert session.modified


def test_an_in_place_change_is_saved_with_its_new_value() -> None:
    session, _ = stored(cart=[1, 2], user="alice")

    session["cart"].append(3)

    changes = session.changes()
    assert {k: CODEC.decode(v) for k, v in changes.set_values.items()} == {"cart": [1, 2, 3]}


def test_a_change_undone_in_place_is_no_change() -> None:
    session, _ = stored(cart=[1, 2])

    session["cart"].append(3)
    session["cart"].pop()

    assert not session.changes()


def test_modified_true_forces_a_save_without_changes() -> None:
    session, _ = stored(user="alice")
    assert session["user"] == "alice"

    session.modified = True

    assert session.modified
    assert session.meta_changed
    assert not session.changes()  # nothing to write but the save itself


def test_clear_asks_to_replace_everything() -> None:
    session, _ = stored(a=1, b=2)

    session.clear()
    session["c"] = 3

    assert changed_keys(session) == ({"c"}, set(), True)
    assert saved_values(session) == {"c": 3}


def test_mark_saved_starts_tracking_afresh() -> None:
    session, _ = stored(cart=[1])
    session["cart"].append(2)
    session["x"] = 1
    session.modified = True

    session.mark_saved()

    assert not session.changes()  # a second save writes nothing ...
    assert session.modified  # ... and, as in Flask, the request still reports its change


@pytest.mark.parametrize("act", [
    lambda s: s.__setitem__("x", 1),
    lambda s: s.__delitem__("user"),
    lambda s: s["cart"].append(2),
    lambda s: s.clear(),
    lambda s: s.login("u1"),
    lambda s: s.logout(),
    lambda s: s.regenerate(),
    lambda s: setattr(s, "modified", True),
    lambda s: setattr(s, "permanent", False),
])
def test_needs_save_is_true_after_any_change(act: Callable[[Session], None]) -> None:
    session, _ = stored(user="alice", cart=[1])
    session.get("user")  # loaded: what a save asks about
    act(session)

    assert session.needs_save


def test_needs_save_is_false_for_a_session_only_read() -> None:
    session, _ = stored(user="alice", cart=[1])
    assert not session.needs_save  # not even loaded
    session.get("user"), list(session["cart"])

    assert not session.needs_save
    assert not session.modified


# -- lazy loading ------------------------------------------------------------------------
def test_nothing_is_loaded_until_the_session_is_used() -> None:
    session, loader = stored(user="alice")

    assert loader.calls == 0
    assert not session.loaded
    assert not session.modified  # asking does not load
    assert "not loaded" in repr(session)

    assert session.get("user") == "alice"
    _ = session["user"], len(session), session.permanent

    assert loader.calls == 1
    assert session.loaded


@pytest.mark.parametrize("first_use", [
    lambda s: s.get("x"),
    lambda s: s.__setitem__("x", 1),
    lambda s: "x" in s,
    lambda s: len(s),
    lambda s: list(s),
    lambda s: s.clear(),
    lambda s: s.new,
    lambda s: s.permanent,
], ids=["get", "set", "in", "len", "iter", "clear", "new", "permanent"])
def test_any_use_loads_exactly_once(first_use: Callable[[Session], Any]) -> None:
    session, loader = stored(user="alice")

    first_use(session)
    first_use(session)
    session.get("user")

    assert loader.calls == 1


def test_values_are_decoded_only_when_used() -> None:
    # A value that cannot be decoded matters only to a request that uses it.
    loader = Loader({"fine": 1})
    session = Session(loader, CODEC)
    session.state.raw["broken"] = b"\xc1 not msgpack"

    assert session["fine"] == 1
    assert len(session) == 2
    assert not session.destroyed


# -- metadata ----------------------------------------------------------------------------
def test_metadata_of_a_stored_session() -> None:
    session, _ = stored(a=1)

    assert session.new is False
    assert session.permanent is True
    assert session.created_at == NOW - 100
    assert session.accessed_at == NOW - 10
    assert session.expires_at == NOW + 3600
    assert session.sid == "the-id"


def test_metadata_of_a_new_session() -> None:
    session = Session(Loader(new=True, permanent=False), CODEC)

    assert session.new is True
    assert session.permanent is False
    assert session.sid is None
    assert session.created_at <= time.time()


def test_changing_permanent_is_a_change_and_setting_it_again_is_not() -> None:
    session, _ = stored(a=1)

    session.permanent = True  # already permanent
    assert not session.modified

    session.permanent = False
    assert session.permanent is False
    assert session.modified and session.meta_changed
    assert not session.changes()  # no value changed, only metadata


def test_login_binds_the_user_and_asks_for_a_new_id() -> None:
    session, _ = stored(cart=[1])

    session.login(42)

    assert session.user_id == "42"
    assert session.user_changed and session.regenerate_requested
    assert dict(session) == {"cart": [1]}


def test_logout_empties_and_destroys_the_session() -> None:
    session, _ = stored(user="alice")

    session.logout()

    assert session.destroyed and not session


# -- a stored value that no longer decodes -----------------------------------------------
#: each way a view can reach a value, and what it sees once the value does not decode
DAMAGED_VALUE_READS: dict[str, tuple[Callable[[Session], Any], Any]] = {
    "get": (lambda s: s.get("cart"), None),
    "get with default": (lambda s: s.get("cart", []), []),
    "in": (lambda s: "cart" in s, False),
    "dict()": (lambda s: dict(s), {}),
    "items()": (lambda s: sorted(s.items()), []),
    "iteration": (lambda s: [s[k] for k in s], []),
    "pop with default": (lambda s: s.pop("cart", "gone"), "gone"),
    "setdefault": (lambda s: s.setdefault("cart", ["new"]), ["new"]),
    # the pattern itself is under test (Flask's get_flashed_messages uses it)
    "in, then []": (lambda s: s["cart"] if "cart" in s else "absent", "absent"),  # noqa: SIM401
}


def damaged(**values: Any) -> Session:
    """A stored session with ``values`` and a "cart" whose bytes no longer decode."""
    session, _ = stored(**values)
    session.state.raw["cart"] = b"\xc1 not msgpack"
    return session


@pytest.mark.parametrize("read", DAMAGED_VALUE_READS.values(), ids=DAMAGED_VALUE_READS.keys())
def test_a_value_that_no_longer_decodes_ends_the_session_like_a_bad_cookie(
    read: tuple[Callable[[Session], Any], Any], caplog: pytest.LogCaptureFixture
) -> None:
    use, seen = read
    session = damaged(user="alice", theme="dark")
    session.state.user_id = "alice"

    with caplog.at_level(logging.INFO, logger="sessionkeeper"):
        assert use(session) == seen

    # A fresh session from here on; the backend deletes the record at save time.
    assert session.destroyed
    assert session.user_id is None
    assert "user" not in session and session.get("theme") is None
    assert [r.levelname for r in caplog.records if r.name == "sessionkeeper"] == ["INFO"]
    assert "'cart' cannot be decoded" in caplog.text and "fresh" in caplog.text


def test_reading_a_value_that_no_longer_decodes_finds_nothing() -> None:
    session = damaged(user="alice")

    with pytest.raises(KeyError):
        session["cart"]
    with pytest.raises(KeyError):
        session.pop("cart")

    assert session.destroyed and not session


def test_device_details_that_no_longer_decode_end_the_session_too() -> None:
    session, _ = stored(user="alice")
    session.state.raw[DEVICE_KEY] = b"\xc1"

    assert session.device is None
    assert session.destroyed and not session


def test_writing_after_a_value_failed_to_decode_starts_a_new_session() -> None:
    session = damaged(user="alice")
    assert session.get("cart") is None

    session["cart"] = ["apple"]

    # Written to after the end of the old session: only the new values are stored.
    assert session.destroyed
    assert saved_values(session) == {"cart": ["apple"]}


def test_a_damaged_value_never_read_changes_nothing() -> None:
    session = damaged(user="alice")

    session["theme"] = "light"

    assert session["user"] == "alice"
    assert not session.destroyed
    assert changed_keys(session) == ({"theme"}, set(), False)


# -- a value that cannot be stored fails the request that stores it, naming its key -----
def test_a_value_set_that_cannot_be_stored_names_its_key() -> None:
    session, _ = stored(user="alice")

    session["tags"] = 1 + 2j

    for save in (session.changes, session.encoded_values):
        with pytest.raises(UnserializableValue, match=r"session\['tags'\] cannot be stored"):
            save()


def test_a_value_changed_in_place_into_one_that_cannot_be_stored_names_its_key() -> None:
    session, _ = stored(cart=[1])

    session["cart"].append(object())

    with pytest.raises(UnserializableValue, match=r"session\['cart'\].*cannot store a object"):
        session.changes()


def test_a_value_nested_too_deep_names_its_key() -> None:
    session, _ = stored(user="alice")
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]

    session["deep"] = deep

    with pytest.raises(UnserializableValue, match=rf"session\['deep'\].*{MAX_DEPTH}"):
        session.changes()
