"""The concurrency app (tests/apps/concurrency_app.py's views) on SESSION_TYPE="cachelib".

Configured from the environment: ``SECRET_KEY``, and either ``CACHELIB_DIR`` (a
FileSystemCache there) or ``CACHELIB_REDIS_URL`` with ``CACHELIB_PREFIX`` (a RedisCache).
"""

from __future__ import annotations

import os
import time

import redis
from cachelib import FileSystemCache, RedisCache
from cachelib.base import BaseCache
from flask import Flask, jsonify, request, session
from flask.typing import ResponseReturnValue

from sessionkeeper.flask import Session


def cache() -> BaseCache:
    if os.environ.get("CACHELIB_DIR"):
        return FileSystemCache(os.environ["CACHELIB_DIR"], threshold=0)
    client = redis.Redis.from_url(os.environ["CACHELIB_REDIS_URL"], socket_timeout=5,
                                  socket_connect_timeout=5)
    return RedisCache(host=client, key_prefix=os.environ["CACHELIB_PREFIX"])


app = Flask(__name__)
app.config.update(SECRET_KEY=os.environ["SECRET_KEY"], SESSION_TYPE="cachelib",
                  SESSION_CACHELIB=cache())
Session(app)


@app.get("/health")
def health() -> str:
    return "ok"


@app.post("/start")
def start() -> str:
    session["started"] = True
    return "started"


@app.post("/set/<key>")
def set_key(key: str) -> ResponseReturnValue:
    # Every concurrent request reads the same state, lingers, then saves its own key.
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
