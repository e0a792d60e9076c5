"""Shared fixtures: every store kind in tests/providers/ joins the same suites.

A provider module ``tests/providers/<name>.py`` offers:
- ``KIND``: the SESSION_TYPE it configures;
- ``store(codec)``: a context manager yielding a fresh, isolated ``SessionStore``
  (random key prefix, table or directory: tests never see each other's data);
- ``flask_config(tmp_path)``: a context manager yielding the ``app.config`` entries
  that make a Flask app use that store, equally isolated.
Dropping a provider file in that folder adds the store to the conformance suite and to
every Flask-level suite.
"""

from __future__ import annotations

import importlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask

from sessionkeeper.flask import Session
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionStore

PROVIDER_DIR = Path(__file__).parent / "providers"
STORE_KINDS = sorted(p.stem for p in PROVIDER_DIR.glob("*.py") if not p.stem.startswith("_"))
#: client-side app kinds: the session is the cookie, signed or also encrypted
#: (permanent, like the server stores' default, so the shared suites see one behaviour)
COOKIE_KINDS: dict[str, dict[str, Any]] = {
    "cookie": {"SESSION_TYPE": "cookie", "SESSION_PERMANENT": True},
    "cookie-encrypted": {"SESSION_TYPE": "cookie", "SESSION_COOKIE_ENCRYPT": True,
                         "SESSION_PERMANENT": True},
}
APP_KINDS = [*STORE_KINDS, *COOKIE_KINDS]
STRICT = os.environ.get("SESSIONKEEPER_REQUIRE_SERVERS") == "1"
# The one server that cannot be installed from this project's package sources.
ALLOWED_STRICT_SKIPS = ("MONGODB_URL",)


def provider(name: str) -> ModuleType:
    return importlib.import_module(f"providers.{name}")


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(store_kind: str) -> Iterator[SessionStore]:
    with provider(store_kind).store(ValueCodec()) as made:
        yield made


@pytest.fixture(params=APP_KINDS)
def app_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app_config(app_kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if app_kind in COOKIE_KINDS:
        yield dict(COOKIE_KINDS[app_kind])
        return
    with provider(app_kind).flask_config(tmp_path) as config:
        yield config


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Flask]:
    """Build a Flask app using sessionkeeper with the given config (plus a SECRET_KEY)."""

    def make(config: dict[str, Any] | None = None, **more: Any) -> Flask:
        app = Flask("sessionkeeper_test", instance_path=str(tmp_path / "instance"))
        app.config.update(SECRET_KEY=secrets.token_hex(16), TESTING=True)
        app.config.update(config or {})
        app.config.update(more)
        Session(app)
        return app

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI a skipped test is a failure: a missing store must not pass silently.

    The one exception is MongoDB, whose server no package source of this project ships.
    """
    outcome: Any = yield
    report = outcome.get_result()
    if not hasattr(report, "wasxfail"):
        _fail_forbidden_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same rule for a whole module skipped while it is collected (a missing
    package, say): in CI that is a failure too, not a quiet skip."""
    outcome: Any = yield
    _fail_forbidden_skip(outcome.get_result())


def _fail_forbidden_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if STRICT and report.skipped:
        longrepr = report.longrepr
        reason = str(longrepr[-1]) if isinstance(longrepr, tuple) else str(longrepr)
        if not any(allowed in reason for allowed in ALLOWED_STRICT_SKIPS):
            report.outcome = "failed"
            report.longrepr = f"skipped, but CI must run every test: {reason}"
