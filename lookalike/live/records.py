"""What the live catalogue is made of: ids, metadata, changes, items, hits, and the errors a caller can fix."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lookalike import artifacts
from lookalike.params import PROJECT_ROOT

DEFAULT_DB = Path("live/live.db")  # under the project root
DB_ENV = "LOOKALIKE_LIVE_DB"
ITEM_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_FIELD_CHARS = 200
MAX_PHOTOS_PER_ITEM = 8  # photos one write may carry (several photos per item): bounded memory and time
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
WHOLE_NUMBER = re.compile(r"[+-]?\d+")


class LiveError(ValueError):
    """A change or query the caller got wrong (bad id, bad metadata); the message says what."""


class UnknownItemError(KeyError):
    """No item with that id in the live catalogue (never added, or removed)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown item"


class StaleDatabaseError(LiveError):
    """The live database is older than a fold the build holds (a backup restored from before it)."""


class JournalBusyError(RuntimeError):
    """The journal cannot take a write now (held by compaction's VACUUM, or unreachable): nothing was written,
    the same write may be retried (the service answers 503 with Retry-After)."""


def validate_item_id(item_id: object) -> str:
    """The id itself, or LiveError: ids end up in URLs, file names and CSV rows."""
    if not isinstance(item_id, str) or not ITEM_ID_PATTERN.fullmatch(item_id):
        raise LiveError("an item id is 1-128 characters: letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit")
    return item_id


def validate_metadata(metadata: dict, fields: Sequence[str], required: Sequence[str] = (),
                      kinds: Mapping[str, str] | None = None) -> dict[str, str]:
    """The build's metadata columns only (``fields``: its ``roles.metadata``, so each catalogue takes its own),
    text without control characters, at most MAX_FIELD_CHARS each, empty ones left out; ``required`` given; a
    column of ``kinds`` ("number" or "whole number": every value the build holds is one, :func:`value_kinds`)
    takes such a value only, so a live item cannot break a numeric column's sorting, folding or filtering."""
    unknown = sorted(set(metadata) - set(fields))
    if unknown:
        known = ", ".join(fields) if fields else "none: this build carries no metadata"
        raise LiveError(f"unknown metadata field(s) {', '.join(map(repr, unknown))}; known: {known}")
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
        kind = (kinds or {}).get(name)
        pattern = WHOLE_NUMBER if kind == "whole number" else NUMBER if kind == "number" else None
        if value and pattern is not None and not pattern.fullmatch(value):
            raise LiveError(f"metadata field {name!r} must be a {kind}, as every one the catalogue holds is")
        if value:  # an empty field is no field
            clean[name] = value
    for name in required:
        if not clean.get(name):
            raise LiveError(f"metadata field {name!r} is required")
    return clean


def value_kinds(columns: Mapping[str, Iterable[object]]) -> dict[str, str]:
    """Column -> "whole number" or "number" for the columns whose every non-empty value is one (at least one
    value): what :func:`validate_metadata` holds a new value of that column to. Other columns are free text."""
    kinds = {}
    for column, values in columns.items():
        texts = [str(v).strip() for v in values]
        texts = [t for t in texts if t and t.lower() not in ("nan", "na", "none")]
        if texts and all(WHOLE_NUMBER.fullmatch(t) for t in texts):
            kinds[column] = "whole number"
        elif texts and all(NUMBER.fullmatch(t) for t in texts):
            kinds[column] = "number"
    return kinds


def model_key(manifest: dict) -> str:
    """Identifies the embedding function: the model file's hash and the preprocessing it expects."""
    text = json.dumps({"model": manifest["files"]["model"]["sha256"],
                       "preprocess": manifest["params"]["preprocess"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifest_build_id(manifest: dict) -> str:
    """The pinned build's id (:func:`lookalike.artifacts.build_id`)."""
    return str(manifest.get("build_id") or artifacts.build_id(manifest))


def resolve_db_path(db: str | Path | None, root: Path = PROJECT_ROOT) -> Path:
    """``db``, else $LOOKALIKE_LIVE_DB, else live/live.db; a relative path is taken from ``root``."""
    db = db or os.environ.get(DB_ENV) or DEFAULT_DB
    path = Path(db)
    return path if path.is_absolute() else root / path


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Change:
    """One row of the journal (the image is read separately: it is the big part)."""

    seq: int
    op: str  # "put" | "remove"
    item_id: str
    build_id: str
    model_key: str
    embedding: np.ndarray | None
    metadata: dict | None
    content_type: str | None
    created_at: str
    more_embeddings: np.ndarray | None = None  # float32 (m, dim): a put's other photos (several per item)
    existed: bool | None = None  # whether the item existed just before this change (decided in its transaction)

    def vectors(self) -> np.ndarray:
        """float32 (1 + m, dim): the first photo's embedding, then the other photos'."""
        first = np.asarray(self.embedding, np.float32).reshape(1, -1)
        if self.more_embeddings is None or not len(self.more_embeddings):
            return first
        return np.vstack([first, np.asarray(self.more_embeddings, np.float32).reshape(-1, first.shape[1])])


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
    build_id: str = ""  # the build the answer came from (servers swap builds at their own moment)

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


def parse_build_switch(value: str | None) -> tuple[str, float] | None:
    """A journal's announced build switch, ``{"version": ..., "at": ...}`` as stored: (version, instant); None
    for none or an unreadable one (a process then switches as soon as it has loaded, as before announcements)."""
    try:
        data = json.loads(value) if value else None
        return (str(data["version"]), float(data["at"])) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
