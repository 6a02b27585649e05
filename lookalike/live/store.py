"""The journal of the live catalogue: one SQLite file, every change a row, acknowledged once on disk.

WAL mode with ``synchronous=FULL``: a commit fsyncs the write-ahead log before it returns, so an
acknowledged change survives a crash or a power cut, and a crash never leaves half a change.
Writers in several processes (``lookalike serve --workers N``) are serialised by SQLite's write
lock (``BEGIN IMMEDIATE``); seq numbers are the order every reader applies changes in.

Storage stays bounded: once a fold is in a published build, :meth:`LiveStore.compact` drops every
change that a later change of the same item superseded (their photos are most of the file) and
reclaims the space. The latest change of every item is kept, so the next fold, which is cumulative,
still sees the whole live set.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.live.records import (
    Change,
    JournalBusyError,
    LiveError,
    UnknownItemError,
)
from lookalike.live.sql_journal import Result, SqlJournal

SCHEMA_VERSION = 1
DURABILITY = {"journal_mode": "wal", "synchronous": 2}  # 2 = FULL: the WAL is fsynced at every commit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('put', 'remove')),
    item_id TEXT NOT NULL,
    build_id TEXT NOT NULL,
    model_key TEXT NOT NULL,
    embedding BLOB,
    metadata TEXT,
    image BLOB,
    content_type TEXT,
    created_at TEXT NOT NULL,
    CHECK ((op = 'put') = (embedding IS NOT NULL AND metadata IS NOT NULL AND image IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS changes_by_item ON changes (item_id, seq);
CREATE TABLE IF NOT EXISTS reembeddings (
    seq INTEGER NOT NULL REFERENCES changes(seq),
    model_key TEXT NOT NULL,
    embedding BLOB NOT NULL,
    PRIMARY KEY (seq, model_key)
);
CREATE TABLE IF NOT EXISTS change_photos (
    seq INTEGER NOT NULL REFERENCES changes(seq),
    position INTEGER NOT NULL CHECK (position >= 1),
    embedding BLOB NOT NULL,
    image BLOB NOT NULL,
    content_type TEXT NOT NULL,
    PRIMARY KEY (seq, position)
);
CREATE TABLE IF NOT EXISTS folds (
    fold_id TEXT PRIMARY KEY,
    through_seq INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS numeric_ids (
    item_id TEXT PRIMARY KEY,
    numeric_id INTEGER NOT NULL UNIQUE
);
"""


@dataclass
class Compaction:
    """What :meth:`LiveStore.compact` did: rows dropped and the file size before and after (bytes)."""

    through_seq: int
    changes_dropped: int
    changes_kept: int
    bytes_before: int
    bytes_after: int

    def line(self) -> str:
        return (f"compacted through change {self.through_seq}: {self.changes_dropped} superseded changes dropped, "
                f"{self.changes_kept} kept; {self.bytes_before / 1e6:.2f} MB -> {self.bytes_after / 1e6:.2f} MB")


class LiveStore(SqlJournal):
    """The append-only change log in SQLite (WAL, synchronous=FULL). Thread-safe, and safe across processes.

    ``readonly`` opens it for a reader beside the writing server (the search page): it never writes,
    and needs no write lock.
    """

    def __init__(self, path: str | Path, readonly: bool = False, busy_seconds: float = 30.0):
        self.path = Path(path)
        self.readonly = readonly
        self.busy_seconds = busy_seconds  # how long a write waits for the database's write lock
        self._local = threading.local()
        self._write_lock = threading.Lock()
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"no live catalogue database at {self.path}")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = self._connection()
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise LiveError(f"{self.path}: SQLite refused write-ahead logging (journal mode {mode}); "
                                "the live database needs a local filesystem")
            with self._transaction() as cursor:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cursor.execute(statement)
                cursor.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                               (str(SCHEMA_VERSION),))
                cursor.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)",
                               (hashlib.sha256(os.urandom(16)).hexdigest()[:16],))
        version = self._connection().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise LiveError(f"{self.path} is not a live catalogue database of schema version {SCHEMA_VERSION}")

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self.readonly:
                connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                             check_same_thread=False, timeout=self.busy_seconds)
                connection.execute("PRAGMA query_only=1")
            else:
                connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                             timeout=self.busy_seconds)
                connection.execute(f"PRAGMA synchronous={DURABILITY['synchronous']}")  # on disk before returning
                connection.execute("PRAGMA foreign_keys=ON")
            self._local.connection = connection
        return connection

    def durability(self) -> dict[str, object]:
        """The settings an acknowledged write relies on, as this process's connection has them."""
        connection = self._connection()
        return {"journal_mode": connection.execute("PRAGMA journal_mode").fetchone()[0].lower(),
                "synchronous": int(connection.execute("PRAGMA synchronous").fetchone()[0])}

    class _Tx:
        def __init__(self, connection: sqlite3.Connection):
            self.connection = connection

        def __enter__(self) -> sqlite3.Cursor:
            try:
                self.connection.execute("BEGIN IMMEDIATE")  # waits up to the busy timeout for the write lock
            except sqlite3.OperationalError as error:
                if "locked" in str(error) or "busy" in str(error):
                    raise JournalBusyError(f"the live database is busy (compaction or another writer held it over "
                                           f"the wait): {error}") from None
                raise
            return self.connection.cursor()

        def __exit__(self, kind, value, traceback) -> None:
            self.connection.execute("COMMIT" if kind is None else "ROLLBACK")

    def _transaction(self) -> LiveStore._Tx:
        if self.readonly:
            raise LiveError("the live catalogue is open read-only")
        return LiveStore._Tx(self._connection())

    def _read(self, work: Callable[[sqlite3.Cursor], Result]) -> Result:
        return work(self._connection().cursor())

    def _write(self, work: Callable[[sqlite3.Cursor], Result], serialise: bool = True) -> Result:
        """``work`` in one transaction, committed (and on disk) on return. Every write is serial here:
        ``BEGIN IMMEDIATE`` takes the database's one write lock, whatever ``serialise`` says."""
        with self._write_lock, self._transaction() as cursor:
            return work(cursor)

    def _lock_meta(self, cursor: sqlite3.Cursor) -> None:
        """Nothing to take: the write transaction already holds the database's one write lock."""

    @property
    def store_id(self) -> str:
        """Names this database (kept by backups): a build's fold marker says which database it folded."""
        return self._connection().execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]

    def changes_after(self, seq: int, through: int | None = None) -> Iterator[Change]:
        """Every change with a larger seq (up to ``through``), in order (images not loaded)."""
        rows = self._connection().execute(
            "SELECT seq, op, item_id, build_id, model_key, embedding, metadata, content_type, created_at"
            " FROM changes WHERE seq > ? AND seq <= ? ORDER BY seq",
            (int(seq), int(through) if through is not None else 2**62)).fetchall()
        more: dict[int, list[np.ndarray]] = {}
        for seq_, blob in self._connection().execute(
                "SELECT seq, embedding FROM change_photos WHERE seq > ? AND seq <= ? ORDER BY seq, position",
                (int(seq), int(through) if through is not None else 2**62)):
            more.setdefault(int(seq_), []).append(np.frombuffer(blob, dtype="<f4").astype(np.float32))
        for seq_, op, item_id, build_id, key, blob, text, content_type, created in rows:
            yield Change(seq_, op, item_id, build_id, key,
                         None if blob is None else np.frombuffer(blob, dtype="<f4").astype(np.float32),
                         None if text is None else json.loads(text), content_type, created,
                         np.array(more[seq_], np.float32) if seq_ in more else None)

    def last_seq(self) -> int:
        """The newest change's seq (compaction never drops it: it is its item's latest change)."""
        row = self._connection().execute("SELECT MAX(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    def count_after(self, seq: int) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM changes WHERE seq > ?", (seq,)).fetchone()[0])

    def image(self, seq: int) -> tuple[bytes, str]:
        row = self._connection().execute("SELECT image, content_type FROM changes WHERE seq = ?",
                                         (int(seq),)).fetchone()
        if row is None or row[0] is None:
            raise UnknownItemError(f"no stored image for change {seq}")
        return bytes(row[0]), str(row[1])

    def more_images(self, seq: int) -> list[tuple[bytes, str]]:
        """A put's other photos (image bytes, content type), in order; none for a put of one photo."""
        rows = self._connection().execute("SELECT image, content_type FROM change_photos WHERE seq = ? "
                                          "ORDER BY position", (int(seq),)).fetchall()
        return [(bytes(image), str(kind)) for image, kind in rows]

    def reembedding(self, seq: int, key: str) -> np.ndarray | None:
        """The change's photos embedded by another model, cached: (dim,) for one photo, (1 + m, dim) for
        several (saved as one blob of their rows)."""
        row = self._connection().execute("SELECT embedding FROM reembeddings WHERE seq = ? AND model_key = ?",
                                         (seq, key)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype="<f4").astype(np.float32)

    # ---------------------------------------------------------------- folds and compaction

    def compact(self, through_seq: int) -> Compaction:
        """Drop every change up to ``through_seq`` that a later change of its item superseded, with its photo
        and cached re-embeddings; then VACUUM and truncate the WAL so the file shrinks on disk.

        Call it only with the ``through_seq`` of a fold that a published build holds (``lookalike compact``
        reads it from the build): the replay after that build starts after it anyway.
        """
        before = self.size_bytes()
        with self._write_lock:  # no writer of this process between the rows' transaction and the VACUUM
            with self._transaction() as cursor:
                dropped = self._drop_superseded(cursor, through_seq)
            connection = self._connection()
            connection.execute("VACUUM")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        kept = self._kept()
        return Compaction(int(through_seq), int(dropped), kept, before, self.size_bytes())

    def size_bytes(self) -> int:
        """The database on disk: the main file and its write-ahead log."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal"))
                   if p.exists())

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
