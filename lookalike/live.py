"""The live catalogue: the pinned build plus the shop's acknowledged changes, searchable at once.

    catalogue = LiveCatalogue.load()                    # pinned build + every change in live/live.db
    catalogue.put("SKU-1", image_bytes, {"articleType": "Tshirts", ...})   # durable, then searchable
    catalogue.remove("15970")                           # never in any result again
    catalogue.search(image_bytes, k=5, filters={"gender": ["Men"]})
    catalogue.similar("SKU-1", k=5)
    catalogue.browse_ids({"gender": ["Men"]})           # every item, live ones first (the page's grid)

Storage (:class:`LiveStore`): one SQLite file in WAL mode with ``synchronous=FULL``. Every change
is one row of an append-only log (``changes``: seq, op put/remove, item id, the build and model it
was made against, the embedding, metadata JSON, image bytes and type), written in one transaction
that is committed (on disk) before the call returns, so an acknowledged change survives a crash
and a crash never leaves half an item. Writes go through one lock, so concurrent writers are all
applied in seq order and the in-memory state always equals the log replayed in order.

Search: the pinned build's FAISS index is never modified. Removed or replaced build items are
tombstones that a FAISS id selector excludes from the build search (every index type; see
:func:`lookalike.index.search`), live items live in an in-memory ``IndexIDMap2(IndexFlatIP)``,
and the two result lists are merged by score.

Start-up replays the log after the last change already folded into the pinned build (see
:mod:`lookalike.fold`). A change embedded with another model than the pinned one (the model was
retrained under live items) is re-embedded from its stored image with the pinned model, and that
vector is cached in the database, so every item is always scored by one model.

Ids: a shop's ids are its own strings (``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``); a build item's id is
its decimal id, or the ``external_id`` a fold gave it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

from lookalike import artifacts
from lookalike.catalogue import EXTERNAL_ID_COLUMN
from lookalike.index import search as index_search
from lookalike.params import PROJECT_ROOT
from lookalike.preprocessing import DEFAULT_MAX_BYTES, ImageSource, InvalidImageError
from lookalike.search import FILTER_COLUMNS, Searcher

log = logging.getLogger(__name__)

DEFAULT_DB = Path("live/live.db")  # under the project root
DB_ENV = "LOOKALIKE_LIVE_DB"
ITEM_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
METADATA_FIELDS = ("productDisplayName", "articleType", "baseColour", "gender", "masterCategory", "subCategory",
                   "season", "year", "usage")
MAX_FIELD_CHARS = 200
SCHEMA_VERSION = 1

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
CREATE TABLE IF NOT EXISTS reembeddings (
    seq INTEGER NOT NULL REFERENCES changes(seq),
    model_key TEXT NOT NULL,
    embedding BLOB NOT NULL,
    PRIMARY KEY (seq, model_key)
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


class LiveError(ValueError):
    """A change or query the caller got wrong (bad id, bad metadata); the message says what."""


class UnknownItemError(KeyError):
    """No item with that id in the live catalogue (never added, or removed)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown item"


def validate_item_id(item_id: object) -> str:
    if not isinstance(item_id, str) or not ITEM_ID_PATTERN.fullmatch(item_id):
        raise LiveError("an item id is 1-128 characters: letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit")
    return item_id


def validate_metadata(metadata: dict, required: tuple[str, ...] = ("articleType",)) -> dict[str, str]:
    """Known fields only, text without control characters, at most MAX_FIELD_CHARS each; ``required`` non-empty."""
    unknown = sorted(set(metadata) - set(METADATA_FIELDS))
    if unknown:
        raise LiveError(f"unknown metadata field(s) {', '.join(map(repr, unknown))}; "
                        f"known: {', '.join(METADATA_FIELDS)}")
    clean = {}
    for name, value in metadata.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise LiveError(f"metadata field {name!r} must be text")
        value = value.strip()
        if len(value) > MAX_FIELD_CHARS:
            raise LiveError(f"metadata field {name!r} is {len(value)} characters; the limit is {MAX_FIELD_CHARS}")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise LiveError(f"metadata field {name!r} contains control characters")
        if name == "year" and value and not (value.isdigit() and len(value) == 4):
            raise LiveError("metadata field 'year' must be a four-digit year")
        clean[name] = value
    for name in required:
        if not clean.get(name):
            raise LiveError(f"metadata field {name!r} is required")
    return clean


def model_key(manifest: dict) -> str:
    """Identifies the embedding function: the model file's hash and the preprocessing it expects."""
    text = json.dumps({"model": manifest["files"]["model"]["sha256"],
                       "preprocess": manifest["params"]["preprocess"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifest_build_id(manifest: dict) -> str:
    """The pinned build's id (:func:`lookalike.artifacts.build_id`)."""
    return str(manifest.get("build_id") or artifacts.build_id(manifest))


def resolve_db_path(db: str | Path | None, root: Path = PROJECT_ROOT) -> Path:
    db = db or os.environ.get(DB_ENV) or DEFAULT_DB
    path = Path(db)
    return path if path.is_absolute() else root / path


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Change:
    seq: int
    op: str  # "put" | "remove"
    item_id: str
    build_id: str
    model_key: str
    embedding: np.ndarray | None
    metadata: dict | None
    content_type: str | None
    created_at: str


class LiveStore:
    """The append-only change log in SQLite (WAL, synchronous=FULL). Thread-safe.

    ``readonly`` opens it for a reader beside the writing server (the search page): it never writes,
    and needs no write lock.
    """

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._local = threading.local()
        self._write_lock = threading.Lock()
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"no live catalogue database at {self.path}")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = self._connection()
            connection.execute("PRAGMA journal_mode=WAL")
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
                                             check_same_thread=False, timeout=30)
                connection.execute("PRAGMA query_only=1")
            else:
                connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
                connection.execute("PRAGMA synchronous=FULL")  # a commit is on disk before it returns
                connection.execute("PRAGMA foreign_keys=ON")
            self._local.connection = connection
        return connection

    class _Tx:
        def __init__(self, connection: sqlite3.Connection):
            self.connection = connection

        def __enter__(self) -> sqlite3.Cursor:
            self.connection.execute("BEGIN IMMEDIATE")
            return self.connection.cursor()

        def __exit__(self, kind, value, traceback) -> None:
            self.connection.execute("COMMIT" if kind is None else "ROLLBACK")

    def _transaction(self) -> LiveStore._Tx:
        if self.readonly:
            raise LiveError("the live catalogue is open read-only")
        return LiveStore._Tx(self._connection())

    @property
    def store_id(self) -> str:
        return self._connection().execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]

    def append(self, op: str, item_id: str, build_id: str, key: str, embedding: np.ndarray | None = None,
               metadata: dict | None = None, image: bytes | None = None,
               content_type: str | None = None) -> Change:
        """Append one change in its own transaction; on return it is committed to disk."""
        blob = None if embedding is None else np.ascontiguousarray(embedding, dtype="<f4").tobytes()
        text = None if metadata is None else json.dumps(metadata, sort_keys=True)
        created = _now()
        with self._write_lock, self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO changes (op, item_id, build_id, model_key, embedding, metadata, image, content_type,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (op, item_id, build_id, key, blob, text, image, content_type, created))
            seq = int(cursor.lastrowid)
        return Change(seq, op, item_id, build_id, key,
                      None if embedding is None else np.asarray(embedding, np.float32), metadata, content_type,
                      created)

    def changes_after(self, seq: int) -> Iterator[Change]:
        """Every change with a larger seq, in order (images not loaded)."""
        rows = self._connection().execute(
            "SELECT seq, op, item_id, build_id, model_key, embedding, metadata, content_type, created_at"
            " FROM changes WHERE seq > ? ORDER BY seq", (int(seq),))
        for seq_, op, item_id, build_id, key, blob, text, content_type, created in rows:
            yield Change(seq_, op, item_id, build_id, key,
                         None if blob is None else np.frombuffer(blob, dtype="<f4").astype(np.float32),
                         None if text is None else json.loads(text), content_type, created)

    def last_seq(self) -> int:
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

    def reembedding(self, seq: int, key: str) -> np.ndarray | None:
        row = self._connection().execute("SELECT embedding FROM reembeddings WHERE seq = ? AND model_key = ?",
                                         (seq, key)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype="<f4").astype(np.float32)

    def save_reembedding(self, seq: int, key: str, embedding: np.ndarray) -> None:
        if self.readonly:
            return
        with self._write_lock, self._transaction() as cursor:
            cursor.execute("INSERT OR REPLACE INTO reembeddings (seq, model_key, embedding) VALUES (?, ?, ?)",
                           (seq, key, np.ascontiguousarray(embedding, dtype="<f4").tobytes()))

    def fold_through(self, fold_id: str) -> int | None:
        row = self._connection().execute("SELECT through_seq FROM folds WHERE fold_id = ?", (fold_id,)).fetchone()
        return None if row is None else int(row[0])

    def record_fold(self, fold_id: str, through_seq: int) -> None:
        with self._write_lock, self._transaction() as cursor:
            cursor.execute("INSERT OR IGNORE INTO folds (fold_id, through_seq, created_at) VALUES (?, ?, ?)",
                           (fold_id, int(through_seq), _now()))

    def numeric_ids(self, item_ids: list[str], taken: set[int], start: int) -> dict[str, int]:
        """A stable numeric id per item id (for the Kaggle-layout catalogue), allocated once, never reused."""
        with self._write_lock, self._transaction() as cursor:
            known = dict(cursor.execute("SELECT item_id, numeric_id FROM numeric_ids").fetchall())
            used = set(known.values()) | taken
            following = max([start - 1, *used]) + 1 if used else start
            for item_id in item_ids:
                if item_id not in known:
                    while following in used:
                        following += 1
                    known[item_id] = following
                    used.add(following)
                    cursor.execute("INSERT INTO numeric_ids (item_id, numeric_id) VALUES (?, ?)",
                                   (item_id, following))
        return {item_id: int(known[item_id]) for item_id in item_ids}

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


@dataclass
class Item:
    """One item of the live catalogue: from the build (``source`` "build") or added live ("live")."""

    id: str
    metadata: dict[str, str]
    source: str
    image_path: str | None = None  # build items: the catalogue photo
    seq: int | None = None  # live items: the change that put it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    metadata: dict[str, str]
    source: str
    image_path: str | None = None


@dataclass
class LiveResponse:
    matches: list[Hit]
    embed_ms: float = 0.0
    search_ms: float = 0.0
    total_ms: float = 0.0
    candidates: int = 0  # items that could be returned: in the catalogue, passing the filters, not excluded

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PutResult:
    item: Item
    created: bool
    seq: int
    near_duplicates: list[Hit]
    embed_ms: float
    write_ms: float


@dataclass
class _LiveEntry:
    internal_id: int
    seq: int
    vector: np.ndarray
    metadata: dict[str, str]
    content_type: str


@dataclass
class LiveCatalogue:
    """The pinned build plus the live changes. One per process; every method is thread-safe."""

    searcher: Searcher
    store: LiveStore
    near_duplicate_cosine: float = 0.0
    max_near_duplicates: int = 10
    applied_seq: int = 0  # the last change reflected in memory
    folded_seq: int = 0  # changes up to this seq are part of the pinned build (a fold); never replayed
    build_id: str = ""
    model_key: str = ""
    reembedded: int = 0  # changes re-embedded with the pinned model at start-up (another model made them)
    skipped: list[int] = field(default_factory=list)  # seqs that could not be applied (logged)
    _build_ids: list[str] = field(default_factory=list, repr=False)
    _build_row: dict[str, int] = field(default_factory=dict, repr=False)
    _tombstones: set[int] = field(default_factory=set, repr=False)
    _tombstone_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _live: dict[str, _LiveEntry] = field(default_factory=dict, repr=False)
    _by_internal: dict[int, str] = field(default_factory=dict, repr=False)
    _live_index: faiss.Index | None = field(default=None, repr=False)
    _next_internal: int = 0
    _state_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, artifacts_dir: str | Path | None = None, db: str | Path | None = None,
             root: str | Path = PROJECT_ROOT, max_bytes: int = DEFAULT_MAX_BYTES, readonly: bool = False,
             near_duplicate_cosine: float | None = None) -> LiveCatalogue:
        """Load the pinned build and replay every acknowledged change not folded into it."""
        searcher = Searcher.load(artifacts_dir, root=root, max_bytes=max_bytes)
        store = LiveStore(resolve_db_path(db, Path(root)), readonly=readonly)
        return cls.open(searcher, store, near_duplicate_cosine)

    @classmethod
    def for_page(cls, searcher: Searcher, db: str | Path | None = None) -> LiveCatalogue | None:
        """The live catalogue over a searcher the page already loaded, read-only (the service writes); None
        when there is no live database yet. Call :meth:`refresh` on every rerun to see the latest changes."""
        path = resolve_db_path(db, searcher.root)
        if not path.is_file():
            return None
        return cls.open(searcher, LiveStore(path, readonly=True))

    @classmethod
    def open(cls, searcher: Searcher, store: LiveStore, near_duplicate_cosine: float | None = None) -> LiveCatalogue:
        if near_duplicate_cosine is None:
            from lookalike.duplicates import NEAR_DUPLICATE_COSINE

            near_duplicate_cosine = NEAR_DUPLICATE_COSINE
        catalogue = cls(searcher, store, float(near_duplicate_cosine))
        catalogue.build_id = manifest_build_id(searcher.manifest)
        catalogue.model_key = model_key(searcher.manifest)
        items = searcher.items
        numeric = [str(int(i)) for i in items["id"]]
        if EXTERNAL_ID_COLUMN in items:
            external = items[EXTERNAL_ID_COLUMN].astype(str).tolist()
            numeric = [e if e else n for e, n in zip(external, numeric, strict=True)]
        catalogue._build_ids = numeric
        catalogue._build_row = {item_id: row for row, item_id in enumerate(numeric)}
        catalogue._live_index = faiss.IndexIDMap2(faiss.IndexFlatIP(searcher.embeddings.shape[1]))
        fold = searcher.manifest["params"].get("live_fold") or {}
        if fold.get("store_id") == store.store_id:
            catalogue.folded_seq = int(fold["through_seq"])
        catalogue.applied_seq = catalogue.folded_seq
        started = time.perf_counter()
        replayed = catalogue.refresh()
        log.info("live catalogue %s: %d changes replayed after seq %d in %.1f s (%d re-embedded)", store.path,
                 replayed, catalogue.folded_seq, time.perf_counter() - started, catalogue.reembedded)
        return catalogue

    # ---------------------------------------------------------------- state

    def refresh(self) -> int:
        """Apply the changes committed since the last call (another process may write); how many."""
        with self._write_lock:
            applied = 0
            for change in self.store.changes_after(self.applied_seq):
                self._apply(self._current_model(change))
                applied += 1
            return applied

    def _current_model(self, change: Change) -> Change:
        """The change with an embedding by the pinned model: re-embedded from its image if needed."""
        if change.op != "put" or change.model_key == self.model_key:
            return change
        vector = self.store.reembedding(change.seq, self.model_key)
        if vector is None:
            try:
                image, _ = self.store.image(change.seq)
                vector = self.searcher.embed_image(image)
            except InvalidImageError as error:  # stored once as valid; a stricter decoder may refuse it now
                log.error("change %d (%s) cannot be re-embedded with the pinned model: %s; item left out",
                          change.seq, change.item_id, error)
                self.skipped.append(change.seq)
                return Change(change.seq, "remove", change.item_id, change.build_id, change.model_key, None, None,
                              None, change.created_at)
            self.store.save_reembedding(change.seq, self.model_key, vector)
        self.reembedded += 1
        return Change(change.seq, change.op, change.item_id, change.build_id, self.model_key, vector,
                      change.metadata, change.content_type, change.created_at)

    def _apply(self, change: Change) -> None:
        with self._state_lock:
            old = self._live.pop(change.item_id, None)
            if old is not None:
                self._live_index.remove_ids(np.array([old.internal_id], dtype=np.int64))
                del self._by_internal[old.internal_id]
            row = self._build_row.get(change.item_id)
            if row is not None and row not in self._tombstones:
                self._tombstones.add(row)
                self._tombstone_rows = np.array(sorted(self._tombstones), dtype=np.int64)
            if change.op == "put":
                internal = self._next_internal
                self._next_internal += 1
                vector = np.ascontiguousarray(change.embedding, dtype=np.float32).reshape(1, -1)
                self._live_index.add_with_ids(vector, np.array([internal], dtype=np.int64))
                self._live[change.item_id] = _LiveEntry(internal, change.seq, vector[0], dict(change.metadata),
                                                        change.content_type or "application/octet-stream")
                self._by_internal[internal] = change.item_id
            self.applied_seq = change.seq

    # ---------------------------------------------------------------- reads

    def __len__(self) -> int:
        with self._state_lock:
            return len(self._build_ids) - len(self._tombstones) + len(self._live)

    def __contains__(self, item_id: object) -> bool:
        with self._state_lock:
            return item_id in self._live or self._live_build_row(item_id) is not None

    def _live_build_row(self, item_id: object) -> int | None:
        row = self._build_row.get(item_id)  # type: ignore[arg-type]
        return None if row is None or row in self._tombstones else row

    def build_row(self, item_id: str) -> int | None:
        """The searcher row of a build item still in the catalogue as built; None for a live item (added, or a
        build item replaced), a removed one or an unknown id."""
        with self._state_lock:
            return None if item_id in self._live else self._live_build_row(item_id)

    @staticmethod
    def _active_filters(filters: dict[str, list[str]] | None) -> dict[str, set[str]]:
        active = {c: set(v) for c, v in (filters or {}).items() if v}
        for column in active:
            if column not in FILTER_COLUMNS:
                raise LiveError(f"unknown filter {column!r}; filters: {', '.join(FILTER_COLUMNS)}")
        return active

    def browse_ids(self, filters: dict[str, list[str]] | None = None) -> list[str]:
        """Every item passing ``filters`` (column -> accepted values), for a listing such as the page's grid:
        live items first (latest change first), then the build's items in build order, without the removed or
        replaced ones."""
        active = self._active_filters(filters)
        allowed = self.searcher.allowed_rows({c: sorted(v) for c, v in active.items()})
        rows = np.arange(len(self._build_ids)) if allowed is None else allowed
        with self._state_lock:
            live = sorted(((entry.seq, item_id) for item_id, entry in self._live.items()
                           if all(entry.metadata.get(c) in v for c, v in active.items())), reverse=True)
            if len(self._tombstone_rows):
                rows = rows[~np.isin(rows, self._tombstone_rows)]
        return [item_id for _, item_id in live] + [self._build_ids[int(row)] for row in rows]

    def item(self, item_id: str) -> Item:
        with self._state_lock:
            entry = self._live.get(item_id)
            if entry is not None:
                return Item(item_id, dict(entry.metadata), "live", None, entry.seq)
            row = self._live_build_row(item_id)
        if row is None:
            raise UnknownItemError(f"no item with id {item_id!r}")
        return Item(item_id, self.searcher.metadata(row), "build", str(self.searcher.resolve_path(row)))

    def image(self, item_id: str) -> tuple[str | Path | bytes, str]:
        """(path of the catalogue photo, or the stored bytes; content type) of an item."""
        with self._state_lock:
            entry = self._live.get(item_id)
            row = None if entry is not None else self._live_build_row(item_id)
        if entry is not None:
            return self.store.image(entry.seq)
        if row is None:
            raise UnknownItemError(f"no item with id {item_id!r}")
        path = self.searcher.resolve_path(row)
        return path, Image.MIME.get(_format_of_suffix(path.suffix), "application/octet-stream")

    def vector(self, item_id: str) -> np.ndarray:
        with self._state_lock:
            entry = self._live.get(item_id)
            if entry is not None:
                return entry.vector
            row = self._live_build_row(item_id)
        if row is None:
            raise UnknownItemError(f"no item with id {item_id!r}")
        return self.searcher.embeddings[row]

    def search_vector(self, vector: np.ndarray, k: int, filters: dict[str, list[str]] | None = None,
                      exclude: str | None = None) -> LiveResponse:
        """Top-k of build + live items passing ``filters`` (column -> accepted values), never ``exclude``."""
        if k < 1:
            raise LiveError("k must be at least 1")
        started = time.perf_counter()
        active = self._active_filters(filters)
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        with self._state_lock:
            excluded = self._tombstone_rows
            row = self._build_row.get(exclude) if exclude is not None else None
            if row is not None and row not in self._tombstones:
                excluded = np.append(excluded, row)
            live_hits, live_candidates = self._search_live(query, k, active, exclude)
        allowed = self.searcher.allowed_rows({c: sorted(v) for c, v in active.items()})
        hits = live_hits
        build_candidates = (len(self._build_ids) - len(excluded) if allowed is None
                            else len(allowed) - int(np.isin(excluded, allowed).sum()))
        if allowed is None or len(allowed):
            scores, rows = index_search(self.searcher.index, query, k, allowed, excluded)
            for score, found in zip(scores[0], rows[0], strict=True):
                if found >= 0:
                    found = int(found)
                    hits.append(Hit(0, self._build_ids[found], float(score), self.searcher.metadata(found), "build",
                                    str(self.searcher.resolve_path(found))))
        # by score; on a tie build items first, then by id: a deterministic order
        hits.sort(key=lambda h: (-h.score, h.source != "build", h.id))
        matches = hits[:k]
        for rank, hit in enumerate(matches, start=1):
            hit.rank = rank
        return LiveResponse(matches, search_ms=(time.perf_counter() - started) * 1e3,
                            candidates=build_candidates + live_candidates)

    def _search_live(self, query: np.ndarray, k: int, active: dict[str, set[str]],
                     exclude: str | None) -> tuple[list[Hit], int]:
        """The live items' top k and how many live items were candidates."""
        if self._live_index.ntotal == 0:
            return [], 0
        candidates = self._live_index.ntotal
        if active or exclude in self._live:
            allowed = [entry.internal_id for item_id, entry in self._live.items()
                       if item_id != exclude and all(entry.metadata.get(c) in v for c, v in active.items())]
            candidates = len(allowed)
            if not allowed:
                return [], 0
            selector = faiss.IDSelectorBatch(np.array(allowed, dtype=np.int64))
            scores, ids = self._live_index.search(query, min(k, len(allowed)),
                                                  params=faiss.SearchParameters(sel=selector))
        else:
            scores, ids = self._live_index.search(query, min(k, self._live_index.ntotal))
        hits = []
        for score, internal in zip(scores[0], ids[0], strict=True):
            if internal >= 0:
                item_id = self._by_internal[int(internal)]
                hits.append(Hit(0, item_id, float(score), dict(self._live[item_id].metadata), "live"))
        return hits, candidates

    def search(self, source: ImageSource | Image.Image, k: int = 5, filters: dict | None = None) -> LiveResponse:
        """The k items most similar to an image: a path, bytes, or an image :meth:`Searcher.decode` returned
        (the page decodes an upload once, for its preview and this search)."""
        started = time.perf_counter()
        vector = self.searcher.embed_image(source)
        embedded = time.perf_counter()
        response = self.search_vector(vector, k, filters)
        response.embed_ms = (embedded - started) * 1e3
        response.total_ms = (time.perf_counter() - started) * 1e3
        return response

    def similar(self, item_id: str, k: int = 5, filters: dict | None = None) -> LiveResponse:
        """"More like this": the k nearest items to an item, never the item itself."""
        started = time.perf_counter()
        response = self.search_vector(self.vector(item_id), k, filters, exclude=item_id)
        response.total_ms = (time.perf_counter() - started) * 1e3
        return response

    def near_duplicates(self, vector: np.ndarray, exclude: str | None = None) -> list[Hit]:
        """Items whose cosine with ``vector`` is at least the near-duplicate threshold (best first)."""
        hits = self.search_vector(vector, self.max_near_duplicates, exclude=exclude).matches
        return [h for h in hits if h.score >= self.near_duplicate_cosine]

    # ---------------------------------------------------------------- writes

    def put(self, item_id: str, image: bytes, metadata: dict) -> PutResult:
        """Add or replace an item; returns once the change is on disk and searchable."""
        item_id = validate_item_id(item_id)
        label = self.searcher.manifest["params"].get("label_column", "articleType")
        metadata = validate_metadata(metadata, required=(label,))
        started = time.perf_counter()
        image = bytes(image)
        vector = self.searcher.embed_image(image)  # raises InvalidImageError for anything unusable
        content_type = _content_type(image)
        embedded = time.perf_counter()
        duplicates = self.near_duplicates(vector, exclude=item_id)
        with self._write_lock:
            created = item_id not in self
            change = self.store.append("put", item_id, self.build_id, self.model_key, vector, metadata, image,
                                       content_type)
            self._apply(change)
        return PutResult(Item(item_id, metadata, "live", None, change.seq), created, change.seq, duplicates,
                         (embedded - started) * 1e3, (time.perf_counter() - embedded) * 1e3)

    def remove(self, item_id: str) -> int:
        """Remove an item (build or live); returns the change's seq once it is on disk."""
        with self._write_lock:
            if item_id not in self:
                raise UnknownItemError(f"no item with id {item_id!r}")
            change = self.store.append("remove", item_id, self.build_id, self.model_key)
            self._apply(change)
            return change.seq

    # ---------------------------------------------------------------- provenance

    def stats(self) -> dict:
        manifest = self.searcher.manifest
        with self._state_lock:
            live_items, removed = len(self._live), len(self._tombstones)
            applied = self.applied_seq
        return {
            "catalogue_size": len(self),
            "build": {"build_id": self.build_id, "items": len(self._build_ids),
                      "created_at": manifest.get("created_at"),
                      "model_sha256": manifest["files"]["model"]["sha256"],
                      "index_sha256": manifest["files"]["index"]["sha256"],
                      "index_type": manifest["params"]["index"]["type"],
                      "backbone": manifest["params"].get("backbone")},
            "live": {"changes_since_build": self.store.count_after(self.folded_seq), "last_seq": applied,
                     "folded_through_seq": self.folded_seq, "live_items": live_items,
                     "build_items_removed_or_replaced": removed, "reembedded_at_start": self.reembedded,
                     "changes_not_applied": list(self.skipped)},
        }

    def live_ids(self) -> list[str]:
        with self._state_lock:
            return sorted(self._live)


def _format_of_suffix(suffix: str) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF",
            ".bmp": "BMP"}.get(suffix.lower(), "")


def _content_type(image: bytes) -> str:
    """The MIME type of image bytes that decoded, from their own header (never the client's word)."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            return Image.MIME.get(opened.format or "", "application/octet-stream")
    except Exception:  # noqa: BLE001 - it decoded for the embedding; the type is only a label
        return "application/octet-stream"
