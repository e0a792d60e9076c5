"""The demo's user table: the tutorials' accounts, checked in constant time.

The accounts themselves are fixed; passwords changed on the ``/password`` page are kept,
hashed, in a small SQLite file so every worker process of the server sees them. The file
is created by the first change only: a demo whose passwords were never changed writes
nothing.
"""

from __future__ import annotations

import hmac
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128  # hashing megabytes of "password" is a cheap denial of service
_BUSY_TIMEOUT = 10.0  # seconds a write waits for the other worker's write
_SCHEMA = "CREATE TABLE IF NOT EXISTS passwords (uid TEXT PRIMARY KEY, hash TEXT NOT NULL)"


@dataclass(frozen=True)
class DemoUser:
    uid: str
    username: str
    password: str  # the initial one, until it is changed


#: Tom/123 is the account of the tutorials' login example; laowang's uid is theirs too.
USERS = {
    user.username: user
    for user in (
        DemoUser(uid="1", username="Tom", password="123"),
        DemoUser(uid="123456", username="laowang", password="123"),
    )
}
USERS_BY_UID = {user.uid: user for user in USERS.values()}


class PasswordFile:
    """Hashes of changed passwords, by uid, in a SQLite file shared by all workers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None)
        connection.execute(_SCHEMA)
        return connection

    def _create_private(self) -> None:
        """The file exists and only its owner can read it: password hashes are secrets.

        SQLite would create it with the umask's mode (often 0644, world-readable); its
        journal and WAL files take the database file's mode. An older file is tightened.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(self.path, 0o600)

    def hash_for(self, uid: str) -> str | None:
        """The hash of ``uid``'s changed password, or None while it is the initial one."""
        if not self.path.exists():
            return None
        with closing(self._connect()) as connection:
            row = connection.execute("SELECT hash FROM passwords WHERE uid = ?",
                                     (uid,)).fetchone()
        return str(row[0]) if row else None

    def store(self, uid: str, password_hash: str) -> None:
        self._create_private()
        with closing(self._connect()) as connection:
            connection.execute("INSERT OR REPLACE INTO passwords (uid, hash) VALUES (?, ?)",
                               (uid, password_hash))


class Accounts:
    """Checks and changes the demo users' passwords."""

    def __init__(self, passwords: PasswordFile) -> None:
        self.passwords = passwords

    def authenticate(self, username: str, password: str) -> DemoUser | None:
        """The user these credentials belong to, or None."""
        user = USERS.get(username)
        return user if user is not None and self.password_matches(user, password) else None

    def password_matches(self, user: DemoUser | None, password: str) -> bool:
        if len(password) > MAX_PASSWORD_LENGTH:
            return False
        stored = self.passwords.hash_for(user.uid) if user else None
        if stored is not None:
            return check_password_hash(stored, password)
        # Compare anyway when the name is unknown, so timing does not reveal which names exist.
        expected = user.password if user else "\0"
        return hmac.compare_digest(password.encode(), expected.encode()) and user is not None

    def change_password(self, user: DemoUser, new_password: str) -> None:
        self.passwords.store(user.uid, generate_password_hash(new_password))


def password_problem(current_ok: bool, new: str, confirmation: str) -> str | None:
    """Why a password change cannot be made, or None when it can."""
    if not current_ok:
        return "Your current password is not right."
    if len(new) < MIN_PASSWORD_LENGTH:
        return f"The new password needs at least {MIN_PASSWORD_LENGTH} characters."
    if len(new) > MAX_PASSWORD_LENGTH:
        return f"The new password can have at most {MAX_PASSWORD_LENGTH} characters."
    if new != confirmation:
        return "The new password and its confirmation differ."
    return None
