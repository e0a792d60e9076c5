"""Session values to bytes and back: Flask's value types, Flask's cookie format, no pickle."""

from __future__ import annotations

import ast
import math
import pickle
import sqlite3
from collections import namedtuple
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from flask import Flask, session
from flask.json.tag import TaggedJSONSerializer
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from sessionkeeper.errors import UnserializableValue
from sessionkeeper.serialization import FlaskCookieSerializer, ValueCodec

FORMATS = ["json", "msgpack"]
SRC = Path(__file__).resolve().parents[1] / "src" / "sessionkeeper"
IST = timezone(timedelta(hours=5, minutes=30))


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same types all the way down (1, 1.0 and True differ here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, float) and a == 0:
        return math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# -- every type Flask's session keeps ----------------------------------------------------
VALUES: dict[str, Any] = {
    "str": "hello",
    "empty str": "",
    "unicode str": "ünïcödé 😀 中文 مرحبا",
    "int": 42,
    "negative int": -7,
    "64-bit int": 2**63 - 1,
    "float": 3.14159,
    "negative zero": -0.0,
    "true": True,
    "false": False,
    "none": None,
    "list": [1, "two", 3.0, None],
    "empty list": [],
    "dict": {"a": 1, "b": [2, 3]},
    "empty dict": {},
    "tuple": (1, "two", None),
    "empty tuple": (),
    "tuple in list": [(1, 2), (3,)],
    "bytes": b"\x00\x01binary\xff",
    "empty bytes": b"",
    "naive datetime": datetime(2024, 2, 29, 13, 14, 15, 123456),
    "utc datetime": datetime(2024, 2, 29, 13, 14, 15, 654321, tzinfo=timezone.utc),
    "offset datetime": datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=IST),
    "uuid": UUID("12345678-1234-5678-1234-567812345678"),
    "markup": Markup("<b>bold</b> &amp; safe"),
    "nested": {"user": {"id": 1, "roles": ("admin", "dev"), "avatar": b"\x89PNG",
                        "seen": datetime(2024, 1, 1, tzinfo=timezone.utc),
                        "items": [{"id": UUID(int=1), "label": Markup("<i>x</i>")}]}},
    "tuple-tag-like dict": {" t": [1, 2]},
    "dict-tag-like dict": {" di": {"x": 1}},
    "bytes-tag-like dict": {" b": "aGk="},
    "markup-tag-like dict": {" m": "<b>"},
    "uuid-tag-like dict": {" u": "12345678123456781234567812345678"},
    "datetime-tag-like dict": {" d": "2024-01-01T00:00:00"},
    "tag-like key among others": {" t": [1], "other": 2},
    "nested tag-like dict": [{" di": {" t__": 1}}],
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_flask_session_types_round_trip(fmt: str, value: Any) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]

    assert same(codec.decode(codec.encode(value)), value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_json_format_keeps_integers_of_any_size_and_msgpack_refuses_them_clearly(
    fmt: str,
) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    huge = 2**80
    if fmt == "json":
        assert codec.decode(codec.encode(huge)) == huge
    else:
        with pytest.raises(UnserializableValue, match="64 bits"):
            codec.encode({"n": [huge]})


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_floats_keep_in_msgpack_and_are_refused_clearly_in_json(value: float) -> None:
    msgpack = ValueCodec("msgpack")
    assert same(msgpack.decode(msgpack.encode(value)), value)

    with pytest.raises(UnserializableValue, match="msgpack"):
        ValueCodec("json").encode({"score": [value]})  # never silently turned into null


class Level(IntEnum):
    HIGH = 2


class Color(str, Enum):
    RED = "red"


def test_subclasses_of_plain_types_are_kept_as_their_plain_type() -> None:
    point = namedtuple("point", "x y")
    codec = ValueCodec()

    assert same(codec.decode(codec.encode(point(1, 2))), (1, 2))
    assert same(codec.decode(codec.encode(Level.HIGH)), 2)
    assert same(codec.decode(codec.encode(Color.RED)), "red")
    # Non-string dict keys become the text JSON writes for them, as in Flask's session.
    assert same(codec.decode(codec.encode({1: "a", None: "b", 2.5: "c", False: "d"})),
                {"1": "a", "null": "b", "2.5": "c", "false": "d"})


# -- property: anything Flask's session keeps round-trips --------------------------------
def _values(ints: st.SearchStrategy[int], floats: st.SearchStrategy[float],
            datetimes: st.SearchStrategy[datetime]) -> st.SearchStrategy[Any]:
    scalars = (st.none() | st.booleans() | ints | floats | st.text() | st.binary()
               | st.uuids() | datetimes | st.text().map(Markup))
    return st.recursive(
        scalars,
        lambda inner: (st.lists(inner, max_size=4)
                       | st.lists(inner, max_size=4).map(tuple)
                       | st.dictionaries(st.text(), inner, max_size=4)
                       | st.dictionaries(st.sampled_from([" t", " di", " b", " m", " u", " d"]),
                                         inner, min_size=1, max_size=1)),
        max_leaves=12,
    )


PRECISE_DATETIMES = st.datetimes(timezones=st.sampled_from([None, timezone.utc, IST]))
SERVER_VALUES = {
    "json": _values(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    PRECISE_DATETIMES),
    "msgpack": _values(st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                       PRECISE_DATETIMES),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_property_server_side_values_round_trip(fmt: str) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]

    @settings(max_examples=150, deadline=None)
    @given(SERVER_VALUES[fmt])
    def round_trips(value: Any) -> None:
        assert same(codec.decode(codec.encode(value)), value)

    round_trips()


# -- the cookie format is Flask's, byte for byte -----------------------------------------
# Flask writes its session cookie inside an app context, where its JSON provider sorts
# keys and escapes non-ASCII; that is the output to match.
_flask_app = Flask("serialization_reference")
_flask = TaggedJSONSerializer()
_ours = FlaskCookieSerializer()
COOKIE_VALUES = _values(
    st.integers(), st.floats(),
    # Cookies keep datetimes to the second, in UTC, as HTTP dates (both sides agree).
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                 timezones=st.sampled_from([None, timezone.utc, IST])),
)


def flask_dumps(value: Any) -> str:
    with _flask_app.app_context():
        return _flask.dumps(value)


@settings(max_examples=300, deadline=None)
@given(COOKIE_VALUES)
def test_property_cookie_payload_is_byte_identical_to_flask(value: Any) -> None:
    assert _ours.dumps(value).decode("ascii") == flask_dumps(value)


@settings(max_examples=300, deadline=None)
@given(COOKIE_VALUES)
def test_property_flask_cookie_payloads_read_back_like_flask_reads_them(value: Any) -> None:
    written = flask_dumps(value)

    assert same(_ours.loads(written), _flask.loads(written))
    assert same(_ours.loads(written.encode()), _flask.loads(written))


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_cookie_payload_of_each_flask_type_matches_flask(value: Any) -> None:
    written = flask_dumps(value)

    assert _ours.dumps(value).decode() == written
    assert same(_ours.loads(written), _flask.loads(written))


def test_cookie_datetimes_read_back_as_flask_reads_them() -> None:
    moment = datetime(2024, 2, 29, 13, 14, 15, 999999, tzinfo=IST)

    back = _ours.loads(_ours.dumps({"at": moment}))["at"]

    assert back == moment.replace(microsecond=0)
    assert back.utcoffset() == timedelta(0)  # an HTTP date is UTC, as in Flask


# -- unsupported values fail clearly -----------------------------------------------------
class Profile:
    def __init__(self) -> None:
        self.name = "alice"


UNSUPPORTED = {
    "set": {1, 2},
    "frozenset": frozenset({1}),
    "object": object(),
    "class instance": Profile(),
    "date": date(2024, 1, 1),
    "decimal": Decimal("1.5"),
    "complex": 1 + 2j,
    "function": len,
    "bytearray": bytearray(b"x"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_types_raise_a_clear_error(fmt: str, value: Any) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    name = type(value).__name__

    for wrapped in (value, [value], {"deep": {"er": (1, value)}}):
        with pytest.raises(UnserializableValue, match=rf"cannot store a {name};.* datetime"):
            codec.encode(wrapped)


@pytest.mark.parametrize("value", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_the_cookie_serializer_refuses_the_same_types(value: Any) -> None:
    with pytest.raises(UnserializableValue, match=type(value).__name__):
        _ours.dumps({"v": value})


@pytest.mark.parametrize("key", [(1, 2), frozenset(), b"bytes"], ids=["tuple", "frozenset",
                                                                    "bytes"])
def test_dict_keys_that_are_not_plain_scalars_raise_a_clear_error(key: Any) -> None:
    for encode in (ValueCodec("json").encode, ValueCodec("msgpack").encode, _ours.dumps):
        with pytest.raises(UnserializableValue, match="dict keys must be strings"):
            encode({"outer": {key: 1}})


def test_an_unserializable_value_is_a_type_error_for_code_that_expects_one() -> None:
    with pytest.raises(TypeError):
        ValueCodec().encode({1, 2})


# -- no pickle ---------------------------------------------------------------------------
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "jsonpickle",
                  "shelve", "marshal"}
# The opt-in reader for records Flask-Session pickled (``--allow-pickle``); it resolves
# only plain data types. Nothing else may touch pickle.
MIGRATION_READER = "legacy.py"


def _pickle_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif (isinstance(node, ast.ImportFrom) and node.module
              and node.module.split(".")[0] in PICKLE_MODULES):
            found.append(node.module)
    return found


def _unrestricted_pickle_calls(tree: ast.AST) -> list[str]:
    """``pickle.load(s)`` / ``pickle.Unpickler(...)``: unpickling any class there is."""
    calls = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in PICKLE_MODULES
                and node.func.attr in ("load", "loads", "Unpickler")):
            calls.append(f"{node.func.value.id}.{node.func.attr} (line {node.lineno})")
    return calls


def test_no_module_unpickles_and_only_the_migration_reader_imports_pickle() -> None:
    sources = sorted(SRC.rglob("*.py"))
    assert len(sources) > 10

    importers = {}
    for path in sources:
        tree = ast.parse(path.read_text(), filename=str(path))
        assert _unrestricted_pickle_calls(tree) == [], path
        if _pickle_imports(tree):
            importers[path.relative_to(SRC).as_posix()] = tree

    assert set(importers) <= {MIGRATION_READER}
    for tree in importers.values():
        restricted = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                      and node.name == "find_class"]
        assert restricted, "a pickle reader must restrict the classes it resolves"


UNPICKLED: list[str] = []


def _record_unpickling(marker: str) -> str:
    UNPICKLED.append(marker)
    return marker


class Exploit:
    """Unpickling this runs code (here: harmlessly records that it ran)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record_unpickling, ("unpickled!",)


PICKLED = pickle.dumps({"user": "admin", "payload": Exploit()})


def overwrite_sqlite_record(app: Flask) -> None:
    store = app.extensions["sessionkeeper"].backend.store
    with sqlite3.connect(store.path) as db:
        assert db.execute(f"UPDATE {store.table} SET data = ?", (PICKLED,)).rowcount == 1


def overwrite_session_file(app: Flask) -> None:
    store = app.extensions["sessionkeeper"].backend.store
    (path,) = Path(store.directory).glob("*.session")
    path.write_bytes(PICKLED)


@pytest.mark.parametrize(("kind", "overwrite"), [
    ("sqlite", overwrite_sqlite_record),
    ("filesystem", overwrite_session_file),
])
def test_a_pickled_payload_in_the_store_is_a_fresh_session_and_never_unpickled(
    make_app: Any, tmp_path: Path, kind: str, overwrite: Any,
) -> None:
    app = make_app(SESSION_TYPE=kind, SESSION_SQLITE_PATH=str(tmp_path / "s.sqlite3"),
                   SESSION_FILE_DIR=str(tmp_path / "files"))

    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        return "ok"

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    client = app.test_client()
    client.post("/login")
    assert client.get("/whoami").text == "alice"
    UNPICKLED.clear()

    overwrite(app)
    response = client.get("/whoami")

    assert response.status_code == 200
    assert response.text == "anonymous"
    assert UNPICKLED == []
    assert "session=;" in response.headers["Set-Cookie"]  # the dead cookie is cleared
