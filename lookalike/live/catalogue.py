"""The live catalogue: a published build plus the shop's acknowledged changes, searchable at once.

Start-up replays the journal after the last change already folded into the build (see
:mod:`lookalike.live.fold`). A change embedded with another model than the build's (the model was
retrained under live items) is re-embedded from its stored photo with the build's model, and that
vector is cached in the database, so every item is always scored by one model.

Several processes may serve one journal: each one *follows* it (:meth:`LiveCatalogue.refresh`
applies what others committed), and a write first applies everything committed before it, so every
process applies the same changes in the same (seq) order.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from lookalike.catalogue.description import CatalogueRoles
from lookalike.catalogue.reading import EXTERNAL_ID_COLUMN
from lookalike.live.journal import open_journal
from lookalike.live.records import (
    MAX_PHOTOS_PER_ITEM,
    Change,
    Hit,
    Item,
    LiveError,
    LiveResponse,
    PutResult,
    UnknownItemError,
    manifest_build_id,
    model_key,
    validate_item_id,
    validate_metadata,
    value_kinds,
)
from lookalike.live.state import LiveState
from lookalike.live.store import LiveStore
from lookalike.model.preprocessing import DEFAULT_MAX_BYTES, ImageSource, InvalidImageError
from lookalike.params import PROJECT_ROOT
from lookalike.search import duplicates
from lookalike.search.engine import Searcher

if TYPE_CHECKING:
    from lookalike.live.pg_store import PostgresStore

log = logging.getLogger("lookalike.live")
THUMBNAIL_CACHE = 50_000  # photos' 32x32 thumbnails kept for the near-duplicate pixel check (3 kB each)


@dataclass
class LiveCatalogue:
    """The pinned build plus the live changes. One per process and build; every method is thread-safe."""

    searcher: Searcher
    store: LiveStore | PostgresStore  # the journal (lookalike/live/journal.py picks which)
    state: LiveState
    rule: dict  # the near-duplicate rule: cosine, max_pixel_difference, source (lookalike.search.duplicates.rule_of)
    applied_seq: int = 0  # the last change reflected in memory
    folded_seq: int = 0  # changes up to this seq are part of the pinned build (a fold); never replayed
    build_id: str = ""
    model_key: str = ""
    reembedded: int = 0  # changes re-embedded with the pinned model (another model made them)
    skipped: list[int] = field(default_factory=list)  # seqs that could not be applied (logged)
    _write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _thumbnails: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _thumbnails_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # concurrent PUTs share it
    _build_values: dict | None = field(default=None, repr=False)  # filter column -> the build's values
    _kinds: dict | None = field(default=None, repr=False)  # metadata column -> "number" / "whole number"

    @classmethod
    def load(cls, artifacts_dir: str | Path | None = None, db: str | Path | None = None,
             root: str | Path = PROJECT_ROOT, max_bytes: int = DEFAULT_MAX_BYTES, readonly: bool = False,
             near_duplicate_cosine: float | None = None) -> LiveCatalogue:
        """Load the published build and replay every acknowledged change not folded into it."""
        searcher = Searcher.load(artifacts_dir, root=root, max_bytes=max_bytes)
        store = open_journal(db, root, readonly=readonly)
        return cls.open(searcher, store, near_duplicate_cosine)

    @classmethod
    def for_page(cls, searcher: Searcher, db: str | Path | None = None) -> LiveCatalogue | None:
        """The live catalogue over a searcher the page already loaded, read-only (the service writes); None
        when there is no live database yet. Call :meth:`refresh` on every rerun to see the latest changes."""
        try:
            store = open_journal(db, searcher.root, readonly=True)
        except FileNotFoundError:
            return None
        return cls.open(searcher, store)

    @classmethod
    def open(cls, searcher: Searcher, store: LiveStore | PostgresStore,
             near_duplicate_cosine: float | None = None) -> LiveCatalogue:
        """The build of ``searcher`` plus the journal in ``store``; refuses a journal older than the build's fold
        (:class:`lookalike.live.StaleDatabaseError`)."""
        rule = duplicates.rule_of(searcher.manifest)
        if near_duplicate_cosine is not None:
            rule = {**rule, "cosine": float(near_duplicate_cosine), "source": "service setting"}
        items = searcher.items
        build_ids = [str(int(i)) for i in items["id"]]
        if EXTERNAL_ID_COLUMN in items:
            external = items[EXTERNAL_ID_COLUMN].astype(str).tolist()
            build_ids = [e if e and e != "nan" else n for e, n in zip(external, build_ids, strict=True)]
        catalogue = cls(searcher, store, LiveState(searcher, build_ids), rule)
        catalogue.build_id = manifest_build_id(searcher.manifest)
        catalogue.model_key = model_key(searcher.manifest)
        fold = searcher.manifest["params"].get("live_fold") or {}
        if fold.get("store_id") == store.store_id:
            catalogue.folded_seq = int(fold["through_seq"])
            store.check_holds(catalogue.folded_seq, catalogue.build_id)
        catalogue.applied_seq = catalogue.folded_seq
        started = time.perf_counter()
        replayed = catalogue.refresh()
        log.info("live catalogue %s: %d changes replayed after seq %d in %.1f s (%d re-embedded)", store.path.name,
                 replayed, catalogue.folded_seq, time.perf_counter() - started, catalogue.reembedded)
        return catalogue

    # ---------------------------------------------------------------- following the journal

    def refresh(self) -> int:
        """Apply the changes committed since the last call (another process or catalogue may write); how many."""
        with self._write_lock:
            return self._catch_up()

    def caught_up_to(self, seq: int) -> bool:
        """Whether every change up to ``seq`` is applied here, after applying what the journal holds now (a
        write through another process or replica: read your writes)."""
        if self.applied_seq >= seq:
            return True
        self.refresh()
        return self.applied_seq >= seq

    def _catch_up(self) -> int:
        applied = 0
        for change in self.store.changes_after(self.applied_seq):
            self.state.apply(self._current_model(change))
            self.applied_seq = change.seq
            applied += 1
        return applied

    def _current_model(self, change: Change) -> Change:
        """The change with embeddings by the pinned model: re-embedded from its photos if needed."""
        if change.op != "put" or change.model_key == self.model_key:
            return change
        dimension = len(change.embedding)
        cached = self.store.reembedding(change.seq, self.model_key)
        vectors = None if cached is None else cached.reshape(-1, dimension)
        if vectors is None:
            try:
                photos = [self.store.image(change.seq)[0], *(data for data, _ in self.store.more_images(change.seq))]
                vectors = np.stack([self.searcher.embed_image(photo) for photo in photos])
            except InvalidImageError as error:  # stored once as valid; a stricter decoder may refuse it now
                log.error("change %d (%s) cannot be re-embedded with the pinned model: %s; item left out",
                          change.seq, change.item_id, error)
                self.skipped.append(change.seq)
                return Change(change.seq, "remove", change.item_id, change.build_id, change.model_key, None, None,
                              None, change.created_at)
            self.store.save_reembedding(change.seq, self.model_key, vectors if len(vectors) > 1 else vectors[0])
        self.reembedded += 1
        return Change(change.seq, change.op, change.item_id, change.build_id, self.model_key, vectors[0],
                      change.metadata, change.content_type, change.created_at,
                      vectors[1:] if len(vectors) > 1 else None)

    # ---------------------------------------------------------------- reads

    def __len__(self) -> int:
        return len(self.state)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.state

    @property
    def near_duplicate_cosine(self) -> float:
        return float(self.rule["cosine"])

    @property
    def roles(self) -> CatalogueRoles:
        """What the build's columns are for: the filters a search takes, the metadata an item carries, its title."""
        return self.searcher.roles

    def filter_values(self) -> dict[str, list[str]]:
        """Each filter column of the build -> the values an item of the catalogue as served has in it (the build's,
        plus any a live item brought), sorted: what a client may filter on, and with what."""
        if self._build_values is None:
            items = self.searcher.items
            self._build_values = {c: {str(v) for v in items[c].dropna().unique() if str(v) != ""}
                                  if c in items else set() for c in self.roles.filters}
        values = {c: set(v) for c, v in self._build_values.items()}
        with self.state.lock:
            live = [entry.metadata for entry in self.state.live.values()]
        for metadata in live:
            for column, known in values.items():
                if metadata.get(column):
                    known.add(metadata[column])
        return {c: sorted(v) for c, v in values.items()}

    def value_kinds(self) -> dict[str, str]:
        """The metadata columns whose every build value is a number (:func:`lookalike.live.records.value_kinds`)."""
        if self._kinds is None:
            items = self.searcher.items
            self._kinds = value_kinds({c: items[c] for c in self.roles.metadata if c in items})
        return self._kinds

    def build_row(self, item_id: str) -> int | None:
        """The searcher row of a build item still in the catalogue as built; None for a live item (added, or a
        build item replaced), a removed one or an unknown id."""
        with self.state.lock:
            return None if item_id in self.state.live else self.state.live_build_row(item_id)

    def browse_ids(self, filters: dict[str, list[str]] | None = None) -> list[str]:
        """Every item passing ``filters`` (column -> accepted values), for a listing such as the page's grid."""
        return self.state.browse(filters)

    def live_ids(self) -> list[str]:
        with self.state.lock:
            return sorted(self.state.live)

    def live_words_since(self, seq: int) -> tuple[int, frozenset[str], dict[str, dict]]:
        """(the journal position read first, every live item's id, id -> metadata of the live items written after
        ``seq``), as one consistent read: what the live word index remakes (items written after the position
        read may be among them; never an item older than it missing)."""
        applied = self.applied_seq
        with self.state.lock:
            return applied, frozenset(self.state.live), {i: dict(e.metadata) for i, e in self.state.live.items()
                                                         if e.seq > seq}

    def item(self, item_id: str) -> Item:
        with self.state.lock:
            entry = self.state.live.get(item_id)
            if entry is not None:
                return Item(item_id, dict(entry.metadata), "live", None, entry.seq)
            row = self.state.live_build_row(item_id)
        if row is None:
            raise UnknownItemError(f"no item with id {item_id!r}")
        return Item(item_id, self.searcher.metadata(row), "build", str(self.searcher.resolve_path(row)))

    def image(self, item_id: str) -> tuple[str | Path | bytes, str]:
        """(path of the catalogue photo, or the stored bytes; content type) of an item."""
        with self.state.lock:
            entry = self.state.live.get(item_id)
            row = None if entry is not None else self.state.live_build_row(item_id)
        if entry is not None:
            return self.store.image(entry.seq)
        if row is None:
            raise UnknownItemError(f"no item with id {item_id!r}")
        path = self.searcher.resolve_path(row)
        return path, Image.MIME.get(_format_of_suffix(path.suffix), "application/octet-stream")

    def vector(self, item_id: str) -> np.ndarray:
        with self.state.lock:
            entry = self.state.live.get(item_id)
            if entry is not None:
                return entry.vector
            row = self.state.live_build_row(item_id)
        if row is None:
            raise UnknownItemError(f"no item with id {item_id!r}")
        return self.searcher.embeddings[row]

    # ---------------------------------------------------------------- search

    def search_vector(self, vector: np.ndarray, k: int, filters: dict[str, list[str]] | None = None,
                      exclude: str | None = None, similarity: str | dict | None = None) -> LiveResponse:
        """Top-k of build + live items passing ``filters`` (column -> accepted values), never ``exclude``: the one
        function every search (upload, item, text) ends in. ``similarity``: what "alike" means for this query
        (:mod:`lookalike.search.similarity`; live items' vectors have the build's sub-spaces, so every mode
        reaches them)."""
        started = time.perf_counter()
        self.searcher.check_similarity(similarity)
        vector = self.searcher.expansion.expand(vector, lambda query, n: self._nearest(query, n, filters, exclude))
        vector = self.searcher.query_vector(vector, similarity)
        matches, candidates = self.state.search(vector, k, filters, exclude)
        return LiveResponse(matches, search_ms=(time.perf_counter() - started) * 1e3, candidates=candidates,
                            build_id=self.build_id)

    def _nearest(self, vector: np.ndarray, n: int, filters: dict[str, list[str]] | None,
                 exclude: str | None) -> tuple[np.ndarray, np.ndarray]:
        """The vectors and cosines of the n items nearest ``vector`` among those a search may return (the query
        expansion's neighbours: :mod:`lookalike.search.expansion`); one removed meanwhile is left out."""
        hits, _ = self.state.search(vector, n, filters, exclude)
        vectors, cosines = [], []
        for hit in hits:
            try:
                vectors.append(self.vector(hit.id))
            except UnknownItemError:
                continue
            cosines.append(hit.score)
        dim = len(vector)
        return (np.asarray(vectors, np.float32).reshape(-1, dim), np.asarray(cosines, np.float32))

    def search(self, source: ImageSource | Image.Image, k: int = 5, filters: dict | None = None,
               similarity: str | dict | None = None) -> LiveResponse:
        """The k items most similar to an image: a path, bytes, or an image :meth:`Searcher.decode` returned
        (the page decodes an upload once, for its preview and this search)."""
        started = time.perf_counter()
        self.searcher.check_similarity(similarity)
        vector = self.searcher.embed_image(source)
        embedded = time.perf_counter()
        response = self.search_vector(vector, k, filters, similarity=similarity)
        response.embed_ms = (embedded - started) * 1e3
        response.total_ms = (time.perf_counter() - started) * 1e3
        return response

    def similar(self, item_id: str, k: int = 5, filters: dict | None = None,
                similarity: str | dict | None = None) -> LiveResponse:
        """"More like this": the k nearest items to an item, never the item itself, by ``similarity``."""
        started = time.perf_counter()
        response = self.search_vector(self.vector(item_id), k, filters, exclude=item_id, similarity=similarity)
        response.total_ms = (time.perf_counter() - started) * 1e3
        return response

    # ---------------------------------------------------------------- near-duplicates

    def _thumbnail(self, item_id: str, source: str = "build", photo: int | None = None) -> np.ndarray | None:
        """The pixel check's thumbnail of one of an item's photos: ``photo`` is a build photo row (``source``
        "build") or a live item's photo number (0: its first); None: its current first photo. Cached by id,
        version and photo."""
        with self.state.lock:
            entry = self.state.live.get(item_id)
            key = (item_id, entry.seq if entry is not None else -1, source, photo)
        with self._thumbnails_lock:
            if key in self._thumbnails:
                self._thumbnails.move_to_end(key)
                return self._thumbnails[key]
        try:
            if source == "build" and photo is not None:
                image = self.searcher.photo_path(photo)
            elif source == "live" and photo and entry is not None:
                image = self.store.more_images(entry.seq)[photo - 1][0]
            else:
                image = self.image(item_id)[0]
        except (UnknownItemError, IndexError):
            return None
        thumbnail = duplicates.photo_thumbnail(image)  # outside the lock: a decode
        with self._thumbnails_lock:
            self._thumbnails[key] = thumbnail
            while len(self._thumbnails) > THUMBNAIL_CACHE:
                self._thumbnails.popitem(last=False)
        return thumbnail

    def near_duplicates(self, vector: np.ndarray, photo: ImageSource, exclude: str | None = None) -> list[Hit]:
        """Every item that is the same picture as ``photo`` (embedded as ``vector``), best first: cosine at least
        the build's threshold with one of its photos, exact over build + live, confirmed by the pixel check on
        that photo (:mod:`lookalike.search.duplicates`, the report's rule)."""
        own = duplicates.photo_thumbnail(photo)
        hits = []
        for item_id, score, source, number in self.state.within(vector, self.near_duplicate_cosine, exclude):
            if duplicates.same_picture(own, self._thumbnail(item_id, source, number),
                                       self.rule["max_pixel_difference"]):
                try:
                    item = self.item(item_id)
                except UnknownItemError:  # removed meanwhile
                    continue
                hits.append(Hit(len(hits) + 1, item_id, min(score, 1.0), item.metadata, source, item.image_path))
        return hits

    def duplicate_report(self) -> pd.DataFrame:
        """Every near-duplicate group of the catalogue as served (build + live): :data:`duplicates.GROUP_COLUMNS`, then
        the build's title and card columns (:func:`duplicates.report_columns`)."""
        vectors, ids, rows = self.state.vectors()
        metadata = [self.searcher.metadata(r) if r is not None else self.item(i).metadata
                    for i, r in zip(ids, rows, strict=True)]
        columns = duplicates.report_columns(self.roles)
        items = pd.DataFrame({"id": ids, **{c: [m.get(c, "") for m in metadata] for c in columns}})
        photos = [self.searcher.resolve_path(r) if r is not None else self.image(i)[0]
                  for i, r in zip(ids, rows, strict=True)]
        return duplicates.duplicate_groups(vectors, items, self.near_duplicate_cosine, photos,
                                           self.rule["max_pixel_difference"], columns)

    # ---------------------------------------------------------------- writes

    def put(self, item_id: str, image: bytes, metadata: dict, more_images: Sequence[bytes] = ()) -> PutResult:
        """Add or replace an item (its photo, and ``more_images``: its other photos, at most
        :data:`MAX_PHOTOS_PER_ITEM` in all); returns once the change is on disk and searchable."""
        item_id = validate_item_id(item_id)
        if 1 + len(more_images) > MAX_PHOTOS_PER_ITEM:
            raise LiveError(f"an item has at most {MAX_PHOTOS_PER_ITEM} photos; {1 + len(more_images)} were sent")
        roles = self.roles  # the build's own columns; its main label, when it has one, must be given
        metadata = validate_metadata(metadata, roles.metadata, (roles.label,) if roles.label else (),
                                     self.value_kinds())
        started = time.perf_counter()
        image = bytes(image)
        vector = self.searcher.embed_image(image)  # raises InvalidImageError for anything unusable
        more = []
        for number, data in enumerate(more_images, start=2):
            data = bytes(data)
            try:
                more.append((self.searcher.embed_image(data), data, _content_type(data)))
            except InvalidImageError as error:
                raise InvalidImageError(f"photo {number}: {error}") from None
        content_type = _content_type(image)
        embedded = time.perf_counter()
        near = self.near_duplicates(vector, image, exclude=item_id)
        with self._write_lock:
            change = self.store.append("put", item_id, self.build_id, self.model_key, vector, metadata, image,
                                       content_type, more, in_build=item_id in self.state.build_row)
            self._catch_up()  # every change up to this one, other writers' first: applied in seq order
        return PutResult(Item(item_id, metadata, "live", None, change.seq), not change.existed, change.seq, near,
                         (embedded - started) * 1e3, (time.perf_counter() - embedded) * 1e3)

    def remove(self, item_id: str) -> int:
        """Remove an item (build or live); returns the change's seq once it is on disk."""
        with self._write_lock:  # existence is decided in the write's own transaction (LiveStore.append)
            try:
                change = self.store.append("remove", item_id, self.build_id, self.model_key,
                                           in_build=item_id in self.state.build_row)
            finally:
                self._catch_up()  # refused too: another writer removed it, and this process should know
            return change.seq

    # ---------------------------------------------------------------- provenance

    def stats(self) -> dict:
        manifest = self.searcher.manifest
        with self.state.lock:
            live_items, removed = len(self.state.live), len(self.state.tombstones)
            applied = self.applied_seq
        fold = self.store.latest_fold()
        return {
            "catalogue_size": len(self),
            "build": {"build_id": self.build_id, "items": len(self.state.build_ids),
                      "created_at": manifest.get("created_at"),
                      "model_sha256": manifest["files"]["model"]["sha256"],
                      "index_sha256": manifest["files"]["index"]["sha256"],
                      "index_type": manifest["params"]["index"]["type"],
                      "backbone": manifest["params"].get("backbone")},
            "near_duplicates": {**self.rule, "calibration": manifest.get("near_duplicates")},
            "similarity": self.searcher.similarity.describe() if self.searcher.similarity else {"overall": {}},
            "catalogue": self.describe_columns(),
            "live": {"changes_since_build": self.store.count_after(self.folded_seq), "last_seq": applied,
                     "journal_last_seq": self.store.last_seq(),
                     "folded_through_seq": self.folded_seq, "live_items": live_items,
                     "build_items_removed_or_replaced": removed, "reembedded": self.reembedded,
                     "changes_not_applied": list(self.skipped),
                     "last_fold_written": fold,
                     "fold_waiting_for_a_build": bool(fold and fold["through_seq"] > self.folded_seq)},
        }


    def describe_columns(self) -> dict:
        """The build's columns as a client uses them: the filters a search takes (by the column's own name) with
        their values, the metadata fields an item carries and a write may set (``required`` must be given; a
        column in ``numbers`` takes a number), the title and card columns."""
        roles = self.roles
        return {"filters": self.filter_values(), "metadata": list(roles.metadata),
                "required": [roles.label] if roles.label else [], "numbers": self.value_kinds(),
                "label": roles.label, "title": roles.title, "card": list(roles.card)}


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
