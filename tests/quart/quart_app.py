"""The Quart app the tests in this folder drive: each route does one thing to the session.

``app`` (module level) is the app a real server runs (test_quart_hypercorn.py): it is
configured by SK_* environment variables.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from quart import Quart, current_app, request, session, websocket

from sessionkeeper.quart import Session


def make_app(config: dict[str, Any], instance_path: Path | str) -> Quart:
    """A Quart app using sessionkeeper with ``config`` (plus a SECRET_KEY)."""
    app = Quart("sessionkeeper_quart_test", instance_path=str(instance_path))
    app.config.update(SECRET_KEY=secrets.token_hex(16))
    app.config.update(config)
    Session(app)

    @app.get("/view")
    async def view() -> dict[str, Any]:
        return {"session": dict(session), "user": session.user_id}

    @app.post("/set")
    async def set_values() -> dict[str, Any]:
        session.update(await request.get_json())
        return {"session": dict(session)}

    @app.post("/pop/<key>")
    async def pop(key: str) -> dict[str, Any]:
        return {"popped": session.pop(key, None)}

    @app.post("/del/<key>")
    async def delete(key: str) -> dict[str, Any]:
        del session[key]
        return {"session": dict(session)}

    @app.post("/clear")
    async def clear() -> str:
        session.clear()
        return "cleared"

    @app.post("/login/<user>")
    async def login(user: str) -> dict[str, Any]:
        session.login(user)
        return {"session": dict(session), "user": session.user_id}

    @app.post("/logout")
    async def logout() -> str:
        session.logout()
        return "bye"

    @app.get("/health")
    async def health() -> str:
        return "ok"  # never touches the session

    @app.post("/fail")
    async def fail() -> tuple[str, int]:
        session["half"] = "done"
        return "boom", 500

    @app.post("/set-then-break")
    async def set_then_break() -> str:
        session["late"] = 1
        current_app.config["BREAK_STORE"]()  # the store goes down before the save
        return "set"

    @app.websocket("/ws")
    async def counter() -> None:
        while (await websocket.receive()) == "count":
            session["count"] = session.get("count", 0) + 1
            await websocket.send(str(session["count"]))

    @app.websocket("/ws-saved")
    async def saved_counter() -> None:
        """Saves each count at once (``await session.save()``); "check" answers whether
        the session still lives (``await session.revalidate()``)."""
        while (command := await websocket.receive()) != "stop":
            if command == "check":
                await websocket.send("alive" if await session.revalidate() else "ended")
                continue
            session["count"] = session.get("count", 0) + 1
            await session.save()
            await websocket.send(str(session["count"]))

    return app


def _app_from_environment() -> Quart:
    config: dict[str, Any] = {"SESSION_TYPE": os.environ["SK_SESSION_TYPE"]}
    for name in ("SECRET_KEY", "SESSION_REDIS", "SESSION_KEY_PREFIX", "SESSION_SQLITE_PATH"):
        if f"SK_{name}" in os.environ:  # the same in every worker process
            config[name] = os.environ[f"SK_{name}"]
    return make_app(config, os.environ.get("SK_INSTANCE_PATH", "instance"))


app = _app_from_environment() if "SK_SESSION_TYPE" in os.environ else None
