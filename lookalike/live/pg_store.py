"""The journal of the live catalogue in PostgreSQL: one database that several servers share.

SQLite's journal (:mod:`lookalike.live.store`) is one file on one machine; replicas of the service on
other machines need a journal they all reach. :class:`PostgresStore` has the same methods, answers and
errors as :class:`lookalike.live.store.LiveStore`, so the live catalogue, folds and compaction run on
either; :func:`lookalike.live.journal.open_journal` picks one from ``--live-db`` / ``$LOOKALIKE_LIVE_DB``.

- Durable: every connection runs with ``synchronous_commit=on`` and a writer refuses a server with
  ``fsync=off``, so a write is acknowledged only once its commit record is flushed to the server's WAL.
- Ordered: every writing transaction first takes ``LOCK TABLE changes IN EXCLUSIVE MODE`` (plain reads
  go on), so writers in every replica are serialised, an item's existence is decided under that lock,
  and seqs are committed in seq order: a follower reading ``changes_after(applied)`` never skips a seq
  that commits later with a smaller number.
- Unreachable is retryable: a connection refused, a server shut down, a lock not granted within
  ``busy_seconds`` raise :class:`lookalike.live.records.JournalBusyError` (the service answers 503 with
  Retry-After), for reads as for writes; the next call connects again.

psycopg is imported only when a store is opened, so nothing that uses SQLite needs it installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from lookalike.live.journal import is_database_url
from lookalike.live.records import (
    Change,
    JournalBusyError,
    LiveError,
    UnknownItemError,
)
from lookalike.live.sql_journal import SqlJournal
from lookalike.live.store import Compaction

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("lookalike.live")
Result = TypeVar("Result")

SCHEMA_VERSION = 1
DURABILITY = {"synchronous_commit": "on", "fsync": "on"}  # what an acknowledged write relies on
# libpq settings a URL may override: a server that is down or cut off fails a call within about a minute
CONNECT_DEFAULTS = {"connect_timeout": "10", "application_name": "lookalike", "keepalives": "1",
                    "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3",
                    "tcp_user_timeout": "60000"}
SCHEMA_LOCK_KEY = 7_362_148_019  # pg_advisory_xact_lock key: replicas starting together create the schema once
TABLES = ("meta", "changes", "change_photos", "reembeddings", "folds", "numeric_ids")
NO_UPPER_BOUND = 2**62

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS changes (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        op TEXT NOT NULL CHECK (op IN ('put', 'remove')),
        item_id TEXT NOT NULL,
        build_id TEXT NOT NULL,
        model_key TEXT NOT NULL,
        embedding BYTEA,
        metadata TEXT,
        image BYTEA,
        content_type TEXT,
        created_at TEXT NOT NULL,
        CHECK ((op = 'put') = (embedding IS NOT NULL AND metadata IS NOT NULL AND image IS NOT NULL))
    )""",
    "CREATE INDEX IF NOT EXISTS changes_by_item ON changes (item_id, seq)",
    """CREATE TABLE IF NOT EXISTS reembeddings (
        seq BIGINT NOT NULL REFERENCES changes(seq),
        model_key TEXT NOT NULL,
        embedding BYTEA NOT NULL,
        PRIMARY KEY (seq, model_key)
    )""",
    """CREATE TABLE IF NOT EXISTS change_photos (
        seq BIGINT NOT NULL REFERENCES changes(seq),
        position INTEGER NOT NULL CHECK (position >= 1),
        embedding BYTEA NOT NULL,
        image BYTEA NOT NULL,
        content_type TEXT NOT NULL,
        PRIMARY KEY (seq, position)
    )""",
    """CREATE TABLE IF NOT EXISTS folds (
        fold_id TEXT PRIMARY KEY,
        through_seq BIGINT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS numeric_ids (
        item_id TEXT PRIMARY KEY,
        numeric_id BIGINT NOT NULL UNIQUE
    )""",
)


class JournalAddress(str):
    """The database URL without its password: what logs and error messages print (``.name`` as a path has)."""

    @property
    def name(self) -> str:
        return str(self)

    @classmethod
    def of(cls, url: str) -> JournalAddress:
        parts = urlsplit(url.strip())
        netloc = parts.netloc
        if "@" in netloc:
            credentials, _, hosts = netloc.rpartition("@")
            netloc = f"{credentials.split(':', 1)[0]}@{hosts}"
        query = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("password="))
        return cls(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def _psycopg():
    """psycopg, imported when a PostgreSQL journal is opened (a SQLite deployment does not need it)."""
    try:
        import psycopg
    except ImportError as error:
        raise LiveError("a postgresql:// live database needs psycopg: pip install 'psycopg[binary]'") from error
    return psycopg


class PostgresStore(SqlJournal):
    """The append-only change log in PostgreSQL, shared by every process and replica that opens the same URL.
    Thread-safe: threads borrow connections from a small pool (at most ``max_connections`` per store).

    ``readonly`` opens it for a reader beside the writing servers (the search page): its sessions are read-only,
    and it refuses a database holding no journal (:class:`FileNotFoundError`, as LiveStore does for a missing file).
    """

    PARAM = "%s"

    def __init__(self, url: str, readonly: bool = False, busy_seconds: float = 30.0, max_connections: int = 8):
        if not is_database_url(url):
            raise LiveError(f"not a PostgreSQL URL (postgresql://...): {JournalAddress.of(url)}")
        self._pg = _psycopg()
        self._url = url.strip()
        self.path = JournalAddress.of(self._url)
        self.readonly = readonly
        self.busy_seconds = busy_seconds  # how long a write waits for the journal's write lock, or a connection
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[psycopg.Connection] = []
        self._slots = threading.BoundedSemaphore(max_connections)
        self._store_id: str | None = None
        self._busy_errors = (self._pg.OperationalError, self._pg.errors.ReadOnlySqlTransaction)
        if readonly:
            if not self._read(lambda cursor: cursor.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]):
                raise FileNotFoundError(f"no live catalogue database at {self.path}")
        else:
            settings = self.durability()
            if settings["fsync"] != "on":
                raise LiveError(f"{self.path}: the server runs with fsync={settings['fsync']}; an acknowledged "
                                "live change would not survive a crash. The live journal needs fsync=on")
            self._write(self._create_schema, serialise=False)
        version = self._read(lambda cursor: cursor.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchone())
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise LiveError(f"{self.path} is not a live catalogue database of schema version {SCHEMA_VERSION}")

    @staticmethod
    def _create_schema(cursor: psycopg.Cursor) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        present = cursor.execute("SELECT bool_and(to_regclass(name) IS NOT NULL) FROM unnest(%s::text[]) AS name",
                                 (list(TABLES),)).fetchone()[0]
        for statement in () if present else _SCHEMA:  # made once: later writers need no CREATE privilege
            cursor.execute(statement)
        cursor.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s) ON CONFLICT DO NOTHING",
                       (str(SCHEMA_VERSION),))
        cursor.execute("INSERT INTO meta (key, value) VALUES ('store_id', %s) ON CONFLICT DO NOTHING",
                       (hashlib.sha256(os.urandom(16)).hexdigest()[:16],))

    # ---------------------------------------------------------------- connections and transactions

    def _connect(self) -> psycopg.Connection:
        params = {**CONNECT_DEFAULTS, **self._pg.conninfo.conninfo_to_dict(self._url)}
        try:
            connection = self._pg.connect(self._pg.conninfo.make_conninfo(**params), autocommit=True)
        except self._busy_errors as error:
            raise JournalBusyError(f"cannot reach the live database {self.path}: {error}") from error
        try:
            connection.execute(f"SET synchronous_commit = {DURABILITY['synchronous_commit']}")
            if self.readonly:
                connection.execute("SET default_transaction_read_only = on")
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def _borrowed(self) -> Iterator[tuple[psycopg.Connection, bool]]:
        """A connection for one call, and whether it sat idle in the pool (the server may have dropped it since).
        A thread never holds two at once, so the pool's bound cannot deadlock."""
        if not self._slots.acquire(timeout=self.busy_seconds):
            raise JournalBusyError(f"every connection to the live database {self.path} stayed busy for "
                                   f"{self.busy_seconds:.0f} s")
        connection = None
        try:
            with self._pool_lock:
                connection = self._idle.pop() if self._idle else None
            reused = connection is not None
            if connection is None:
                connection = self._connect()
            yield connection, reused
        finally:
            if connection is not None and not connection.closed:
                if connection.info.transaction_status == self._pg.pq.TransactionStatus.IDLE:
                    with self._pool_lock:
                        self._idle.append(connection)
                else:
                    connection.close()
            self._slots.release()

    def _lost(self, connection: psycopg.Connection) -> None:
        """The server dropped ``connection`` (a restart, an outage): every idle one is as stale; all are closed."""
        connection.close()
        with self._pool_lock:
            stale, self._idle = self._idle, []
        for other in stale:
            other.close()

    def _failed(self, connection: psycopg.Connection) -> bool:
        """After an error: True when the connection is gone (then so are the idle ones); else its failed
        transaction, if any, is rolled back and it stays usable (a lock not granted in time, a timeout)."""
        if connection.broken or connection.closed:
            self._lost(connection)
            return True
        self._roll_back(connection)
        return connection.closed

    def _read(self, work: Callable[[psycopg.Cursor], Result]) -> Result:
        """``work`` on a cursor of a pooled connection (autocommit); once more on a new connection when the
        pooled one had been dropped by the server while idle (reads change nothing: safe to repeat)."""
        for attempt in (1, 2):
            with self._borrowed() as (connection, reused):
                try:
                    with connection.cursor() as cursor:
                        return work(cursor)
                except self._busy_errors as error:
                    if self._failed(connection) and reused and attempt == 1:
                        continue
                    raise JournalBusyError(f"the live database {self.path} cannot be read now: {error}") from error
        raise AssertionError("unreachable")

    def _write(self, work: Callable[[psycopg.Cursor], Result], serialise: bool = True) -> Result:
        """``work`` in one transaction, committed (and on disk) on return. ``serialise``: first take the write
        lock every writer of every replica takes, so writers run one at a time and commit in seq order. Nothing
        is written when it raises; only a connection lost during COMMIT itself leaves the outcome unknown."""
        if self.readonly:
            raise LiveError("the live catalogue is open read-only")
        with self._write_lock:
            for attempt in (1, 2):
                with self._borrowed() as (connection, reused):
                    try:
                        connection.execute("BEGIN")
                    except self._busy_errors as error:  # nothing sent but BEGIN: safe to try a new connection
                        if self._failed(connection) and reused and attempt == 1:
                            continue
                        raise JournalBusyError(f"the live database {self.path} cannot take writes now: "
                                               f"{error}") from error
                    try:
                        with connection.cursor() as cursor:
                            if serialise:
                                cursor.execute(f"SET LOCAL lock_timeout = '{int(self.busy_seconds * 1000)}ms'")
                                cursor.execute("LOCK TABLE changes IN EXCLUSIVE MODE")
                            result = work(cursor)
                        connection.execute("COMMIT")
                    except self._busy_errors as error:
                        self._failed(connection)  # rolled back, or gone with the connection: nothing written
                        raise JournalBusyError(f"the live database {self.path} cannot take writes now (another "
                                               f"writer held it over the wait, or it is unreachable): "
                                               f"{error}") from error
                    except BaseException:
                        self._roll_back(connection)
                        raise
                    return result
        raise AssertionError("unreachable")

    def _lock_meta(self, cursor: psycopg.Cursor) -> None:
        """Meta writes skip the changes' lock (``serialise=False``): a read-then-write of meta takes its own."""
        cursor.execute("LOCK TABLE meta IN EXCLUSIVE MODE")

    def _roll_back(self, connection: psycopg.Connection) -> None:
        """End a failed transaction; a connection that cannot even roll back is dropped (its transaction with it)."""
        try:
            if not connection.closed and connection.info.transaction_status != self._pg.pq.TransactionStatus.IDLE:
                connection.execute("ROLLBACK")
        except self._busy_errors:
            self._lost(connection)

    def durability(self) -> dict[str, object]:
        """The settings an acknowledged write relies on, as this store's connections have them."""
        rows = self._read(lambda cursor: cursor.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('synchronous_commit', 'fsync', 'full_page_writes', 'wal_sync_method')").fetchall())
        return {"backend": "postgresql", **{name: setting for name, setting in sorted(rows)}}

    @property
    def store_id(self) -> str:
        """Names this database (kept by backups): a build's fold marker says which database it folded."""
        if self._store_id is None:
            self._store_id = self._read(lambda cursor: cursor.execute(
                "SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0])
        return self._store_id

    # ---------------------------------------------------------------- the change log

    def changes_after(self, seq: int, through: int | None = None) -> Iterator[Change]:
        """Every change with a larger seq (up to ``through``), in order (images not loaded); read in one
        snapshot, so a change and its other photos are seen together."""
        bounds = (int(seq), int(through) if through is not None else NO_UPPER_BOUND)

        def read(cursor: psycopg.Cursor) -> tuple[list[tuple], list[tuple]]:
            with cursor.connection.transaction():
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                rows = cursor.execute(
                    "SELECT seq, op, item_id, build_id, model_key, embedding, metadata, content_type, created_at"
                    " FROM changes WHERE seq > %s AND seq <= %s ORDER BY seq", bounds).fetchall()
                photos = cursor.execute("SELECT seq, embedding FROM change_photos WHERE seq > %s AND seq <= %s"
                                        " ORDER BY seq, position", bounds).fetchall()
            return rows, photos

        rows, photos = self._read(read)
        more: dict[int, list[np.ndarray]] = {}
        for seq_, blob in photos:
            more.setdefault(int(seq_), []).append(np.frombuffer(blob, dtype="<f4").astype(np.float32))
        for seq_, op, item_id, build_id, key, blob, text, content_type, created in rows:
            yield Change(int(seq_), op, item_id, build_id, key,
                         None if blob is None else np.frombuffer(blob, dtype="<f4").astype(np.float32),
                         None if text is None else json.loads(text), content_type, created,
                         np.array(more[seq_], np.float32) if seq_ in more else None)

    def last_seq(self) -> int:
        """The newest change's seq (compaction never drops it: it is its item's latest change)."""
        return int(self._read(lambda cursor: cursor.execute("SELECT MAX(seq) FROM changes").fetchone()[0]) or 0)

    def count_after(self, seq: int) -> int:
        return int(self._read(lambda cursor: cursor.execute(
            "SELECT COUNT(*) FROM changes WHERE seq > %s", (int(seq),)).fetchone()[0]))

    def image(self, seq: int) -> tuple[bytes, str]:
        row = self._read(lambda cursor: cursor.execute(
            "SELECT image, content_type FROM changes WHERE seq = %s", (int(seq),)).fetchone())
        if row is None or row[0] is None:
            raise UnknownItemError(f"no stored image for change {seq}")
        return bytes(row[0]), str(row[1])

    def more_images(self, seq: int) -> list[tuple[bytes, str]]:
        """A put's other photos (image bytes, content type), in order; none for a put of one photo."""
        rows = self._read(lambda cursor: cursor.execute(
            "SELECT image, content_type FROM change_photos WHERE seq = %s ORDER BY position", (int(seq),)).fetchall())
        return [(bytes(image), str(kind)) for image, kind in rows]

    def reembedding(self, seq: int, key: str) -> np.ndarray | None:
        """The change's photos embedded by another model, cached: (dim,) for one photo, (1 + m, dim) for
        several (saved as one blob of their rows)."""
        row = self._read(lambda cursor: cursor.execute(
            "SELECT embedding FROM reembeddings WHERE seq = %s AND model_key = %s", (int(seq), key)).fetchone())
        return None if row is None else np.frombuffer(row[0], dtype="<f4").astype(np.float32)

    # ---------------------------------------------------------------- folds and compaction

    def compact(self, through_seq: int) -> Compaction:
        """Drop every change up to ``through_seq`` that a later change of its item superseded, with its photos
        and cached re-embeddings; then a plain VACUUM, which makes their space reusable without blocking
        readers or writers (``VACUUM FULL``, which gives it back to the disk, locks the tables: an operator's
        call at a quiet hour).

        Call it only with the ``through_seq`` of a fold that a published build holds (``lookalike compact``
        reads it from the build): the replay after that build starts after it anyway.
        """
        before = self.size_bytes()
        dropped = self._write(lambda cursor: self._drop_superseded(cursor, through_seq))
        try:
            self._read(lambda cursor: cursor.execute("VACUUM (ANALYZE) changes, change_photos, reembeddings"))
        except JournalBusyError as error:  # the rows are gone either way; autovacuum reclaims them later
            log.warning("compaction of %s: VACUUM failed, autovacuum will reclaim the space: %s", self.path, error)
        return Compaction(int(through_seq), dropped, self._kept(), before, self.size_bytes())

    def size_bytes(self) -> int:
        """The journal's tables on the server: rows, photos (TOAST) and indexes."""
        return int(self._read(lambda cursor: cursor.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(to_regclass(name))), 0) FROM unnest(%s::text[]) AS name",
            (list(TABLES),)).fetchone()[0]))

    def close(self) -> None:
        """Close the idle connections (a later call connects again, as LiveStore's does)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
