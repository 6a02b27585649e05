"""Search by words, and by a photo or items plus words, with negatives: the query side of the text tower.

    text = TextSearch.load(searcher)                      # the build's tower, lexical index over its items
    text.search(Query(text="white sneakers"), k=10)       # words alone: lexical + learned, fused
    text.search(Query(image=photo, text="red", text_weight=0.5))      # "like this, but red"
    text.search(Query(item_ids=[15970], negative_text="leather"))     # "like this one, not leather"

Composition is vector arithmetic in the image embedding space (:func:`compose`): the weighted sum of
the positive parts minus the weighted negative parts, renormalised. Photos and items are unit vectors; words are
the tower's vectors, whose inner product with a stored vector is the cosine in the space the tower was trained into
(one sub-space of the stored vectors, or all of it), so a word's weight means the same wherever it lands. Words alone
are also ranked lexically (BM25 over the items' words) and the two rankings fused, so an exact name
or brand is found while photos without words are still found by the tower. Negative words also
remove the items whose own words contain all of them. Numpy, FAISS and SQLite only: no TensorFlow.
The words of an item are the columns the build's manifest names as ``words`` (the catalogue's roles), the
same the text stage trained and scored on; the fusion is the evaluation's (:func:`lookalike.text.lexical.fuse`).

A query's work is bounded by its k, never by the catalogue's size: negative words are left out by the word
index itself (SQLite's NOT) and checked on the tower's ranked candidates, at most :data:`NEGATIVE_OVERFETCH`
times the query's depth; a query names at most :data:`MAX_ITEMS` items each way. A build's text search (its
tower, the word index over every item) is made once per loaded build, by :func:`prepare_text_search` where the
server loads builds, so no request pays for it and a build folder pruned or republished later changes nothing
served. ``similarity`` re-weights the vector of a photo or items; words are matched by what they say, so it is
refused beside them (:data:`SIMILARITY_WITH_WORDS`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.artifacts import ArtifactMismatchError, sha256_file
from lookalike.catalogue.description import CatalogueRoles
from lookalike.live.records import Hit, LiveResponse, UnknownItemError
from lookalike.model.preprocessing import ImageSource
from lookalike.search.engine import Searcher, SearchResponse
from lookalike.search.similarity import Similarity, SimilarityError
from lookalike.text.lexical import LexicalIndex, fuse
from lookalike.text.tower import TextQueryError, TextTower, check_query, item_text, unit, word_columns

log = logging.getLogger("lookalike.text")

MAX_ITEMS = 20  # item ids per query, positive or negative
MAX_WEIGHT = 10.0
DEFAULT_FUSION = {"fusion": "coverage", "lexical_weight": 0.5, "name_weight": 0.0, "rrf_constant": 60, "depth": 100}
# a query with negative words ranks this many times its depth by the tower, then leaves out the items holding them:
# enough survivors unless nearly every close item holds the words, and the same work in any catalogue
NEGATIVE_OVERFETCH = 4
SIMILARITY_WITH_WORDS = ("similarity cannot be combined with words: words are matched by what they say (the text "
                         "model and the items' own words), not by one aspect such as colour; give similarity with "
                         "a photo or items alone")


def negative_words(query: Query) -> str | None:
    """The query's negative words, checked; None without any."""
    if query.negative_text is None or not query.negative_text.strip():
        return None
    check_query(query.negative_text)
    return query.negative_text


def asked_similarity(searcher: Searcher, query: Query, similarity: str | dict | None) -> str | dict | None:
    """``similarity`` when it asks something of this build (None for the default, "overall"); refused beside words
    (:class:`TextQueryError`) and when the build cannot answer it (:class:`~lookalike.search.similarity.
    SimilarityError`)."""
    layout = searcher.similarity or Similarity.from_manifest(searcher.manifest)
    if layout.weights(similarity) is None:
        return None
    if any(isinstance(text, str) and text.strip() for text in (query.text, query.negative_text)):
        raise TextQueryError(SIMILARITY_WITH_WORDS)
    return similarity


def compose(parts: Sequence[tuple[np.ndarray, float]], length: float = 1.0) -> np.ndarray:
    """sum(weight * vector) scaled to ``length``; negative weights subtract. Refused when nothing is left.

    ``length`` 1 for a query with a photo or items (its scores are cosines in the whole stored vector); the text
    tower's :attr:`~lookalike.text.tower.TextTower.scale` for words alone, so that their scores stay cosines in the
    tower's own space, which the hybrid ranking adds to the share of words matched (:func:`query_length`)."""
    total = np.zeros_like(np.asarray(parts[0][0], dtype=np.float32)) if parts else None
    if total is None:
        raise TextQueryError("a query needs at least one of text, image or items")
    for vector, weight in parts:
        total = total + float(weight) * np.asarray(vector, dtype=np.float32)
    if not np.isfinite(total).all() or np.linalg.norm(total) < 1e-6:
        raise TextQueryError("the query's parts cancel out (positive and negative parts are the same)")
    return unit(total) * np.float32(length)


def query_length(tower: TextTower, query: Query) -> float:
    """The length :func:`compose` gives ``query``'s vector: the tower's scale for words alone, else 1."""
    only_words = query.words_only() and not query.negative_item_ids
    return tower.scale if only_words else 1.0


def _weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_WEIGHT:
        raise TextQueryError(f"{name} must be a number between 0 and {MAX_WEIGHT:g}, not {value!r}")
    return float(value)


@dataclass
class Query:
    """What a shopper asked for. At least one positive part (text, image or item_ids) is needed."""

    text: str | None = None
    image: ImageSource | None = None
    item_ids: Sequence[int | str] = ()  # build ids (ints) for TextSearch; shop ids (str) for LiveTextSearch
    negative_text: str | None = None
    negative_item_ids: Sequence[int | str] = ()
    text_weight: float = 1.0
    image_weight: float = 1.0
    item_weight: float = 1.0  # shared by the positive items
    negative_weight: float = 0.5  # shared by the negative words and items

    def words_only(self) -> bool:
        return self.image is None and not self.item_ids


@dataclass
class TextSearch:
    """A build's text tower and lexical index beside its :class:`~lookalike.search.engine.Searcher`; thread-safe.

    ``words``: the columns of an item's words; None reads them from the build's manifest (its catalogue's
    roles; a build from before roles names none, and is ranked by the tower alone)."""

    searcher: Searcher
    tower: TextTower
    fusion: dict = field(default_factory=lambda: dict(DEFAULT_FUSION))
    lexical: LexicalIndex | None = None
    words: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.tower.dimension != self.searcher.embeddings.shape[1]:
            raise ArtifactMismatchError(f"the text tower's output dimension {self.tower.dimension} is not the "
                                        f"build's {self.searcher.embeddings.shape[1]}: rebuild with dvc repro")
        if self.words is None:
            self.words = word_columns(CatalogueRoles.from_manifest(self.searcher.manifest))
        if self.lexical is None:
            self.lexical = LexicalIndex([item_text(r, self.words) for r in self.searcher.items.to_dict("records")])

    @classmethod
    def load(cls, searcher: Searcher) -> TextSearch:
        """The tower the searcher's build pins (its manifest's ``text_tower``), checked against the manifest's hashes:
        a build without one, or whose folder now holds other files (republished), is refused."""
        files = searcher.manifest.get("files", {})
        if "text_tower" not in files or searcher.folder is None:
            raise ArtifactMismatchError("this build has no text tower (stage text): rebuild with dvc repro",
                                        kind="incomplete")
        tokenizer = searcher.folder / files["text_tokenizer"]["path"] if "text_tokenizer" in files else None
        if tokenizer is not None:
            _check_file(tokenizer, files["text_tokenizer"], "text_tokenizer")
            if tokenizer.stat().st_size == 0:
                tokenizer = None  # the tower was trained without the pretrained channel
        tower_bytes = _read_checked(searcher.folder / files["text_tower"]["path"], files["text_tower"], "text_tower")
        tower = TextTower.load(io.BytesIO(tower_bytes), tokenizer)
        settings = searcher.manifest.get("params", {}).get("text", {})
        fusion = {k: settings.get(k, v) for k, v in DEFAULT_FUSION.items()}
        return cls(searcher, tower, fusion)

    def text_vector(self, text: str) -> np.ndarray:
        """float32 (dim,) unit vector of a checked query text."""
        cleaned = check_query(text)
        if self.tower.known_tokens(cleaned) == 0:
            raise TextQueryError(f"none of the words of {text!r} are known to the text model")
        return self.tower.encode([cleaned])[0]

    def _rows(self, item_ids: Sequence[int], what: str) -> list[int]:
        if isinstance(item_ids, (str, bytes)) or len(item_ids) > MAX_ITEMS:
            raise TextQueryError(f"{what} must be a list of at most {MAX_ITEMS} item ids")
        rows = []
        for item_id in item_ids:
            try:
                rows.append(self.searcher.row_of(item_id))
            except KeyError as error:
                raise TextQueryError(f"{what}: {error.args[0]}") from None
        return rows

    def vector(self, query: Query) -> tuple[np.ndarray, list[int]]:
        """The composed query vector, and the rows of the items the query names (never returned)."""
        positive_rows = self._rows(query.item_ids, "item_ids")
        negative_rows = self._rows(query.negative_item_ids, "negative_item_ids")
        vector = self.compose_query(query, [self.searcher.embeddings[row] for row in positive_rows],
                                    [self.searcher.embeddings[row] for row in negative_rows])
        return vector, positive_rows + negative_rows

    def compose_query(self, query: Query, positives: Sequence[np.ndarray], negatives: Sequence[np.ndarray]
                      ) -> np.ndarray:
        """The query's vector (:func:`compose`) from its words, its photo and the vectors of the items it names
        (``positives``, ``negatives``: a build's rows or a live catalogue's items, as the caller finds them)."""
        parts: list[tuple[np.ndarray, float]] = []
        if query.text is not None and query.text.strip():
            parts.append((self.text_vector(query.text), _weight("text_weight", query.text_weight)))
        if query.image is not None:
            parts.append((self.searcher.embed_image(query.image), _weight("image_weight", query.image_weight)))
        item_weight = _weight("item_weight", query.item_weight)
        parts.extend((vector, item_weight / len(positives)) for vector in positives)
        if not parts:
            raise TextQueryError("a query needs at least one of text, image or item_ids")
        has_negative_text = bool(query.negative_text and query.negative_text.strip())
        if len(negatives) or has_negative_text:
            share = _weight("negative_weight", query.negative_weight) / (len(negatives) + has_negative_text)
            if has_negative_text:
                parts.append((self.text_vector(query.negative_text), -share))
            parts.extend((vector, -share) for vector in negatives)
        return compose(parts, query_length(self.tower, query))

    def search(self, query: Query, k: int = 5, filters: dict | None = None,
               similarity: str | dict | None = None) -> SearchResponse:
        """The k best catalogue items for ``query``; words alone are ranked lexically and by the tower, fused.
        ``similarity`` re-weights a photo's or items' vector (:func:`asked_similarity`; refused beside words)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise TextQueryError("k must be a positive integer")
        started = time.perf_counter()
        similarity = asked_similarity(self.searcher, query, similarity)
        vector, named_rows = self.vector(query)
        negative = negative_words(query)
        embedded = time.perf_counter()
        vector = self.searcher.query_vector(vector, similarity)
        allowed = self.searcher.allowed_rows(filters)
        named = np.unique(np.asarray(named_rows, dtype=np.int64))
        if allowed is not None and len(named):
            allowed = np.setdiff1d(allowed, named)
        candidates = len(self.searcher.items) - len(named) if allowed is None else len(allowed)
        if candidates == 0:
            return SearchResponse([], candidates=0)
        depth = max(int(self.fusion["depth"]), k)
        learned_rows, learned_scores = self.searcher.top_rows(
            vector, depth * NEGATIVE_OVERFETCH if negative else depth, allowed,
            named if allowed is None and len(named) else None)
        if negative:  # the ranked candidates whose own words hold every negative word go
            keep = ~self.lexical.holding(self.lexical.terms(negative), learned_rows)
            learned_rows, learned_scores = learned_rows[keep][:depth], learned_scores[keep][:depth]
        if query.words_only() and query.text and query.text.strip():
            lexical_rows, bm25 = self.lexical.search(query.text, depth + len(named), allowed, without=negative)
            keep = ~np.isin(lexical_rows, named)
            lexical_rows, bm25 = lexical_rows[keep], bm25[keep]
            rows, scores = fuse(lexical_rows, bm25, learned_rows, lambda r: self.searcher.embeddings[r] @ vector,
                                lambda r: self.lexical.shares(query.text, r), self.fusion, k)
        else:
            rows, scores = learned_rows[:k], learned_scores[:k]
        matches = [self.searcher.match(rank, int(row), score)
                   for rank, (row, score) in enumerate(zip(rows.tolist(), scores.tolist(), strict=True), start=1)]
        total = time.perf_counter() - started
        return SearchResponse(matches, embed_ms=(embedded - started) * 1e3, search_ms=(total - (embedded - started))
                              * 1e3, total_ms=total * 1e3, candidates=candidates)


def _read_checked(path: Path, entry: dict, name: str) -> bytes:
    """A build file's bytes, read once and checked against the manifest's hash: its folder may have been republished
    or rewritten since the build was loaded."""
    data = path.read_bytes()
    if entry.get("sha256") and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise _changed_since_loaded(path, name)
    return data


def _check_file(path: Path, entry: dict, name: str) -> None:
    """:func:`_read_checked` for a file read later by its path (the pretrained tokenizer)."""
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise _changed_since_loaded(path, name)


def _changed_since_loaded(path: Path, name: str) -> ArtifactMismatchError:
    """The refusal of a build file that no longer matches its manifest; it names no server path (the log does)."""
    log.error("%s no longer matches the manifest of the build it was loaded with", path)
    return ArtifactMismatchError(f"the build's {name} file has changed since the build was loaded (its folder was "
                                 "republished or rewritten): load the published build again")


@dataclass(frozen=True, eq=False)
class WordPart:
    """Some live items' words: ids and metadata by slot, and their BM25 index. Never changed once made."""

    ids: tuple[str, ...] = ()
    metadata: tuple[dict, ...] = ()
    lexical: LexicalIndex | None = None  # None for no items

    def __post_init__(self) -> None:
        object.__setattr__(self, "_slots", {item_id: n for n, item_id in enumerate(self.ids)})

    def slot(self, item_id: str) -> int | None:
        return self._slots.get(item_id)


@dataclass(frozen=True, eq=False)
class LiveWords:
    """The live items' words as of one journal position (``seq``), in two parts: ``base``, made from every live
    item as of ``base_seq``, and ``recent``, the items written since (``stale``: the base's items written or
    removed since, never answered from the base). A write remakes only the recent part; the base is remade when
    the recent part outgrows :func:`recent_limit`, so a write costs about the square root of the live items, not
    all of them. Never changed once made, so a query reads one consistent snapshot without a lock."""

    seq: int
    base_seq: int = -1
    base: WordPart = field(default_factory=WordPart)
    recent: WordPart = field(default_factory=WordPart)
    stale: frozenset[str] = frozenset()

    def where(self, item_id: str) -> tuple[WordPart, int] | None:
        """The part and slot holding the item's current words; None for an item that is not live here."""
        slot = self.recent.slot(item_id)
        if slot is not None:
            return self.recent, slot
        slot = None if item_id in self.stale else self.base.slot(item_id)
        return (self.base, slot) if slot is not None else None

    def parts(self) -> list[tuple[WordPart, frozenset[str]]]:
        """Each part that holds items, with the ids it must not answer for."""
        return [(part, stale) for part, stale in ((self.base, self.stale), (self.recent, frozenset()))
                if part.lexical is not None]


def recent_limit(live_items: int) -> int:
    """How many items written since the base the recent part holds before the base is remade: about
    sqrt(2 n), which makes a write's share of the rebuilding (the recent part's size, plus the base's n spread over
    that many writes) smallest."""
    return max(64, int(math.sqrt(2 * live_items)))


class LiveTextSearch:
    """Text search over a live catalogue (:class:`lookalike.live.LiveCatalogue`): the build's items less the
    removed and replaced ones, plus the live items, whose photo is searched by the tower and whose own words
    by BM25 (an index of the live items' words, remade by one thread when the journal moved). Item ids are the
    shop's strings. Thread-safe: an item removed while a query runs is left out of its answer."""

    def __init__(self, catalogue, text: TextSearch):
        self.catalogue = catalogue
        self.text = text
        self._live_words = LiveWords(seq=-2)  # below any journal position: the first query makes the base
        self._live_words_lock = threading.Lock()  # one rebuild at a time; readers take the snapshot as it is

    @classmethod
    def load(cls, catalogue) -> LiveTextSearch:
        """The live catalogue's text search over its build's (shared with the searcher's, made once)."""
        return cls(catalogue, text_search_for(catalogue.searcher))

    def _live_index(self) -> LiveWords:
        """The live items' words as the catalogue holds them now (remade only when the journal moved: the items
        written since the base, or, when those are many, everything: :class:`LiveWords`)."""
        current = self._live_words
        if current.seq == self.catalogue.applied_seq:
            return current
        with self._live_words_lock:
            current = self._live_words
            if current.base_seq >= 0:
                seq, live_ids, written = self.catalogue.live_words_since(current.base_seq)
                if current.seq == seq:
                    return current
                if len(written) <= recent_limit(len(live_ids)):  # the recent part alone is remade
                    stale = frozenset(i for i in current.base.ids if i not in live_ids or i in written)
                    self._live_words = LiveWords(seq, current.base_seq, current.base, self._part(written), stale)
                    return self._live_words
            seq, _, everything = self.catalogue.live_words_since(-1)
            self._live_words = LiveWords(seq, seq, self._part(everything))
            return self._live_words

    def _part(self, items: dict[str, dict]) -> WordPart:
        """An index of ``items`` (id -> metadata), whose words the build's own index spells right."""
        if not items:
            return WordPart()
        ordered = sorted(items)
        return WordPart(tuple(ordered), tuple(items[i] for i in ordered),
                        LexicalIndex([item_text(items[i], self.text.words) for i in ordered], known=self.text.lexical))

    def _vectors(self, item_ids: Sequence[int | str], what: str) -> list[np.ndarray]:
        if isinstance(item_ids, (str, bytes)) or len(item_ids) > MAX_ITEMS:
            raise TextQueryError(f"{what} must be a list of at most {MAX_ITEMS} item ids")
        try:
            return [self.catalogue.vector(str(i)) for i in item_ids]
        except UnknownItemError as error:
            raise TextQueryError(f"{what}: {error}") from None

    def vector(self, query: Query) -> np.ndarray:
        """The composed query vector (see :func:`compose`); named items build or live."""
        return self.text.compose_query(query, self._vectors(query.item_ids, "item_ids"),
                                       self._vectors(query.negative_item_ids, "negative_item_ids"))

    def _lexical(self, text: str, depth: int, filters: dict | None, without: str | None = None
                 ) -> dict[str, float]:
        """id -> BM25 (higher better) of build and live items whose words match and do not hold every word of
        ``without``, as the catalogue holds them now."""
        searcher, build_ids = self.catalogue.searcher, self.catalogue.state.build_ids
        rows, scores = self.text.lexical.search(text, depth, searcher.allowed_rows(filters), without=without)
        found = {}
        for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
            item_id = build_ids[row]
            if self.catalogue.build_row(item_id) == row:  # not removed, not replaced by a live version
                found[item_id] = score
        active = {c: set(v) for c, v in (filters or {}).items() if v}
        for part, stale in self._live_index().parts():
            slots, scores = part.lexical.search(text, depth + len(stale), None, without=without)
            for slot, score in zip(slots.tolist(), scores.tolist(), strict=True):
                if part.ids[slot] not in stale and all(part.metadata[slot].get(c) in values
                                                       for c, values in active.items()):
                    found[part.ids[slot]] = score
        return found

    def _holding(self, terms: frozenset[str], hits: list) -> list[bool]:
        """Whether each ranked hit's own words hold every one of ``terms``: a build item's from the build's word
        index, a live item's from the metadata it was ranked with."""
        build_row = self.catalogue.state.build_row
        rows = [build_row[h.id] for h in hits if h.source == "build"]
        held = iter(self.text.lexical.holding(terms, np.array(rows, dtype=np.int64)).tolist())
        return [next(held) if h.source == "build" else
                bool(terms) and terms <= self.text.lexical.terms(item_text(h.metadata, self.text.words))
                for h in hits]

    def _shares(self, text: str, item_ids: list[str]) -> np.ndarray:
        """(2, len(item_ids)): :meth:`LexicalIndex.shares` of each item, build or live, in its own index."""
        live = self._live_index()
        out = np.zeros((2, len(item_ids)))
        places = [live.where(i) for i in item_ids]
        build = [(n, self.catalogue.build_row(i)) for n, (i, place) in enumerate(zip(item_ids, places, strict=True))
                 if place is None]
        build = [(n, r) for n, r in build if r is not None]
        if build:
            out[:, [n for n, _ in build]] = self.text.lexical.shares(text, np.array([r for _, r in build]))
        for part, _ in live.parts():
            slots = [(n, place[1]) for n, place in enumerate(places) if place is not None and place[0] is part]
            if slots:
                out[:, [n for n, _ in slots]] = part.lexical.shares(text, np.array([s for _, s in slots]))
        return out

    def _cosines(self, item_ids: list[str], vector: np.ndarray) -> np.ndarray:
        """The query vector's cosine to each item; -inf for one removed since it was ranked (last, then skipped)."""
        out = np.full(len(item_ids), -np.inf)
        for n, item_id in enumerate(item_ids):
            try:
                out[n] = float(self.catalogue.vector(item_id) @ vector)
            except UnknownItemError:
                continue
        return out

    def search(self, query: Query, k: int = 5, filters: dict | None = None,
               similarity: str | dict | None = None) -> LiveResponse:
        """The k best items for ``query`` (a :class:`lookalike.live.records.LiveResponse`), live items included;
        ``similarity`` as :meth:`TextSearch.search`. An item removed meanwhile is left out (maybe fewer than k)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise TextQueryError("k must be a positive integer")
        started = time.perf_counter()
        similarity = asked_similarity(self.catalogue.searcher, query, similarity)
        vector = self.vector(query)
        negative = negative_words(query)
        embedded = time.perf_counter()
        named = {str(i) for i in [*query.item_ids, *query.negative_item_ids]}
        depth = max(int(self.text.fusion["depth"]), k)
        pool = depth * NEGATIVE_OVERFETCH if negative else depth  # as TextSearch.search: the same ranking
        learned = self.catalogue.search_vector(vector, pool + len(named), filters, similarity=similarity)
        hits = [h for h in learned.matches if h.id not in named][:pool]
        if negative:  # the ranked candidates whose own words hold every negative word go
            held = self._holding(self.text.lexical.terms(negative), hits)
            hits = [h for h, holds in zip(hits, held, strict=True) if not holds]
        hits = hits[:depth]
        learned_ids = [h.id for h in hits]
        if query.words_only() and query.text and query.text.strip():
            lexical = {i: s for i, s in self._lexical(query.text, depth + len(named), filters, negative).items()
                       if i not in named}
            lexical_ids = sorted(lexical, key=lambda i: -lexical[i])
            keys = list(dict.fromkeys([*learned_ids, *lexical_ids]))  # the fusion ranks int keys: key n is keys[n]
            key_of = {i: n for n, i in enumerate(keys)}
            order, scores = fuse(
                np.array([key_of[i] for i in lexical_ids], np.int64), np.array([lexical[i] for i in lexical_ids]),
                np.arange(len(learned_ids), dtype=np.int64),
                lambda found: self._cosines([keys[n] for n in found.tolist()], vector),
                lambda found: self._shares(query.text, [keys[n] for n in found.tolist()]), self.text.fusion, k)
            chosen = [(keys[n], float(score)) for n, score in zip(order.tolist(), scores.tolist(), strict=True)]
        else:
            chosen = [(h.id, h.score) for h in hits[:k]]
        matches = []
        for item_id, score in chosen:
            try:
                item = self.catalogue.item(item_id)
            except UnknownItemError:  # removed between the ranking and this read: not an answer any more
                continue
            matches.append(Hit(len(matches) + 1, item_id, score, item.metadata, item.source, item.image_path))
        total = time.perf_counter() - started
        return LiveResponse(matches, embed_ms=(embedded - started) * 1e3,
                            search_ms=(total - (embedded - started)) * 1e3, total_ms=total * 1e3,
                            candidates=learned.candidates, build_id=self.catalogue.build_id)


class TextSearchUnavailable(ArtifactMismatchError):
    """Why a loaded build answers no words (no text tower, or its files could not be read when it was loaded);
    remembered with the build, so every text query says so without touching its folder again."""


def text_search_for(catalogue) -> TextSearch | LiveTextSearch:
    """The text search of a :class:`Searcher` or a live catalogue, made once per loaded build (a page or a server
    keeps it for as long as it keeps the build); :class:`TextSearchUnavailable` when the build has none.

    Made under a lock of that build's own: loading one build (a swap being prepared) never holds up the queries
    of another; once made it is read without a lock."""
    found = getattr(catalogue, "_text_search", None)
    if found is None:
        lock = catalogue.__dict__.setdefault("_text_search_lock", threading.Lock())  # setdefault is atomic
        with lock:
            found = getattr(catalogue, "_text_search", None)
            if found is None:
                found = _load_text_search(catalogue)
                catalogue._text_search = found  # lives and goes with the build it searches
    if isinstance(found, TextSearchUnavailable):
        raise found
    return found


def _load_text_search(catalogue) -> TextSearch | LiveTextSearch | TextSearchUnavailable:
    try:
        return TextSearch.load(catalogue) if isinstance(catalogue, Searcher) else LiveTextSearch.load(catalogue)
    except TextSearchUnavailable as error:
        return error
    except ArtifactMismatchError as error:
        return TextSearchUnavailable(str(error), error.kind)
    except (OSError, ValueError) as error:  # the folder was pruned or holds something else since the build loaded
        log.error("the text search of build %s cannot be loaded: %s", _build_name(catalogue), error)
        return TextSearchUnavailable("the text model of this build cannot be read (its build folder was changed or "
                                     "removed after the build was loaded); the server log says which file",
                                     "incomplete")


def _build_name(catalogue) -> str:
    searcher = catalogue if isinstance(catalogue, Searcher) else catalogue.searcher
    return str(searcher.manifest.get("build_id", "?"))


def prepare_text_search(catalogue) -> None:
    """Make a just-loaded build's text search now (its tower, the word index over every item): called where builds
    are loaded (the service's loader, before a build is swapped in), so no request pays for it and a folder pruned
    or republished later changes nothing served. A build without one is noted; its text queries say why."""
    try:
        text_search_for(catalogue)
    except TextSearchUnavailable as error:
        log.info("build %s answers no words: %s", _build_name(catalogue), error)


def add_query_arguments(parser) -> None:
    """``lookalike query``'s words, items and weights (the photo stays the positional argument)."""
    parser.add_argument("--text", default=None, help="words to look for, alone or with the photo ('in red')")
    parser.add_argument("--negative", default=None, metavar="WORDS", help="words to move away from")
    parser.add_argument("--like", type=int, action="append", default=[], metavar="ID",
                        help="a catalogue item the results should resemble (repeatable)")
    parser.add_argument("--unlike", type=int, action="append", default=[], metavar="ID",
                        help="a catalogue item the results should not resemble (repeatable)")
    for part, default in (("text", 1.0), ("image", 1.0), ("item", 1.0), ("negative", 0.5)):
        parser.add_argument(f"--{part}-weight", type=float, default=default, metavar="W",
                            help=f"weight of the {part} part (default {default:g}, at most {MAX_WEIGHT:g})")


def wants_text_search(args) -> bool:
    """True when ``lookalike query`` was given words or items, not only a photo."""
    return args.text is not None or args.negative is not None or bool(args.like) or bool(args.unlike)


def query_from_arguments(searcher: Searcher, args) -> SearchResponse:
    """Run ``lookalike query`` with words and/or items through the build's text search (``--similarity`` as the
    service takes it: applied to a photo and items, refused beside words)."""
    query = Query(text=args.text, image=args.image, item_ids=args.like, negative_text=args.negative,
                  negative_item_ids=args.unlike, text_weight=args.text_weight, image_weight=args.image_weight,
                  item_weight=args.item_weight, negative_weight=args.negative_weight)
    try:
        return TextSearch.load(searcher).search(query, args.k, similarity=getattr(args, "similarity", None))
    except SimilarityError as error:
        raise TextQueryError(str(error)) from None
