"""Keeps the store's requests out of botocore's DEBUG wire log.

At DEBUG level botocore logs every request's parameters and every response's body:
for the sessions table those are store keys and session data, which log lines must
never carry. A filter on the two loggers that print them blanks the records made by
this store's own calls (marked per thread); the app's other AWS calls log as before.
Filters run only for records that are logged at all, so this costs nothing unless
botocore's DEBUG logging is on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: botocore.endpoint logs request parameters, botocore.parsers response bodies
PAYLOAD_LOGGERS = ("botocore.endpoint", "botocore.parsers")
HIDDEN = "(a sessionkeeper DynamoDB request or response: hidden, it holds session data)"

_local = threading.local()
_installed = False
_install_lock = threading.Lock()


class _HideSessionPayloads(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_local, "depth", 0) and record.levelno <= logging.DEBUG:
            record.msg, record.args = HIDDEN, None
        return True


def install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            for name in PAYLOAD_LOGGERS:
                logging.getLogger(name).addFilter(_HideSessionPayloads())
            _installed = True


@contextmanager
def hidden() -> Iterator[None]:
    """While inside, this thread's botocore payload records are blanked."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
