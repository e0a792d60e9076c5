"""SQLite session files are private: the database and its -wal and -shm files are
created readable and writable by their owner only (0600), as the filesystem store's
files are; other local users cannot read session data."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, session

MakeApp = Callable[..., Flask]


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most servers run with (022): SQLite alone would create files 0644."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def modes(folder: Path, name: str) -> dict[str, str]:
    return {path.name: oct(stat.S_IMODE(path.stat().st_mode))
            for path in sorted(folder.glob(f"{name}*"))}


def first_request(app: Flask) -> None:
    @app.post("/cart")
    def cart() -> str:
        session["cart"] = ["socks"]
        return "ok"

    client = app.test_client()
    assert client.post("/cart").status_code == 200
    assert client.post("/cart").status_code == 200  # the session read back: -shm exists


CONFIGS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "sqlite": lambda folder: {"SESSION_SQLITE_PATH": str(folder / "sessions.sqlite3")},
    "sqlalchemy": lambda folder: {"SESSION_TYPE": "sqlalchemy",
                                  "SESSION_SQLALCHEMY": f"sqlite:///{folder}/sessions.sqlite3"},
}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_the_database_and_its_wal_and_shm_files_are_private(
        make_app: MakeApp, tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    app = make_app(CONFIGS[kind](folder))
    first_request(app)

    found = modes(folder, "sessions.sqlite3")
    assert set(found) == {"sessions.sqlite3", "sessions.sqlite3-wal", "sessions.sqlite3-shm"}
    assert found == dict.fromkeys(found, "0o600")


def test_the_default_file_in_the_instance_folder_is_private(make_app: MakeApp) -> None:
    app = make_app()  # SESSION_TYPE unset: SQLite in <instance_path>/sessions.sqlite3
    first_request(app)
    found = modes(Path(app.instance_path), "sessions.sqlite3")
    assert found and found == dict.fromkeys(found, "0o600")


def test_an_existing_file_keeps_the_mode_it_was_given(make_app: MakeApp,
                                                      tmp_path: Path) -> None:
    # A mode chosen on purpose (a group sharing the file, say) is left alone.
    path = tmp_path / "shared.sqlite3"
    path.touch(mode=0o660)
    os.chmod(path, 0o660)
    first_request(make_app({"SESSION_SQLITE_PATH": str(path)}))
    assert modes(tmp_path, "shared.sqlite3") == dict.fromkeys(
        ["shared.sqlite3", "shared.sqlite3-shm", "shared.sqlite3-wal"], "0o660")
