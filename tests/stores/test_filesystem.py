"""The filesystem store's own behaviour: start-up of workers sharing a directory, the
store contract (touch, add, damaged files), a directory removed at run time, and a key
prefix too long for the file system's names."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import pytest
from flask import Flask, session

from sessionkeeper.errors import ConfigurationError, UndecodableRecord
from sessionkeeper.flask import Session
from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.filesystem import FileSystemStore

WORKERS = 6
CHECKS_EACH = 300
ADD_THREADS = 16
ADD_ROUNDS = 30


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


# -- helpers for the store-level tests below ----------------------------------------
CODEC = ValueCodec()
LIFETIME = 600.0


def new_key(prefix: str = "session:") -> str:
    return prefix + storage_key(secrets.token_urlsafe(32))


def record(user_id: str | None = None, *, expires_in: float = LIFETIME,
           **values: object) -> SessionRecord:
    now = time.time()
    return SessionRecord(values={k: CODEC.encode(v) for k, v in values.items()},
                         created_at=now, accessed_at=now, expires_at=now + expires_in,
                         permanent=True, user_id=user_id)


def delta(**values: object) -> SessionUpdate:
    now = time.time()
    return SessionUpdate(set_values={k: CODEC.encode(v) for k, v in values.items()},
                         deleted_keys=set(), replace=False, accessed_at=now,
                         expires_at=now + LIFETIME, permanent=True)


def record_file(store: FileSystemStore, key: str) -> Path:
    [path] = [p for p in store.directory.iterdir() if p.name.endswith(".session")
              and storage_key_of(p) == key]
    return path


def storage_key_of(path: Path) -> str:
    return unquote(path.name.removesuffix(".session"))


# -- the store contract: touch, add, records that no longer decode ------------------
def test_touch_says_whether_the_record_was_there(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)
    key = new_key()
    store.create(key, record(cart=[1]))
    later = time.time() + LIFETIME * 2
    assert store.touch(key, time.time(), later) is True
    loaded = store.load(key, time.time())
    assert loaded is not None and loaded.expires_at == later
    assert store.touch(new_key(), time.time(), later) is False
    assert len(list(tmp_path.glob("*.session"))) == 1  # the missing one was not created


def test_add_claims_a_key_once_among_racing_threads(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)
    for _ in range(ADD_ROUNDS):
        key = new_key()
        start = threading.Barrier(ADD_THREADS)

        def claim(n: int, key: str = key, start: threading.Barrier = start) -> bool:
            start.wait()
            return store.add(key, record(claimer=n))

        with ThreadPoolExecutor(ADD_THREADS) as pool:
            results = list(pool.map(claim, range(ADD_THREADS)))
        assert results.count(True) == 1
        winner = store.load(key, time.time())
        assert winner is not None
        assert CODEC.decode(winner.values["claimer"]) == results.index(True)


def test_add_replaces_an_expired_or_damaged_record_but_never_a_live_one(
    tmp_path: Path,
) -> None:
    store = FileSystemStore(tmp_path)
    live, expired, damaged = new_key(), new_key(), new_key()
    store.create(live, record(who="first"))
    store.create(expired, record(who="old", expires_in=-1))
    store.create(damaged, record(who="old"))
    record_file(store, damaged).write_bytes(b"\x00 not a record \xff")

    assert store.add(live, record(who="second")) is False
    assert store.add(expired, record(who="new")) is True
    assert store.add(damaged, record(who="new")) is True
    for key, who in ((live, "first"), (expired, "new"), (damaged, "new")):
        loaded = store.load(key, time.time())
        assert loaded is not None and CODEC.decode(loaded.values["who"]) == who
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


@pytest.mark.parametrize("key", [
    "app:" + "ab" * 32,            # this app's prefix and a digest
    "app:" + "ab" * 31 + "/.",     # its prefix, then characters a file name cannot hold
    "other/app:\u00e9" + "0" * 64,  # no prefix of this app's
    "app:",                        # the prefix alone
])
def test_every_write_leaves_one_file_named_by_its_key_with_the_mode_and_expiry(
    tmp_path: Path, key: str,
) -> None:
    store = FileSystemStore(tmp_path, key_prefix="app:", mode=0o640)
    store.create(key, record(n=0))
    for n in range(1, 4):
        assert store.update(key, delta(n=n)) is True
    assert store.touch(key, time.time(), time.time() + 2 * LIFETIME) is True

    [path] = [p for p in tmp_path.iterdir() if not p.name.startswith(".users")]
    assert storage_key_of(path) == key and "/" not in path.name
    assert path.stat().st_mode & 0o777 == 0o640
    loaded = store.load(key, time.time())
    assert loaded is not None and CODEC.decode(loaded.values["n"]) == 3
    assert path.stat().st_mtime == pytest.approx(loaded.expires_at, abs=1e-3)  # the sweep's hint


def test_garbage_in_a_session_file_raises_undecodable_record(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)
    key = new_key()
    store.create(key, record("alice", cart=[1, 2]))
    record_file(store, key).write_bytes(b"\x93garbage\x00\xff{")

    with pytest.raises(UndecodableRecord) as raised:
        store.load(key, time.time())
    assert raised.value.store == "filesystem"
    # Nothing can be applied to it, and the core's clean-up removes it.
    assert store.update(key, delta(cart=[3])) is False
    assert store.touch(key, time.time(), time.time() + LIFETIME) is False
    store.delete(key)
    assert store.load(key, time.time()) is None
    assert store.keys_for_user("alice", time.time()) == []


def test_a_damaged_session_file_gives_a_fresh_session_not_an_error(tmp_path: Path) -> None:
    app = counter_app(tmp_path / "sessions")
    browser = app.test_client()
    assert browser.post("/visit").text == "1"
    [path] = (tmp_path / "sessions").glob("*.session")
    path.write_bytes(b"\xc1 damaged")

    again = browser.post("/visit")
    assert (again.status_code, again.text) == (200, "1")  # a new session, no 500
    assert browser.post("/visit").text == "2"


# -- the directory removed at run time (a tmp cleaner, a redeploy) ------------------
@pytest.mark.parametrize("recreated", [False, True], ids=["removed", "removed-and-recreated"])
def test_the_store_recovers_when_its_directory_is_removed(tmp_path: Path,
                                                          recreated: bool) -> None:
    directory = tmp_path / "sessions"
    store = FileSystemStore(directory)
    store.create(new_key(), record("alice"))
    shutil.rmtree(directory)
    if recreated:
        directory.mkdir()

    key = new_key()
    store.create(key, record("alice", cart=[1]))
    assert store.update(key, delta(cart=[1, 2])) is True
    assert store.touch(key, time.time(), time.time() + LIFETIME) is True
    assert store.keys_for_user("alice", time.time()) == [key]
    claimed = new_key()
    assert store.add(claimed, record("alice")) is True
    store.delete(key)
    assert store.keys_for_user("alice", time.time()) == [claimed]
    store.check()


def test_an_app_keeps_saving_after_its_session_directory_is_removed(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    browser = counter_app(directory).test_client()
    assert browser.post("/visit").text == "1"
    shutil.rmtree(directory)
    directory.mkdir()

    assert browser.post("/visit").text == "1"  # the old file is gone: a new session
    second = browser.post("/visit")  # a change of that session (a locked update)
    assert (second.status_code, second.text) == (200, "2")
    assert browser.post("/visit").text == "3"


# -- a key prefix too long for the file system's names ------------------------------
def test_a_key_prefix_too_long_for_file_names_fails_in_the_constructor(
    tmp_path: Path,
) -> None:
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    room = limit - 64 - len(".session")
    with pytest.raises(ConfigurationError, match="SESSION_KEY_PREFIX") as raised:
        FileSystemStore(tmp_path, key_prefix="p" * (room + 1))
    assert f"at most {room}" in str(raised.value)
    # Characters a file name cannot hold are percent-encoded: three bytes each.
    with pytest.raises(ConfigurationError, match="SESSION_KEY_PREFIX"):
        FileSystemStore(tmp_path, key_prefix=":" * (room // 3 + 1))

    store = FileSystemStore(tmp_path, key_prefix="p" * room)  # the longest that fits
    key = new_key("p" * room)
    store.create(key, record(cart=[1]))
    assert store.update(key, delta(cart=[2])) is True


def test_an_app_with_a_key_prefix_too_long_for_file_names_fails_at_start_up(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError, match="SESSION_KEY_PREFIX"):
        counter_app(tmp_path / "sessions", SESSION_KEY_PREFIX="app:" * 50)


def counter_app(directory: Path, **config: object) -> Flask:
    app = Flask("sessionkeeper_filesystem_test")
    app.config.update(SECRET_KEY=secrets.token_hex(16), SESSION_TYPE="filesystem",
                      SESSION_FILE_DIR=str(directory), **config)
    Session(app)

    @app.post("/visit")
    def visit() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    return app


# -- file systems whose exclusive flock needs a writable descriptor (NFS) --------------
def test_where_a_lock_needs_write_access_changes_reopen_the_file_for_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno
    import fcntl

    from sessionkeeper.stores import filesystem_lock

    real_flock = fcntl.flock
    modes: list[int] = []

    def nfs_flock(fd: int, operation: int) -> None:
        # NFS emulates flock with fcntl locks: an exclusive one on a read-only file fails.
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        modes.append(mode)
        if operation & fcntl.LOCK_EX and mode == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        real_flock(fd, operation)

    monkeypatch.setattr(filesystem_lock, "_open_flags", os.O_RDONLY)
    monkeypatch.setattr(filesystem_lock.fcntl, "flock", nfs_flock)
    store = FileSystemStore(tmp_path)
    key = new_key()
    store.create(key, record(n=0))
    for n in range(1, 4):
        assert store.update(key, delta(n=n)) is True
    loaded = store.load(key, time.time())
    assert loaded is not None and CODEC.decode(loaded.values["n"]) == 3
    assert modes == [os.O_RDONLY, os.O_RDWR, os.O_RDWR, os.O_RDWR]  # asked once, then known
