"""Stores starting at the same instant, as the workers of one server do."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sessionkeeper.stores.base import SessionStore


def check_all_at_once(stores: Sequence[SessionStore]) -> list[BaseException]:
    """Run every store's start-up ``check()`` in its own thread, released together;
    close the stores and return what the checks raised."""
    start = threading.Barrier(len(stores))
    failures: list[BaseException] = []

    def start_up(store: SessionStore) -> None:
        start.wait(timeout=30)
        try:
            store.check()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start_up, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.close()
    return failures
