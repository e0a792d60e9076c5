"""Session values come back as they were stored, through real requests, on every store.

Server-side stores keep every type Flask-Session 0.8 stores in its default MessagePack
format - dict keys of any type (a cart keyed by product id), sets, frozensets, dates,
times, timedeltas, Decimals, nested in any way - and keep them as they were where
Flask-Session hands back something else (docs/compatibility.md, "Departures from
Flask-Session"). Cookie sessions are Flask's: each value comes back exactly as Flask's own
cookie session gives it back, or fails the request where Flask's fails. In-place changes
of these values are saved, and reading them saves nothing.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from conftest import COOKIE_KINDS, STORE_KINDS, provider
from counting import count_store_calls
from flask import Flask, request, session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import Markup
from providers._shared import random_prefix
from providers.redis import delete_prefixed, machine_client

MakeApp = Callable[..., Flask]
MISSING = "<missing>"
IST = timezone(timedelta(hours=5, minutes=30))


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same types all the way down, dict keys and set items included
    (1, 1.0 and True differ here; so do Decimal("1.0") and Decimal("1.00"))."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        keys_b = {k: k for k in b}
        return len(a) == len(b) and all(
            k in keys_b and same(k, keys_b[k]) and same(v, b[k]) for k, v in a.items())
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, datetime | time):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


# -- the app: one view stores a value, another reads it ---------------------------------
@dataclass
class Box:
    """Hands values to the views and back (the test client runs them in this process)."""

    value: Any = None
    read: Any = MISSING
    carts: list[Any] = field(default_factory=list)


def add_views(app: Flask, box: Box) -> Flask:
    @app.post("/store")
    def store() -> str:
        session.permanent = True  # as the cookie kinds under test are (Flask's default: not)
        session["v"] = box.value
        return "stored"

    @app.get("/read")
    def read() -> str:
        box.read = session.get("v", MISSING)
        return "read"

    @app.post("/cart/<int:product_id>")
    def add_to_cart(product_id: int) -> str:
        session.permanent = True
        cart = session.setdefault("cart", {})
        cart[product_id] = cart.get(product_id, 0) + 1
        if request.args.get("flag"):
            session.modified = True  # what Flask-Session needs after an in-place change
        box.carts.append(dict(cart))
        return "added"

    @app.get("/cart")
    def show_cart() -> str:
        box.carts.append(session.get("cart"))
        return "cart"

    return app


def flask_cookie_app() -> Flask:
    """Flask's own cookie session, the reference for the cookie kinds."""
    app = Flask("flask_cookie_reference")
    app.config.update(SECRET_KEY=secrets.token_hex(16), PROPAGATE_EXCEPTIONS=False)
    return app


def round_trip(app: Flask, box: Box, value: Any) -> tuple[int, Any]:
    """What the next request reads after one stored ``value``, and the storing status."""
    client = app.test_client()
    box.value, box.read = value, MISSING
    status = client.post("/store").status_code
    assert client.get("/read").status_code == 200
    return status, box.read


@dataclass
class Apps:
    kind: str
    app: Flask
    box: Box
    #: cookie kinds: the same views on Flask's own cookie session
    reference: tuple[Flask, Box] | None

    @property
    def fmt(self) -> str:
        return str(self.app.config.get("SESSION_SERIALIZATION_FORMAT", "msgpack"))


@pytest.fixture
def apps(make_app: MakeApp, app_config: dict[str, Any], app_kind: str) -> Apps:
    box = Box()
    # Users see a failing request as a 500, not as an exception in the test client.
    app = add_views(make_app(app_config, PROPAGATE_EXCEPTIONS=False), box)
    reference = None
    if app_kind in COOKIE_KINDS:
        reference_box = Box()
        reference = (add_views(flask_cookie_app(), reference_box), reference_box)
    return Apps(app_kind, app, box, reference)


def check_round_trip(apps: Apps, value: Any) -> None:
    status, read = round_trip(apps.app, apps.box, value)
    if apps.reference is None:
        assert status == 200
        assert same(read, value), (read, value)
        assert read is not value or not isinstance(value, list | dict | set)  # stored
    else:
        expected_status, expected = round_trip(*apps.reference, value)
        assert status == expected_status
        assert same(read, expected), (read, expected)


# -- every supported type, nested in every way -------------------------------------------
TIMEZONES = st.sampled_from([None, timezone.utc, IST])
MOMENTS = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                       timezones=TIMEZONES)
DAYS = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 1, 1))
#: one-key dicts spelled like a tag, which must stay dicts
TAG_NAMES = [" t", " di", " b", " m", " u", " d", " dk", " s", " fs", " da", " ti", " td",
             " dc"]


def session_values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    # dict keys and set items (no NaN: it equals nothing, so no key or item can be found)
    key_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                   | floats.filter(lambda f: f == f) | st.text(max_size=6)
                   | st.binary(max_size=6) | st.uuids() | MOMENTS | DAYS
                   | st.times(timezones=TIMEZONES) | st.timedeltas()
                   | st.decimals(allow_nan=False))
    hashables = st.recursive(
        key_scalars,
        lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
        max_leaves=4,
    )
    scalars = key_scalars | floats | st.decimals() | st.text(max_size=6).map(Markup)
    return st.recursive(
        scalars,
        lambda inner: (st.lists(inner, max_size=3)
                       | st.lists(inner, max_size=3).map(tuple)
                       | st.dictionaries(st.text(max_size=4), inner, max_size=3)
                       | st.dictionaries(hashables, inner, max_size=3)
                       | st.sets(hashables, max_size=3)
                       | st.frozensets(hashables, max_size=3)
                       | st.dictionaries(st.sampled_from(TAG_NAMES), inner, min_size=1,
                                         max_size=1)),
        max_leaves=10,
    )


VALUES = {
    # MessagePack and Flask's cookie JSON keep inf and nan; the JSON format refuses them.
    "msgpack": session_values(st.floats()),
    "json": session_values(st.floats(allow_nan=False, allow_infinity=False)),
}


def test_property_values_of_every_supported_type_round_trip(apps: Apps) -> None:
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow],
              database=None)
    @given(VALUES[apps.fmt])
    def round_trips(value: Any) -> None:
        check_round_trip(apps, value)

    round_trips()


# Each type on its own, so a failure names the type.
EXAMPLES: dict[str, Any] = {
    "int keys": {5: 1, 7: 2},
    "float, bool and None keys": {1.5: "a", True: "b", None: "c"},
    "int and str keys that look alike": {5: "int", "5": "str"},
    "tuple keys": {(1, "a"): 1, (): 2},
    "frozenset, bytes, date and UUID keys": {frozenset({1}): 1, b"k": 2,
                                            date(2024, 1, 2): 3, UUID(int=1): 4},
    "set": {3, 1, 2},
    "set of mixed items": {1, "a", (1, 2), None, 2.5, b"x", frozenset({"f"})},
    "empty set": set(),
    "frozenset": frozenset({"a", "b"}),
    "date": date(2024, 2, 29),
    "time": time(13, 14, 15, 123456),
    "time with an offset": time(13, 14, tzinfo=IST),
    "timedelta": timedelta(days=-3, seconds=5, microseconds=7),
    "Decimal": Decimal("1.10"),
    "Decimal infinity": Decimal("-Infinity"),
    "Decimal NaN": Decimal("NaN"),
    "nested": {1: {2: [{3}, (4, date(2020, 1, 1))]}, "when": {date(2024, 1, 1): timedelta(1)}},
    "tag-like dicts": [{" s": [1]}, {" dk": [1, 2]}, {" da": "2024-01-01"}],
}


@pytest.mark.parametrize("value", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_each_type_round_trips_on_every_store(apps: Apps, value: Any) -> None:
    check_round_trip(apps, value)


# -- the cart of the issue: keyed by product id ------------------------------------------
@pytest.mark.parametrize("flag", [True, False], ids=["session.modified set", "in place only"])
def test_a_cart_keyed_by_product_id_counts_up(apps: Apps, flag: bool) -> None:
    def shop(app: Flask, box: Box) -> list[tuple[int, Any]]:
        client = app.test_client()
        seen = []
        for product in (5, 5, 5, 7):
            status = client.post(f"/cart/{product}" + ("?flag=1" if flag else "")).status_code
            seen.append((status, box.carts[-1]))
        client.get("/cart")
        seen.append((200, box.carts[-1]))
        return seen

    seen = shop(apps.app, apps.box)

    if apps.reference is None:  # as on Flask-Session: {5: 1} -> {5: 2} -> {5: 3}
        assert same(seen, [(200, {5: 1}), (200, {5: 2}), (200, {5: 3}), (200, {5: 3, 7: 1}),
                           (200, {5: 3, 7: 1})])
    else:  # Flask's cookie: the keys come back as text, and "5" and 5 fail its JSON
        assert same(seen, shop(*apps.reference))
        assert same(seen[1], (500, {"5": 1, 5: 1}))


# -- in-place changes are saved; reads save nothing --------------------------------------
@pytest.fixture(params=STORE_KINDS)
def server_app(request: pytest.FixtureRequest, make_app: MakeApp,
               tmp_path: Path) -> Iterator[Flask]:
    with provider(str(request.param)).flask_config(tmp_path) as config:
        yield make_app(config, PROPAGATE_EXCEPTIONS=False)


def history_dependent_set() -> set[str]:
    """A set whose iteration order differs from a fresh set of the same items: removals
    leave its table large (a set decoded from the store is built small)."""
    items = {f"item-{n}" for n in range(200)}
    for n in range(200):
        if n % 37:
            items.discard(f"item-{n}")
    return items


def add_change_views(app: Flask) -> tuple[Flask, dict[str, Any]]:
    seen: dict[str, Any] = {}

    @app.post("/fill")
    def fill() -> str:
        session["tags"] = history_dependent_set()
        session["mixed"] = frozenset({1, "a", (2, "b"), 2.5, None, frozenset({3})})
        session["cart"] = {5: {"red"}, 7: {"blue", "green"}}
        session["dates"] = {date(2024, 1, 1): timedelta(days=1), "total": Decimal("9.90")}
        return "filled"

    @app.get("/read")
    def read() -> str:
        seen.update({key: session[key] for key in ("tags", "mixed", "cart", "dates")})
        seen["modified"] = session.modified
        return "read"

    @app.post("/change/<what>")
    def change(what: str) -> str:
        if what == "set":
            session["tags"].add("new")
        elif what == "set swap":  # same size, one item replaced
            session["tags"].discard("item-0")
            session["tags"].add("item-1")
        elif what == "set in keyed dict":
            session["cart"][5].add("yellow")
        elif what == "keyed dict":
            session["dates"][date(2024, 1, 1)] += timedelta(hours=1)
        return "changed"

    return app, seen


def test_reading_sets_and_keyed_dicts_saves_nothing(server_app: Flask) -> None:
    app, seen = add_change_views(server_app)
    client = app.test_client()
    assert client.post("/fill").status_code == 200
    calls = count_store_calls(app)

    assert client.get("/read").status_code == 200

    assert seen["modified"] is False
    assert calls.writes == 0, calls.calls
    assert seen["tags"] == history_dependent_set()


@pytest.mark.parametrize("what", ["set", "set swap", "set in keyed dict", "keyed dict"])
def test_in_place_changes_of_sets_and_keyed_dicts_are_saved(server_app: Flask,
                                                            what: str) -> None:
    app, seen = add_change_views(server_app)
    client = app.test_client()
    assert client.post("/fill").status_code == 200
    client.get("/read")
    expected = {key: seen[key] for key in ("tags", "mixed", "cart", "dates")}
    {"set": lambda: expected["tags"].add("new"),
     "set swap": lambda: (expected["tags"].discard("item-0"), expected["tags"].add("item-1")),
     "set in keyed dict": lambda: expected["cart"][5].add("yellow"),
     "keyed dict": lambda: expected["dates"].update(
         {date(2024, 1, 1): timedelta(days=1, hours=1)})}[what]()

    assert client.post(f"/change/{what}").status_code == 200
    client.get("/read")

    for key, value in expected.items():
        assert same(seen[key], value), key


# -- against Flask-Session 0.8 itself, on the machine's Redis ----------------------------
#: what Flask-Session 0.8 hands back where it does not keep the type; sessionkeeper keeps
#: the value as stored (docs/compatibility.md, "Departures from Flask-Session")
FLASK_SESSION_GIVES_BACK: dict[str, Any] = {
    "set": [1, 2, 3],
    "frozenset": [1, 2],
    "tuple": [1, 2],
    "date": "2024-01-02",
    "time": "01:02:03.000004",
    "timedelta": "P1DT5.000007S",
    "Decimal": "1.10",
    "UUID": "00000000-0000-0000-0000-000000000005",
    "naive datetime": "2024-01-02T03:04:05.000006",
    "datetime with an offset": datetime(2024, 1, 2, 1, 4, 5, 6, tzinfo=timezone.utc),
    "nested": {1: {2: [[3], [4, "2020-01-01"]]}},
}
COMPARED: dict[str, Any] = {
    "int keys": {5: 1, 7: 2},
    "float key": {1.5: 1},
    "bool key": {True: 1},
    "None key": {None: 1},
    "tuple key": {(1, 2): 3},
    "int and str keys that look alike": {1: "a", "1": "b"},
    "bytes": b"\x00a",
    "aware UTC datetime": datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc),
    "set": {3, 1, 2},
    "frozenset": frozenset({1, 2}),
    "tuple": (1, 2),
    "date": date(2024, 1, 2),
    "time": time(1, 2, 3, 4),
    "timedelta": timedelta(days=1, seconds=5, microseconds=7),
    "Decimal": Decimal("1.10"),
    "UUID": UUID(int=5),
    "naive datetime": datetime(2024, 1, 2, 3, 4, 5, 6),
    "datetime with an offset": datetime(2024, 1, 2, 3, 4, 5, 6,
                                        tzinfo=timezone(timedelta(hours=2))),
    "nested": {1: {2: [{3}, (4, date(2020, 1, 1))]}},
}


@pytest.fixture
def flask_session_app() -> Iterator[tuple[Flask, Box]]:
    import flask_session

    client = machine_client()
    prefix = random_prefix("flask-session")
    app = Flask("on_flask_session")
    app.config.update(SECRET_KEY="s", SESSION_TYPE="redis", SESSION_REDIS=client,
                      SESSION_KEY_PREFIX=prefix, PROPAGATE_EXCEPTIONS=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        flask_session.Session(app)
    box = Box()
    try:
        yield add_views(app, box), box
    finally:
        delete_prefixed(client, prefix)
        client.close()


@pytest.fixture
def redis_app(make_app: MakeApp, tmp_path: Path) -> Iterator[tuple[Flask, Box]]:
    with provider("redis").flask_config(tmp_path) as config:
        box = Box()
        yield add_views(make_app(config, PROPAGATE_EXCEPTIONS=False), box), box


@pytest.mark.parametrize("name", COMPARED)
def test_values_come_back_as_on_flask_session_or_keep_their_type(
    flask_session_app: tuple[Flask, Box], redis_app: tuple[Flask, Box], name: str,
) -> None:
    value = COMPARED[name]

    theirs = round_trip(*flask_session_app, value)
    ours = round_trip(*redis_app, value)

    assert ours[0] == theirs[0] == 200
    if name in FLASK_SESSION_GIVES_BACK:
        assert same(theirs[1], FLASK_SESSION_GIVES_BACK[name]), theirs[1]
        assert same(ours[1], value)
    else:
        assert same(theirs[1], value), theirs[1]  # Flask-Session keeps it: so do we
        assert same(ours[1], theirs[1])


def test_markup_that_flask_session_refuses_is_kept(
    flask_session_app: tuple[Flask, Box], redis_app: tuple[Flask, Box],
) -> None:
    value = Markup("<b>safe</b>")

    assert round_trip(*flask_session_app, value) == (500, MISSING)
    assert round_trip(*redis_app, value) == (200, value)


def test_the_cart_counts_as_on_flask_session(
    flask_session_app: tuple[Flask, Box], redis_app: tuple[Flask, Box],
) -> None:
    def counts(app: Flask, box: Box) -> list[Any]:
        client = app.test_client()
        for _ in range(3):
            assert client.post("/cart/5?flag=1").status_code == 200
        return box.carts

    theirs = counts(*flask_session_app)

    assert same(theirs, [{5: 1}, {5: 2}, {5: 3}])
    assert same(counts(*redis_app), theirs)

