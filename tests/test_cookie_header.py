"""The session cookie is read from the Cookie header exactly as werkzeug parses it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.sansio.http import parse_cookie

from sessionkeeper.cookie_header import cookie_value

# Characters that matter to the parser, plus plain ones and non-ASCII spaces.
HEADER_CHARS = st.sampled_from(list('session=;"\\ \t\xa0\x85ab.-_9'))


@settings(max_examples=1000)
@given(header=st.text(HEADER_CHARS, max_size=60),
       name=st.sampled_from(["session", "s", "sess ion", "a"]))
def test_matches_werkzeug_on_any_header(header: str, name: str) -> None:
    assert cookie_value(header, name) == parse_cookie(header).get(name)


@pytest.mark.parametrize(("header", "expected"), [
    ("session=abc", "abc"),
    ("other=1; session=abc; more=2", "abc"),
    (" session = abc ;", "abc"),
    ("session=first; session=second", "first"),  # the first one wins, as in Flask
    ("xsession=abc; sessionx=def", None),
    ('a="x;session=evil"; session=good', "good"),  # not fooled by a quoted ';'
    ('session="quo\\"ted"', 'quo"ted'),
    ("session", ""),
    ("session=\xa0abc\x85", "abc"),  # trimmed as str.strip() trims
    ("", None),
    (None, None),
])
def test_reads_the_named_cookie(header: str | None, expected: str | None) -> None:
    assert cookie_value(header, "session") == expected
    assert parse_cookie(header).get("session") == expected  # werkzeug agrees
