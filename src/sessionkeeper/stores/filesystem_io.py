"""The filesystem store's file I/O on bare descriptors.

A session file is written once (to a temporary name) and never changed after it is
renamed into place, so reading it needs no buffering layer: Python's ``open()`` costs
five more system calls per file (fstat twice, an ioctl, two lseeks) and a file object
each time, which is most of a small session's read.
"""

from __future__ import annotations

import os

#: one read takes a typical session file whole; larger ones take more reads
_CHUNK = 65536
#: O_CLOEXEC/O_NOFOLLOW are 0 where the platform lacks them
_OPEN_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_OPEN_NEW = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_NOFOLLOW", 0))
_TEMP_ATTEMPTS = 100


def read_fd(fd: int) -> bytes:
    """Everything from the descriptor's offset to the end of its file."""
    chunk = os.read(fd, _CHUNK)
    if not chunk:
        return chunk
    more = os.read(fd, _CHUNK)
    if not more:  # the common case: the whole file in one read
        return chunk
    chunks = [chunk, more]
    while more := os.read(fd, _CHUNK):
        chunks.append(more)
    return b"".join(chunks)


def read_path(path: str) -> bytes:
    """The content of the file at ``path`` (FileNotFoundError when there is none)."""
    fd = os.open(path, _OPEN_READ)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def write_all(fd: int, blob: bytes) -> None:
    view = memoryview(blob)
    while view:
        view = view[os.write(fd, view):]


def new_temp(directory: str, prefix: str) -> tuple[int, str]:
    """A new file with a random name in ``directory``, open for writing, mode 0600 (as
    ``tempfile.mkstemp``, without its per-call Python work: an existing name is simply
    drawn again)."""
    for _ in range(_TEMP_ATTEMPTS):
        path = os.path.join(directory, prefix + os.urandom(8).hex())
        try:
            return os.open(path, _OPEN_NEW, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")
