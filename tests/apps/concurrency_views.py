"""The views the concurrency tests drive, on whatever store the app module configures."""

from __future__ import annotations

import os
import time

from flask import Flask, jsonify, request, session
from flask.typing import ResponseReturnValue


def add_concurrency_views(app: Flask) -> Flask:
    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.post("/start")
    def start() -> str:
        session["started"] = True
        return "started"

    @app.post("/set/<key>")
    def set_key(key: str) -> ResponseReturnValue:
        # Read the session first, then linger: every concurrent request holds the same
        # stale state when it saves, so only delta saves keep each other's keys.
        if "started" not in session:
            return "no session", 409
        time.sleep(float(request.args.get("linger", "0")))
        session[key] = os.getpid()
        return "set"

    @app.get("/keys")
    def keys() -> ResponseReturnValue:
        return jsonify(sorted(session.keys()))

    @app.get("/pids")
    def pids() -> ResponseReturnValue:
        return jsonify({k: v for k, v in session.items() if k != "started"})

    return app
