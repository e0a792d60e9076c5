"""The filesystem store's per-user index is scoped by SESSION_KEY_PREFIX.

Two apps sharing one directory with different prefixes never see each other's
sessions of a user, and changing the prefix (to end every session, as
docs/security.md advises) leaves no old session listed as live.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, session

from sessionkeeper.flask import Session, user_sessions
from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord
from sessionkeeper.stores.filesystem import FileSystemStore

CODEC = ValueCodec()


def new_key(prefix: str) -> str:
    return prefix + storage_key(secrets.token_urlsafe(32))


def record(user_id: str) -> SessionRecord:
    now = time.time()
    return SessionRecord(values={"n": CODEC.encode(1)}, created_at=now, accessed_at=now,
                         expires_at=now + 600, permanent=True, user_id=user_id)


def test_stores_with_different_prefixes_list_only_their_own_sessions(tmp_path: Path) -> None:
    # "app:" is a prefix of "app:admin:": a plain starts-with test would mix them up.
    prefixes = ("app:", "app:admin:", "other-app:")
    stores = {p: FileSystemStore(tmp_path, key_prefix=p) for p in prefixes}
    keys = {p: {new_key(p), new_key(p)} for p in prefixes}
    for prefix, store in stores.items():
        for key in keys[prefix]:
            store.create(key, record("alice"))

    for prefix, store in stores.items():
        assert set(store.keys_for_user("alice", time.time())) == keys[prefix]
    # A store told no prefix (the store used on its own) sees every key of the user.
    everything = set().union(*keys.values())
    assert set(FileSystemStore(tmp_path).keys_for_user("alice", time.time())) == everything


def test_after_the_prefix_changes_old_sessions_are_not_listed(tmp_path: Path) -> None:
    before = FileSystemStore(tmp_path, key_prefix="v1:")
    for _ in range(3):
        before.create(new_key("v1:"), record("alice"))

    after = FileSystemStore(tmp_path, key_prefix="v2:")
    assert after.keys_for_user("alice", time.time()) == []
    key = new_key("v2:")
    after.create(key, record("alice"))
    assert after.keys_for_user("alice", time.time()) == [key]


def devices_app(directory: Path, prefix: str) -> Flask:
    app = Flask(f"sessionkeeper_{prefix.strip(':')}")
    app.config.update(SECRET_KEY=secrets.token_hex(16), SESSION_TYPE="filesystem",
                      SESSION_FILE_DIR=str(directory), SESSION_KEY_PREFIX=prefix)
    Session(app)

    @app.post("/login")
    def login() -> str:
        session["app"] = prefix
        session.login("alice")  # type: ignore[attr-defined]
        return "in"

    @app.get("/me")
    def me() -> str:
        return str(session.user_id or "anonymous")  # type: ignore[attr-defined]

    @app.get("/devices")
    def devices() -> Any:
        return jsonify([info.handle for info in user_sessions.list()])

    @app.post("/sign-out-everywhere")
    def sign_out_everywhere() -> Any:
        return jsonify(user_sessions.revoke_all())

    return app


def test_two_apps_on_one_directory_never_touch_each_others_sessions(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    shop, blog = devices_app(directory, "shop:"), devices_app(directory, "blog:")
    shop_laptop, shop_phone = shop.test_client(), shop.test_client()
    blog_laptop = blog.test_client()
    for browser in (shop_laptop, shop_phone, blog_laptop):
        assert browser.post("/login").status_code == 200

    assert len(blog_laptop.get("/devices").json) == 1
    assert len(shop_laptop.get("/devices").json) == 2
    assert blog_laptop.post("/sign-out-everywhere").json == 1
    assert blog_laptop.get("/me").text == "anonymous"
    assert shop_laptop.get("/me").text == "alice"
    assert shop_phone.get("/me").text == "alice"


def test_changing_the_prefix_ends_every_listed_session(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    old = devices_app(directory, "v1:")
    for _ in range(2):
        assert old.test_client().post("/login").status_code == 200

    browser = devices_app(directory, "v2:").test_client()
    assert browser.post("/login").status_code == 200
    assert len(browser.get("/devices").json) == 1
