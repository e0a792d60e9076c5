"""An app on the filesystem store for the lock tests under gunicorn.

Configured from the environment: ``SECRET_KEY``, ``SESSION_FILE_DIR`` and
``HOLD_PID_FILE``. Saving the key ``hold`` stops inside the store's write of the
record - with the session's lock held - after writing the worker's pid to
``HOLD_PID_FILE``, so the test can freeze that worker (SIGSTOP) at that point.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flask import Flask, jsonify, session
from flask.typing import ResponseReturnValue

from sessionkeeper.flask import Session
from sessionkeeper.stores.base import SessionRecord

app = Flask(__name__)
app.config.update(SECRET_KEY=os.environ["SECRET_KEY"], SESSION_TYPE="filesystem",
                  SESSION_FILE_DIR=os.environ["SESSION_FILE_DIR"])
Session(app)

_store = app.extensions["sessionkeeper"].backend.store
_store = getattr(_store, "inner", _store)  # the store itself, behind any wrapper
_encode = _store.records.dumps


def _dumps(record: SessionRecord) -> bytes:
    if "hold" in record.values:
        Path(os.environ["HOLD_PID_FILE"]).write_text(str(os.getpid()))
        time.sleep(600)
    return _encode(record)


_store.records.dumps = _dumps


@app.get("/health")
def health() -> str:
    return "ok"


@app.post("/start")
def start() -> str:
    session["started"] = True
    return "started"


@app.post("/set/<key>")
def set_key(key: str) -> ResponseReturnValue:
    if "started" not in session:
        return "no session", 409
    session[key] = True
    return "set"


@app.get("/keys")
def keys() -> ResponseReturnValue:
    return jsonify(sorted(session.keys()))
