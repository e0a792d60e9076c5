"""The filesystem store's own start-up: workers of one server sharing a directory."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from sessionkeeper.stores.filesystem import FileSystemStore

WORKERS = 6
CHECKS_EACH = 300


def test_workers_starting_together_all_pass_the_start_up_check(tmp_path: Path) -> None:
    # Like gunicorn workers booting at once, each process checks the shared directory;
    # one worker's check must never break another's (a failed check stops the server).
    directory = tmp_path / "sessions"
    pids = []
    for _ in range(WORKERS):
        pid = os.fork()
        if pid == 0:  # a worker: reports by exit status and never returns into pytest
            try:
                signal.alarm(20)
                store = FileSystemStore(directory)
                for _ in range(CHECKS_EACH):
                    store.check()
                os._exit(0)
            finally:
                os._exit(1)
        pids.append(pid)
    statuses = []
    deadline = time.monotonic() + 40
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses.append(os.waitstatus_to_exitcode(status))
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                statuses.append(None)
                break
            time.sleep(0.02)
    assert statuses == [0] * WORKERS
    assert [p.name for p in directory.iterdir() if p.name.startswith(".probe")] == []
