"""Reading the sessions Flask-Session wrote, so an app that switches keeps its users.

Where Flask-Session 0.8 keeps a session (``P`` is SESSION_KEY_PREFIX, default
``"session:"``; ``sid`` is the id in the cookie, or its unsigned part with
SESSION_USE_SIGNER):

- redis: key ``P + sid``; value: the payload; the key's TTL is the remaining life;
- sqlalchemy: table ``sessions`` (``id``, ``session_id`` = ``P + sid``, ``data`` = the
  payload, ``expiry`` = naive UTC datetime);
- mongodb: documents ``{id: P + sid, val: payload, expiration: UTC date}``;
- memcached: key ``P + sid``; value: the payload (memcached does not tell the remaining
  life, nor list its keys);
- dynamodb: items ``{id: P + sid, val: payload, expiration: N}`` (see legacy_dynamodb);
- filesystem / cachelib: the session dict handed to a cachelib cache, which pickles it
  (see legacy_cachelib).

The payload is the session dict (with ``_permanent`` when permanent) encoded by msgspec
as MessagePack or JSON (SESSION_SERIALIZATION_FORMAT). Flask-Session before 0.7 pickled
it, and 0.8 still reads such records. Pickle can run any code named in the data, so it
is recognised by its header and refused unless the caller allows it; even then it is
read by a loader that accepts plain data types only, and never while a request is served.

Because sessionkeeper keys a session by ``sha256(sid)`` and uses Flask-Session's
cookie format (and signature scheme), a migrated session is found under the very
cookie the browser already has.
"""

from __future__ import annotations

import enum
import io
import pickle
import pickletools
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

import msgspec

from .errors import SessionKeeperError, UnserializableValue
from .serialization import ValueCodec
from .server_side import ServerSideSessions
from .stores.base import SessionRecord, chunked

T = TypeVar("T")


class LegacyPickleData(SessionKeeperError):
    """A Flask-Session record is pickled; it is read only when explicitly allowed."""

    def __init__(self) -> None:
        super().__init__(
            "the record is pickled (Flask-Session before 0.7, or its filesystem/cachelib "
            "backend); pickle can run code, so it is read only when allowed "
            "(--allow-pickle), for data you trust"
        )


class UnreadableLegacyData(SessionKeeperError):
    """A Flask-Session record that cannot become a sessionkeeper session."""


class LegacySourceError(SessionKeeperError):
    """Flask-Session's records could not be listed or read (server down, wrong table)."""


# -- payloads ---------------------------------------------------------------------------
_PICKLE_PROTOCOLS = range(2, 6)


def is_pickle(blob: bytes) -> bool:
    """True when ``blob`` is a pickle, judged by its protocol header alone."""
    if len(blob) >= 2 and blob[0] == 0x80 and blob[1] in _PICKLE_PROTOCOLS:
        return True  # PROTO opcode: protocols 2 to 5
    # Protocols 0 and 1 have no header: a dict opens with MARK DICT "(d" or EMPTY_DICT
    # "}", and every pickle ends with STOP ".". Neither opening is valid JSON, and in
    # MessagePack both are one small integer followed by trailing bytes (invalid).
    return blob.endswith(b".") and (blob.startswith(b"(d") or blob.startswith(b"}"))


def pickle_opens_dict(blob: bytes) -> bool:
    """True when a pickle's top-level object is a plain dict, as Flask-Session's cachelib
    entries are. Judged from the first opcodes, which pickletools parses without running
    anything: sessionkeeper's own entries in a shared cache are bytes, never a dict."""
    opened = False
    try:
        for opcode, _, _ in pickletools.genops(bytes(blob)):
            if opcode.name in ("PROTO", "FRAME"):
                continue
            if opcode.name == "EMPTY_DICT":
                return not opened
            if opcode.name == "MARK" and not opened:
                opened = True  # protocol 0 writes a dict as MARK DICT
                continue
            return opened and opcode.name == "DICT"
    except (ValueError, EOFError):  # not a pickle, or a damaged one
        return False
    return False


_DECODERS = (msgspec.msgpack.Decoder(), msgspec.json.Decoder())


def _session_dict(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise UnreadableLegacyData("the record is not a session dict with string keys")
    return data


def decode_flask_session_payload(blob: bytes) -> dict[str, Any]:
    """The session dict in a Flask-Session payload (MessagePack or JSON), never unpickling.

    Values come back exactly as Flask-Session itself read them (its decoders are the same
    untyped msgspec ones). Raises :class:`LegacyPickleData` for a pickle and
    :class:`UnreadableLegacyData` for anything else that is not a session dict.
    """
    blob = bytes(blob)
    if is_pickle(blob):
        raise LegacyPickleData()
    for decoder in _DECODERS:  # Flask-Session also tries both, whatever its setting
        try:
            return _session_dict(decoder.decode(blob))
        except msgspec.DecodeError:
            continue
        except RecursionError:  # stored data nested past the interpreter's limit
            raise UnreadableLegacyData("the record is nested too deeply to read") from None
    raise UnreadableLegacyData("the record is neither MessagePack, JSON nor pickle")


#: the only globals a pickled session may name: plain value types sessions can hold
_PLAIN_GLOBALS = frozenset({
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"),
    ("datetime", "timezone"), ("datetime", "timedelta"), ("decimal", "Decimal"),
    ("builtins", "set"), ("builtins", "frozenset"),
    ("uuid", "UUID"), ("markupsafe", "Markup"), ("collections", "OrderedDict"),
})


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise UnreadableLegacyData(
            f"the pickled record refers to {module}.{name}, which is not plain session data")


def load_pickled_payload(blob: bytes) -> dict[str, Any]:
    """The session dict in a pickled record, for data the caller chose to trust.

    Only plain data types are resolved (see ``_PLAIN_GLOBALS``), so a pickle naming any
    other callable is refused instead of run.
    """
    try:
        data = _PlainDataUnpickler(io.BytesIO(bytes(blob))).load()
    except UnreadableLegacyData:
        raise
    except Exception as exc:  # a damaged pickle fails in many ways; all mean "unreadable"
        raise UnreadableLegacyData(f"the pickled record is damaged ({exc})") from exc
    return _session_dict(data)


def read_payload(blob: bytes, *, allow_pickle: bool = False) -> dict[str, Any]:
    """The session dict in any Flask-Session payload; pickle only when allowed."""
    try:
        return decode_flask_session_payload(blob)
    except LegacyPickleData:
        if not allow_pickle:
            raise
        return load_pickled_payload(blob)


# -- conversion -------------------------------------------------------------------------
def to_record(data: dict[str, Any], *, backend: ServerSideSessions, codec: ValueCodec,
              expires_at: float | None, now: float) -> SessionRecord:
    """A sessionkeeper record holding a Flask-Session dict, keeping its remaining life."""
    values = dict(data)
    permanent = bool(values.pop("_permanent", False))  # Flask's permanence flag, not data
    try:
        encoded = {key: codec.encode(value) for key, value in values.items()}
    except UnserializableValue as exc:
        raise UnreadableLegacyData(str(exc)) from exc
    policy = backend.policy
    if expires_at is None:  # stored without expiry: give it a full window from now
        expires_at = policy.expires_at(now, now)
    # Flask-Session reset the expiry to one lifetime at every save, so the last activity
    # was about one lifetime before it; that also stands in for the unknown creation.
    last_active = min(now, expires_at - policy.lifetime)
    expires_at = min(expires_at, policy.expires_at(last_active, now))
    return SessionRecord(values=encoded, created_at=last_active, accessed_at=last_active,
                         expires_at=expires_at, permanent=permanent)


# -- sources ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A stored Flask-Session record, listed but not read yet."""

    sid: str
    handle: Any  # what the source needs to read or delete it


@dataclass(frozen=True)
class LegacyEntry:
    sid: str
    handle: Any
    payload: bytes
    expires_at: float | None  # None: stored without an expiry
    #: stored where Flask-Session's records are, but not one of them (left alone)
    foreign: bool = False


class LegacySource(Protocol):
    """Where Flask-Session kept its sessions."""

    description: str

    def candidates(self) -> list[Candidate]:
        """Every record under the old prefix (cheap: ids only)."""

    def fetch(self, batch: Sequence[Candidate]) -> list[LegacyEntry]:
        """The payloads of a batch; records gone since listing are left out."""

    def delete(self, handles: Sequence[Any]) -> int:
        """Remove old records; returns how many."""


def _utc_epoch(moment: datetime | None) -> float:
    if moment is None:
        return 0.0  # Flask-Session treats a missing expiry as expired
    if moment.tzinfo is None:  # Flask-Session wrote datetime.utcnow()
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisSource:
    """Keys ``<prefix><sid>`` holding the payload, with a TTL."""

    def __init__(self, client: Any, prefix: str) -> None:
        from redis.exceptions import RedisError

        self.client = client
        self.prefix = prefix
        self.description = f"Redis keys {prefix + '*'!r}"
        self._errors = RedisError

    def candidates(self) -> list[Candidate]:
        found = []
        try:
            for key in self.client.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000):
                name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
                found.append(Candidate(name[len(self.prefix):], key))
        except self._errors as exc:
            raise LegacySourceError(f"cannot list {self.description}: {exc}") from exc
        return found

    def fetch(self, batch: Sequence[Candidate]) -> list[LegacyEntry]:
        pipe = self.client.pipeline(transaction=False)
        for candidate in batch:
            pipe.get(candidate.handle)
            pipe.pttl(candidate.handle)
        try:
            replies = pipe.execute(raise_on_error=False)
        except self._errors as exc:
            raise LegacySourceError(f"cannot read {self.description}: {exc}") from exc
        entries = []
        for candidate, value, pttl in zip(batch, replies[::2], replies[1::2], strict=True):
            if value is None or isinstance(value, Exception):
                continue  # gone, or not a plain string key (another tool's data)
            if isinstance(value, str):  # a client built with decode_responses=True
                value = value.encode("utf-8")
            ttl = pttl if isinstance(pttl, int) else -1
            expires_at = None if ttl < 0 else time.time() + ttl / 1000
            entries.append(LegacyEntry(candidate.sid, candidate.handle, value, expires_at))
        return entries

    def delete(self, handles: Sequence[Any]) -> int:
        removed = 0
        try:
            for batch in chunked(handles, 500):
                removed += int(self.client.delete(*batch))
        except self._errors as exc:
            raise LegacySourceError(f"cannot delete {self.description}: {exc}") from exc
        return removed

    def lookup(self, sid: str) -> LegacyEntry | None:
        """The record of one session id, or None (one GET and PTTL)."""
        entries = self.fetch([Candidate(sid, self.prefix + sid)])
        return entries[0] if entries else None

    def discard(self, handle: Any) -> None:
        self.delete([handle])


class SQLAlchemySource:
    """Flask-Session's table: ``id``, ``session_id`` (prefix + sid), ``data``, ``expiry``."""

    def __init__(self, engine: Any, *, table: str = "sessions", schema: str | None = None,
                 prefix: str = "session:") -> None:
        import sqlalchemy as sa

        self.engine = engine
        self.prefix = prefix
        self._sa = sa
        self.table = sa.Table(
            table, sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("session_id", sa.String(255)),
            sa.Column("data", sa.LargeBinary),
            sa.Column("expiry", sa.DateTime),
            schema=schema,
        )
        where = f"{schema}.{table}" if schema else table
        self.description = f"table {where!r} (session ids starting {prefix!r})"

    def _run(self, what: str, work: Callable[[Any], T]) -> T:
        try:
            with self.engine.begin() as connection:
                return work(connection)
        except self._sa.exc.SQLAlchemyError as exc:
            raise LegacySourceError(
                f"cannot {what} Flask-Session's {self.description}: {exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0]}") from exc

    def candidates(self) -> list[Candidate]:
        t = self.table
        escaped = self.prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = self._sa.select(t.c.id, t.c.session_id).where(
            t.c.session_id.like(escaped + "%", escape="\\"))
        rows = self._run("list", lambda c: c.execute(query).all())
        return [Candidate(row.session_id[len(self.prefix):], row.id) for row in rows]

    def fetch(self, batch: Sequence[Candidate]) -> list[LegacyEntry]:
        t = self.table
        by_id = {candidate.handle: candidate for candidate in batch}
        query = self._sa.select(t.c.id, t.c.data, t.c.expiry).where(t.c.id.in_(list(by_id)))
        rows = self._run("read", lambda c: c.execute(query).all())
        return [LegacyEntry(by_id[row.id].sid, row.id, bytes(row.data or b""),
                            _utc_epoch(row.expiry)) for row in rows]

    def delete(self, handles: Sequence[Any]) -> int:
        t = self.table
        removed = 0
        for batch in chunked(handles, 500):
            statement = self._sa.delete(t).where(t.c.id.in_(batch))

            def delete_batch(connection: Any, statement: Any = statement) -> int:
                return int(connection.execute(statement).rowcount)

            removed += self._run("delete from", delete_batch)
        return removed


class MongoDBSource:
    """Flask-Session's documents ``{id, val, expiration}`` (sessionkeeper's have no ``id``)."""

    def __init__(self, collection: Any, prefix: str = "session:") -> None:
        from pymongo.errors import PyMongoError

        self.collection = collection
        self.prefix = prefix
        self.description = f"MongoDB collection {collection.full_name!r} (ids starting {prefix!r})"
        self._errors = PyMongoError

    def _run(self, what: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except self._errors as exc:
            raise LegacySourceError(f"cannot {what} {self.description}: {exc}") from exc

    def candidates(self) -> list[Candidate]:
        query = {"id": {"$regex": "^" + re.escape(self.prefix)}}
        documents = self._run("list", lambda: list(self.collection.find(query, {"id": 1})))
        return [Candidate(d["id"][len(self.prefix):], d["_id"]) for d in documents]

    def fetch(self, batch: Sequence[Candidate]) -> list[LegacyEntry]:
        by_id = {candidate.handle: candidate for candidate in batch}
        documents = self._run("read", lambda: list(self.collection.find(
            {"_id": {"$in": list(by_id)}})))
        return [LegacyEntry(by_id[d["_id"]].sid, d["_id"], bytes(d.get("val") or b""),
                            _utc_epoch(d.get("expiration"))) for d in documents]

    def delete(self, handles: Sequence[Any]) -> int:
        return self._run("delete from", lambda: self.collection.delete_many(
            {"_id": {"$in": list(handles)}}).deleted_count)


# -- migrating --------------------------------------------------------------------------
class Outcome(enum.Enum):
    MIGRATED = "migrated"
    ALREADY_MIGRATED = "already migrated (left as is)"
    EXPIRED = "skipped, expired"
    PICKLED = "skipped, pickled (see --allow-pickle)"
    UNREADABLE = "skipped, unreadable or unsupported values"


#: outcomes whose old record may go: its session lives on in sessionkeeper, or is dead
DELETABLE = frozenset({Outcome.MIGRATED, Outcome.ALREADY_MIGRATED, Outcome.EXPIRED})

_STORAGE_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass
class MigrationReport:
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    #: why records were unreadable (never their ids: those are live credentials)
    reasons: Counter[str] = field(default_factory=Counter)
    #: keys under the old prefix that are not session ids this app accepts, and
    #: entries beside Flask-Session's that are not its sessions
    foreign: int = 0
    deleted: int = 0

    def add(self, outcome: Outcome, reason: str | None = None) -> None:
        self.outcomes[outcome] += 1
        if reason:
            self.reasons[reason] += 1


def accepts_sid(backend: ServerSideSessions, sid: str) -> bool:
    """True for an id this app would take from a cookie, and not one of its own store keys
    (sessionkeeper may share Flask-Session's prefix: its keys are 64 hex digits)."""
    return backend.ids.is_well_formed(sid) and not _STORAGE_KEY.fullmatch(sid)


def migrate_entry(entry: LegacyEntry, backend: ServerSideSessions, *, now: float,
                  allow_pickle: bool = False, dry_run: bool = False,
                  ) -> tuple[Outcome, str | None]:
    """Copy one Flask-Session record into the app's store under the same session id."""
    if entry.expires_at is not None and entry.expires_at <= now:
        return Outcome.EXPIRED, None
    key = backend.key(entry.sid)
    if backend.store.load(key, now) is not None:
        return Outcome.ALREADY_MIGRATED, None  # never overwrite newer sessionkeeper data
    try:
        data = read_payload(entry.payload, allow_pickle=allow_pickle)
        record = to_record(data, backend=backend, codec=backend.codec,
                           expires_at=entry.expires_at, now=now)
    except LegacyPickleData:
        return Outcome.PICKLED, None
    except UnreadableLegacyData as exc:
        return Outcome.UNREADABLE, str(exc)
    if not dry_run:
        backend.store.create(key, record)
    return Outcome.MIGRATED, None


def select_candidates(source: LegacySource, backend: ServerSideSessions,
                      ) -> tuple[list[Candidate], int]:
    """The records to migrate, and how many other keys share the old prefix."""
    listed = source.candidates()
    wanted = [c for c in listed if accepts_sid(backend, c.sid)]
    return wanted, len(listed) - len(wanted)


def migrate(source: LegacySource, backend: ServerSideSessions,
            candidates: Sequence[Candidate] | None = None, *, now: float,
            allow_pickle: bool = False, delete_old: bool = False, dry_run: bool = False,
            progress: Callable[[int], None] = lambda done: None,
            batch_size: int = 200) -> MigrationReport:
    """Copy every Flask-Session record of ``source`` into ``backend``'s store.

    ``candidates`` defaults to :func:`select_candidates`; ``progress(n)`` is called after
    each batch of ``n``. With ``delete_old`` the old records that were copied, were
    copied before, or had expired are removed; pickled and unreadable ones stay, and
    so do entries that are not Flask-Session's (counted in ``foreign``).
    """
    report = MigrationReport()
    if candidates is None:
        candidates, report.foreign = select_candidates(source, backend)
    deletable: list[Any] = []
    for batch in chunked(candidates, batch_size):
        for entry in source.fetch(batch):
            if entry.foreign:
                report.foreign += 1
                continue
            outcome, reason = migrate_entry(entry, backend, now=now,
                                            allow_pickle=allow_pickle, dry_run=dry_run)
            report.add(outcome, reason)
            if outcome in DELETABLE:
                deletable.append(entry.handle)
        progress(len(batch))
    if delete_old and not dry_run and deletable:
        report.deleted = source.delete(deletable)
    return report


# -- memcached: read one session at a time ---------------------------------------------
class LegacyLookup(Protocol):
    """Flask-Session's record of one session id, for sources read at request time."""

    description: str

    def lookup(self, sid: str) -> LegacyEntry | None:
        """The record, or None; raises LegacySourceError when the source is down."""

    def discard(self, handle: Any) -> None:
        """Remove a record that now lives in sessionkeeper."""


class MemcachedSource:
    """Keys ``<prefix><sid>`` holding the payload; the remaining life is not known.

    ``call`` runs an operation on a pymemcache client (the store's own call wrapper,
    which serialises a shared connection and reconnects after a fork).
    """

    def __init__(self, call: Callable[[Callable[[Any], Any]], Any], prefix: str) -> None:
        from pymemcache.exceptions import MemcacheClientError

        self.call = call
        self.prefix = prefix
        self.description = f"memcached keys {prefix + '<id>'!r}"
        self._refused = MemcacheClientError

    def lookup(self, sid: str) -> LegacyEntry | None:
        key = self.prefix + sid
        try:
            value = self.call(lambda client: client.get(key))
        except self._refused:
            return None  # a key memcached refuses (a prefix with spaces) was never stored
        if not value:
            return None
        # Flask-Session set a TTL of one lifetime at every save, but memcached cannot say
        # how much is left: None gives the session a full window from now.
        return LegacyEntry(sid, key, bytes(value), None)

    def discard(self, handle: Any) -> None:
        self.call(lambda client: client.delete(handle, noreply=False))
