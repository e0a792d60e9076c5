"""The session cookie is read from the Cookie header exactly as the installed werkzeug
parses it (``request.cookies``), whatever the header holds and whichever werkzeug
release is installed (3.1.9 rewrote its parser)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.sansio.http import parse_cookie

from sessionkeeper import cookie_header
from sessionkeeper.cookie_header import cookie_value

NAMES = st.sampled_from(["session", "s", "a", "sess ion", "é"])
# Characters that matter to one parser or another: separators, quotes and escapes,
# ASCII and Unicode whitespace (str.strip() and re's \s disagree on some), non-ASCII.
HEADER_CHARS = st.sampled_from(list(
    'session=;"\\ \t\n\r\x0b\x0c\x1c\x1f\x00\x85\xa0\u2028\u3000,é' "ab.-_~9017"
))
TOKEN_CHARS = "!#$%&'*+-.^_`|~09azAZ"
OCTET_CHARS = TOKEN_CHARS + "=/:<>?@[]{}()"


@settings(max_examples=3000)
@given(header=st.text(HEADER_CHARS, max_size=60), name=NAMES)
def test_matches_werkzeug_on_tricky_headers(header: str, name: str) -> None:
    assert cookie_value(header, name) == parse_cookie(header).get(name)


@settings(max_examples=1000)
@given(header=st.text(max_size=60), name=NAMES)
def test_matches_werkzeug_on_any_text(header: str, name: str) -> None:
    assert cookie_value(header, name) == parse_cookie(header).get(name)


@st.composite
def browser_headers(draw: st.DrawFn) -> str:
    """``name=value; name=value`` as browsers send it, with now and then one odd character."""
    names = st.one_of(st.sampled_from(["session", "s", "a"]), st.text(TOKEN_CHARS, min_size=1))
    pairs = draw(st.lists(st.tuples(names, st.text(OCTET_CHARS, max_size=12)), max_size=5))
    header = draw(st.sampled_from(["; ", ";"])).join(f"{k}={v}" for k, v in pairs)
    if header and draw(st.booleans()):
        at = draw(st.integers(0, len(header)))
        header = header[:at] + draw(HEADER_CHARS) + header[at:]
    return header


@settings(max_examples=2000)
@given(header=browser_headers(), name=NAMES)
def test_matches_werkzeug_on_browser_like_headers(header: str, name: str) -> None:
    assert cookie_value(header, name) == parse_cookie(header).get(name)


@pytest.mark.parametrize("header", [
    "session=ab c",  # werkzeug 3.1.9: None, earlier releases: 'ab c'
    "session=\x85",  # 3.1.9: '\x85', earlier: ''
    "session=\x0bvalue\x1c",
    "session=\xa0abc\x85",
    "session=abc\n; other=1",
    " session = abc ;",
    'session="quo\\"ted"',
    'session="\\101\\102"',
    "session",
    "session=a,b",
])
def test_agrees_with_werkzeug_where_releases_differ(header: str) -> None:
    assert cookie_value(header, "session") == parse_cookie(header).get("session")


@pytest.mark.parametrize(("header", "expected"), [
    ("session=abc", "abc"),
    ("other=1; session=abc; more=2", "abc"),
    ("other=1;session=abc", "abc"),
    ("session=first; session=second", "first"),  # the first one wins, as in Flask
    ("xsession=abc; sessionx=def", None),
    ('a="x;session=evil"; session=good', "good"),  # not fooled by a quoted ';'
    ("session=a=b=", "a=b="),
    ("session=", ""),
    ("", None),
    (None, None),
])
def test_reads_the_named_cookie(header: str | None, expected: str | None) -> None:
    assert cookie_value(header, "session") == expected
    assert parse_cookie(header).get("session") == expected  # werkzeug agrees


def test_a_browser_header_is_read_without_the_full_parser(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The common case stays cheap: real cookies (base64url ids, signed and sealed values,
    Flask's '.'-prefixed cookies) never go through werkzeug's whole-header parse."""

    def unexpected(header: str) -> None:
        raise AssertionError(f"parsed in full: {header!r}")

    monkeypatch.setattr(cookie_header, "parse_cookie", unexpected)
    header = ("_ga=GA1.1.123.456; session=.eJyrVipKLS7NKbFSslIqzy_KUaoFAEcMBq8.Z0xY.abc-_~x; "
              "csrf=a1b2%3D%3D; remember=42|1700000000.sig")
    assert cookie_value(header, "session") == ".eJyrVipKLS7NKbFSslIqzy_KUaoFAEcMBq8.Z0xY.abc-_~x"
    assert cookie_value(header, "remember") == "42|1700000000.sig"
    assert cookie_value(header, "absent") is None
