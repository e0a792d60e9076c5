"""The filesystem store does no work proportional to the whole directory in a request.

With 50,000 session files, the first new session of a fresh store (a new worker) and
listing a user's sessions each read a handful of files; the expired-file sweep advances
a small batch per new session, and still removes every expired file, temporary files
left by killed writers and index entries of removed records.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from flask import Flask, session

from sessionkeeper.flask import Session
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import RecordCodec, SessionRecord
from sessionkeeper.stores.filesystem import FileSystemStore

CODEC = ValueCodec()
FILES = 50_000
#: files one operation may read: a small batch, whatever the directory holds
MOST_READS = 100
#: generous: the same operations took seconds when they read every file
MOST_SECONDS = 0.5


class CountingRecords(RecordCodec):
    """The store's own record codec, counting the records it decodes (files read)."""

    def __init__(self) -> None:
        super().__init__(CODEC)
        self.decoded = 0

    def loads(self, blob: bytes) -> SessionRecord:
        self.decoded += 1
        return super().loads(blob)


def counted(store: FileSystemStore) -> CountingRecords:
    store.records = counter = CountingRecords()
    return counter


def new_key() -> str:
    return "session:" + secrets.token_hex(32)  # shaped like sha256(id), cheaper to make


def record(user_id: str | None = None, expires_in: float = 600.0) -> SessionRecord:
    now = time.time()
    return SessionRecord(values={"n": CODEC.encode(1)}, created_at=now, accessed_at=now,
                         expires_at=now + expires_in, permanent=True, user_id=user_id)


def write_files(directory: Path, count: int, *, expired_every: int = 2,
                user_id: str | None = "someone") -> list[Path]:
    """Session files written straight to disk (as an older version or another
    process left them): every ``expired_every``-th one expired."""
    codec = RecordCodec(CODEC)
    live = codec.dumps(record(user_id))
    dead = codec.dumps(record(user_id, expires_in=-60))
    paths = []
    for n in range(count):
        path = directory / (quote(new_key(), safe="") + ".session")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, dead if n % expired_every == 0 else live)
        os.close(fd)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # In memory where there is /dev/shm: creating 50,000 files on a busy disk takes
    # longer than the rest of the module; what is counted here is files read.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as folder:
        directory = Path(folder) / "sessions"
        FileSystemStore(directory)  # the directory as the store keeps it
        write_files(directory, FILES)
        yield directory


def timed_create(store: FileSystemStore, user_id: str | None = None) -> tuple[str, float]:
    key = new_key()
    started = time.perf_counter()
    store.create(key, record(user_id))
    return key, time.perf_counter() - started


@pytest.mark.slow
def test_new_sessions_in_a_fresh_store_read_a_small_batch(crowded: Path) -> None:
    store = FileSystemStore(crowded)  # a new worker: its sweep is due at once
    reads = counted(store)
    for _ in range(20):
        before = reads.decoded
        _, took = timed_create(store)
        assert reads.decoded - before <= MOST_READS
        assert took < MOST_SECONDS


@pytest.mark.slow
def test_listing_a_users_sessions_reads_only_that_users_files(crowded: Path) -> None:
    store = FileSystemStore(crowded)
    user = f"alice-{secrets.token_hex(4)}"
    keys = {timed_create(store, user)[0] for _ in range(3)}
    reads = counted(store)

    started = time.perf_counter()
    assert set(store.keys_for_user(user, time.time())) == keys
    assert time.perf_counter() - started < MOST_SECONDS
    assert reads.decoded == len(keys)


def test_the_sweep_removes_every_expired_file_a_batch_at_a_time(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)
    paths = write_files(tmp_path, 1_000)
    expired = {p for n, p in enumerate(paths) if n % 2 == 0}
    reads = counted(store)

    created = 0
    while any(p.exists() for p in expired):
        before = reads.decoded
        timed_create(store)
        assert reads.decoded - before <= MOST_READS
        created += 1
        assert created < 100, "the sweep should have gone round the directory by now"
    assert all(p.exists() for p in set(paths) - expired)


def test_the_sweep_removes_temporary_files_left_by_killed_writers(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)
    an_hour_ago = time.time() - 3600
    left = [tmp_path / ".tmp-killed1", tmp_path / ".tmp-killed2", tmp_path / ".probe-killed"]
    for path in left:
        path.write_bytes(b"half a reco")
        os.utime(path, (an_hour_ago, an_hour_ago))
    in_flight = tmp_path / ".tmp-being-written"  # a writer at work right now
    in_flight.write_bytes(b"half")

    timed_create(store)
    assert not any(p.exists() for p in left)
    assert in_flight.exists()


def test_the_sweep_drops_index_entries_whose_record_vanished(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)
    key = new_key()
    store.create(key, record("alice"))
    [record_file] = tmp_path.glob("*.session")
    record_file.unlink()  # a crash, or a file removed by hand
    [entry] = (tmp_path / ".users").glob("*/*")
    os.utime(entry, (time.time() - 3600, time.time() - 3600))

    assert store.delete_expired(time.time()) == 0
    assert list((tmp_path / ".users").glob("*/*")) == []
    assert store.keys_for_user("alice", time.time()) == []


def test_files_written_before_the_index_are_listed_and_then_indexed(tmp_path: Path) -> None:
    # A directory of an older version: records, no index yet.
    write_files(tmp_path, 3, expired_every=3, user_id="alice")  # one expired, two live
    write_files(tmp_path, 50, user_id="bob")
    store = FileSystemStore(tmp_path)
    assert len(store.keys_for_user("alice", time.time())) == 2

    store.delete_expired(time.time())  # one whole pass indexes the older files
    fresh = FileSystemStore(tmp_path)
    reads = counted(fresh)
    assert len(fresh.keys_for_user("alice", time.time())) == 2
    assert reads.decoded == 2


def test_a_file_the_decoder_chokes_on_never_fails_a_new_session(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)
    nested = b"[" * 20_000 + b"]" * 20_000  # deeper than any decoder recurses
    choking = tmp_path / (quote(new_key(), safe="") + ".session")
    choking.write_bytes(b'{"v":{"deep":' + nested + b'},"c":0,"a":0,"e":0,"p":true}')
    expired = write_files(tmp_path, 200, expired_every=1)

    for _ in range(20):
        timed_create(store)  # each continues the sweep past the file it cannot read
    assert not any(p.exists() for p in expired)


def test_session_cleanup_n_requests_never_walks_the_directory_in_a_request(
        tmp_path: Path) -> None:
    # Flask-Session apps may carry SESSION_CLEANUP_N_REQUESTS over; the store's own sweep
    # already removes expired files a batch at a time, so requests must not walk them all.
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", SESSION_TYPE="filesystem",
                      SESSION_FILE_DIR=str(tmp_path), SESSION_CLEANUP_N_REQUESTS=1)
    Session(app)

    @app.post("/visit")
    def visit() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    client = app.test_client()
    assert client.post("/visit").text == "1"
    write_files(tmp_path, 1_000)
    reads = counted(app.extensions["sessionkeeper"].backend.store.inner)

    for visits in range(2, 12):
        assert client.post("/visit").text == str(visits)
    assert reads.decoded <= 10 * 2  # each request: its own record, nothing more
