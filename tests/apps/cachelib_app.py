"""The concurrency app (tests/apps/concurrency_app.py's views) on SESSION_TYPE="cachelib".

Configured from the environment: ``SECRET_KEY``, and either ``CACHELIB_DIR`` (a
FileSystemCache there) or ``CACHELIB_REDIS_URL`` with ``CACHELIB_PREFIX`` (a RedisCache).
"""

from __future__ import annotations

import os

import redis
from cachelib import FileSystemCache, RedisCache
from cachelib.base import BaseCache
from concurrency_views import add_concurrency_views
from flask import Flask

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
add_concurrency_views(app)

