"""Loaded into Flask's own test-suite: its ``app`` fixture, with sessionkeeper installed.

Flask's conftest builds ``Flask("flask_test", ...)`` with ``SECRET_KEY="test key"``; this
one builds the same app and calls ``Session(app)`` on the store named by
``SESSIONKEEPER_COMPAT_KIND`` (a provider of tests/providers, or a cookie kind), so every
test of Flask's runs unmodified against it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from sessionkeeper.flask import Session

COOKIE_KINDS = {
    "cookie": {"SESSION_TYPE": "cookie"},
    "cookie-encrypted": {"SESSION_TYPE": "cookie", "SESSION_COOKIE_ENCRYPT": True},
}


@pytest.fixture
def app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flask]:
    kind = os.environ["SESSIONKEEPER_COMPAT_KIND"]
    app = Flask("flask_test", root_path=str(request.path.parent),
                instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, SECRET_KEY="test key")
    if kind in COOKIE_KINDS:
        app.config.update(COOKIE_KINDS[kind])
        Session(app)
        yield app
        return
    provider = importlib.import_module(f"providers.{kind}")  # sessionkeeper's tests/
    with provider.flask_config(tmp_path) as config:
        app.config.update(config)
        Session(app)
        yield app
