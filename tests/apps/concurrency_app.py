"""A small app for concurrency tests under a real multi-process server (gunicorn).

Configured from the environment: ``SECRET_KEY``, ``SESSION_TYPE`` (unset: the embedded
SQLite store), ``SESSION_SQLITE_PATH`` and ``SESSION_FILE_DIR``.
"""

from __future__ import annotations

import os

from concurrency_views import add_concurrency_views
from flask import Flask

from sessionkeeper.flask import Session

SETTINGS = ("SESSION_TYPE", "SESSION_SQLITE_PATH", "SESSION_FILE_DIR")

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]
app.config.update({name: os.environ[name] for name in SETTINGS if os.environ.get(name)})
Session(app)
add_concurrency_views(app)

