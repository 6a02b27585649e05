"""Search by words, and by a photo or items plus words, with negatives: the query side of the text tower.

    text = TextSearch.load(searcher)                      # the build's tower, lexical index over its items
    text.search(Query(text="white sneakers"), k=10)       # words alone: lexical + learned, fused
    text.search(Query(image=photo, text="red", text_weight=0.5))      # "like this, but red"
    text.search(Query(item_ids=[15970], negative_text="leather"))     # "like this one, not leather"

Composition is vector arithmetic in the image embedding space (:func:`compose`): the weighted sum of
the unit vectors of the positive parts minus the weighted negative parts, renormalised. Words alone
are also ranked lexically (BM25 over the items' words) and the two rankings fused, so an exact name
or brand is found while photos without words are still found by the tower. Negative words also
remove the items whose own words contain all of them. Numpy, FAISS and SQLite only: no TensorFlow.
The words of an item are the columns the build's manifest names as ``words`` (the catalogue's roles), the
same the text stage trained and scored on; the fusion is the evaluation's (:func:`lookalike.text.lexical.fuse`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.artifacts import ArtifactMismatchError
from lookalike.catalogue.description import CatalogueRoles
from lookalike.model.preprocessing import ImageSource
from lookalike.search.engine import Searcher, SearchResponse
from lookalike.text.lexical import LexicalIndex, fuse
from lookalike.text.tower import TextQueryError, TextTower, check_query, item_text, unit, word_columns

MAX_ITEMS = 20  # item ids per query, positive or negative
MAX_WEIGHT = 10.0
DEFAULT_FUSION = {"fusion": "coverage", "lexical_weight": 0.5, "rrf_constant": 60, "depth": 100}


def compose(parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Unit vector of sum(weight * unit(vector)); negative weights subtract. Refused when nothing is left."""
    total = np.zeros_like(np.asarray(parts[0][0], dtype=np.float32)) if parts else None
    if total is None:
        raise TextQueryError("a query needs at least one of text, image or items")
    for vector, weight in parts:
        total = total + float(weight) * unit(np.asarray(vector, dtype=np.float32))
    if not np.isfinite(total).all() or np.linalg.norm(total) < 1e-6:
        raise TextQueryError("the query's parts cancel out (positive and negative parts are the same)")
    return unit(total)


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
        """The tower the searcher's build pins (its manifest's ``text_tower``); a build without one is refused."""
        files = searcher.manifest.get("files", {})
        if "text_tower" not in files or searcher.folder is None:
            raise ArtifactMismatchError("this build has no text tower (stage text): rebuild with dvc repro",
                                        kind="incomplete")
        tokenizer = searcher.folder / files["text_tokenizer"]["path"] if "text_tokenizer" in files else None
        if tokenizer is not None and tokenizer.stat().st_size == 0:
            tokenizer = None  # the tower was trained without the pretrained channel
        tower = TextTower.load(searcher.folder / files["text_tower"]["path"], tokenizer)
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
        parts: list[tuple[np.ndarray, float]] = []
        positive_rows = self._rows(query.item_ids, "item_ids")
        negative_rows = self._rows(query.negative_item_ids, "negative_item_ids")
        if query.text is not None and query.text.strip():
            parts.append((self.text_vector(query.text), _weight("text_weight", query.text_weight)))
        if query.image is not None:
            parts.append((self.searcher.embed_image(query.image), _weight("image_weight", query.image_weight)))
        item_weight = _weight("item_weight", query.item_weight)
        parts.extend((self.searcher.embeddings[row], item_weight / len(positive_rows)) for row in positive_rows)
        if not parts:
            raise TextQueryError("a query needs at least one of text, image or item_ids")
        negatives = len(negative_rows) + bool(query.negative_text and query.negative_text.strip())
        if negatives:
            share = _weight("negative_weight", query.negative_weight) / negatives
            if query.negative_text and query.negative_text.strip():
                parts.append((self.text_vector(query.negative_text), -share))
            parts.extend((self.searcher.embeddings[row], -share) for row in negative_rows)
        return compose(parts), positive_rows + negative_rows

    def search(self, query: Query, k: int = 5, filters: dict | None = None) -> SearchResponse:
        """The k best catalogue items for ``query``; words alone are ranked lexically and by the tower, fused."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise TextQueryError("k must be a positive integer")
        started = time.perf_counter()
        vector, named_rows = self.vector(query)
        embedded = time.perf_counter()
        allowed = self.searcher.allowed_rows(filters)
        excluded = set(named_rows)
        if query.negative_text and query.negative_text.strip():
            check_query(query.negative_text)  # items whose own words contain every negative word go
            rows, _ = self.lexical.search(query.negative_text, self.lexical.rows, allowed, every_word=True)
            excluded |= set(rows.tolist())
        depth = max(int(self.fusion["depth"]), k)
        if allowed is not None and excluded:
            allowed = np.setdiff1d(allowed, np.fromiter(excluded, dtype=np.int64))
        candidates = len(self.searcher.items) - len(excluded) if allowed is None else len(allowed)
        if candidates == 0:
            return SearchResponse([], candidates=0)
        learned_rows, learned_scores = self.searcher.top_rows(
            vector, depth, allowed, np.fromiter(excluded, dtype=np.int64) if allowed is None and excluded else None)
        if query.words_only() and query.text and query.text.strip():
            lexical_rows, bm25 = self.lexical.search(query.text, depth + len(excluded), allowed)
            keep = ~np.isin(lexical_rows, list(excluded))
            lexical_rows, bm25 = lexical_rows[keep], bm25[keep]
            rows, scores = fuse(lexical_rows, bm25, learned_rows, lambda r: self.searcher.embeddings[r] @ vector,
                                lambda r: self.lexical.coverage(query.text, r), self.fusion, k)
        else:
            rows, scores = learned_rows[:k], learned_scores[:k]
        matches = [self.searcher.match(rank, int(row), score)
                   for rank, (row, score) in enumerate(zip(rows.tolist(), scores.tolist(), strict=True), start=1)]
        total = time.perf_counter() - started
        return SearchResponse(matches, embed_ms=(embedded - started) * 1e3, search_ms=(total - (embedded - started))
                              * 1e3, total_ms=total * 1e3, candidates=candidates)


class LiveTextSearch:
    """Text search over a live catalogue (:class:`lookalike.live.LiveCatalogue`): the build's items less the
    removed and replaced ones, plus the live items, whose photo is searched by the tower and whose own words
    by BM25 (an index of the live items' words, rebuilt when they change). Item ids are the shop's strings."""

    def __init__(self, catalogue, text: TextSearch):
        self.catalogue = catalogue
        self.text = text
        self._live_key: tuple = ()
        self._live_ids: list[str] = []
        self._live_lexical = LexicalIndex()

    @classmethod
    def load(cls, catalogue) -> LiveTextSearch:
        return cls(catalogue, TextSearch.load(catalogue.searcher))

    def _live_index(self) -> tuple[list[str], LexicalIndex]:
        ids = self.catalogue.live_ids()
        items = {i: self.catalogue.item(i) for i in ids}
        key = tuple((i, items[i].seq) for i in ids)
        if key != self._live_key:
            lexical = LexicalIndex([item_text(items[i].metadata, self.text.words) for i in ids])
            self._live_ids, self._live_lexical, self._live_key = ids, lexical, key
        return self._live_ids, self._live_lexical

    def _vectors(self, item_ids: Sequence[int | str], what: str) -> list[np.ndarray]:
        from lookalike.live.records import UnknownItemError

        if isinstance(item_ids, (str, bytes)) or len(item_ids) > MAX_ITEMS:
            raise TextQueryError(f"{what} must be a list of at most {MAX_ITEMS} item ids")
        try:
            return [self.catalogue.vector(str(i)) for i in item_ids]
        except UnknownItemError as error:
            raise TextQueryError(f"{what}: {error}") from None

    def vector(self, query: Query) -> np.ndarray:
        """The composed query vector (see :func:`compose`)."""
        parts: list[tuple[np.ndarray, float]] = []
        positives = self._vectors(query.item_ids, "item_ids")
        negatives = self._vectors(query.negative_item_ids, "negative_item_ids")
        if query.text is not None and query.text.strip():
            parts.append((self.text.text_vector(query.text), _weight("text_weight", query.text_weight)))
        if query.image is not None:
            parts.append((self.catalogue.searcher.embed_image(query.image),
                          _weight("image_weight", query.image_weight)))
        item_weight = _weight("item_weight", query.item_weight)
        parts.extend((v, item_weight / len(positives)) for v in positives)
        if not parts:
            raise TextQueryError("a query needs at least one of text, image or item_ids")
        has_negative_text = bool(query.negative_text and query.negative_text.strip())
        if negatives or has_negative_text:
            share = _weight("negative_weight", query.negative_weight) / (len(negatives) + has_negative_text)
            if has_negative_text:
                parts.append((self.text.text_vector(query.negative_text), -share))
            parts.extend((v, -share) for v in negatives)
        return compose(parts)

    def _lexical(self, text: str, depth: int, filters: dict | None, every_word: bool = False) -> dict[str, float]:
        """id -> BM25 (higher better) of build and live items whose words match, as the catalogue holds them now."""
        searcher, state = self.catalogue.searcher, self.catalogue.state
        rows, scores = self.text.lexical.search(text, depth, searcher.allowed_rows(filters), every_word)
        found = {}
        for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
            item_id = state.build_ids[row]
            if self.catalogue.build_row(item_id) == row:  # not removed, not replaced by a live version
                found[item_id] = score
        ids, lexical = self._live_index()
        active = {c: set(v) for c, v in (filters or {}).items() if v}
        slots, scores = lexical.search(text, depth, None, every_word)
        for slot, score in zip(slots.tolist(), scores.tolist(), strict=True):
            metadata = self.catalogue.item(ids[slot]).metadata
            if all(metadata.get(c) in values for c, values in active.items()):
                found[ids[slot]] = score
        return found

    def _coverage(self, text: str, item_ids: list[str]) -> np.ndarray:
        ids, lexical = self._live_index()
        slot = {i: n for n, i in enumerate(ids)}
        out = np.zeros(len(item_ids))
        build = [(n, self.catalogue.build_row(i)) for n, i in enumerate(item_ids) if i not in slot]
        build = [(n, r) for n, r in build if r is not None]
        if build:
            out[[n for n, _ in build]] = self.text.lexical.coverage(text, np.array([r for _, r in build]))
        live = [(n, slot[i]) for n, i in enumerate(item_ids) if i in slot]
        if live:
            out[[n for n, _ in live]] = lexical.coverage(text, np.array([s for _, s in live]))
        return out

    def search(self, query: Query, k: int = 5, filters: dict | None = None):
        """The k best items for ``query`` (a :class:`lookalike.live.records.LiveResponse`), live items included."""
        from lookalike.live.records import Hit, LiveResponse

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise TextQueryError("k must be a positive integer")
        started = time.perf_counter()
        vector = self.vector(query)
        embedded = time.perf_counter()
        excluded = {str(i) for i in [*query.item_ids, *query.negative_item_ids]}
        if query.negative_text and query.negative_text.strip():
            check_query(query.negative_text)
            excluded |= set(self._lexical(query.negative_text, len(self.catalogue.searcher.items) + len(
                self._live_index()[0]), filters, every_word=True))
        depth = max(int(self.text.fusion["depth"]), k)
        learned = self.catalogue.search_vector(vector, depth + len(excluded), filters)
        hits = {h.id: h for h in learned.matches if h.id not in excluded}
        learned_ids = list(hits)[:depth]
        if query.words_only() and query.text and query.text.strip():
            lexical = {i: s for i, s in self._lexical(query.text, depth + len(excluded), filters).items()
                       if i not in excluded}
            lexical_ids = sorted(lexical, key=lambda i: -lexical[i])
            keys = list(dict.fromkeys([*learned_ids, *lexical_ids]))  # the fusion ranks int keys: key n is keys[n]
            key_of = {i: n for n, i in enumerate(keys)}
            order, scores = fuse(
                np.array([key_of[i] for i in lexical_ids], np.int64), np.array([lexical[i] for i in lexical_ids]),
                np.arange(len(learned_ids), dtype=np.int64),
                lambda found: np.array([float(self.catalogue.vector(keys[n]) @ vector) for n in found.tolist()]),
                lambda found: self._coverage(query.text, [keys[n] for n in found.tolist()]), self.text.fusion, k)
            chosen = [(keys[n], float(score)) for n, score in zip(order.tolist(), scores.tolist(), strict=True)]
        else:
            chosen = [(i, hits[i].score) for i in learned_ids[:k]]
        matches = []
        for rank, (item_id, score) in enumerate(chosen, start=1):
            item = self.catalogue.item(item_id)
            matches.append(Hit(rank, item_id, score, item.metadata, item.source, item.image_path))
        total = time.perf_counter() - started
        return LiveResponse(matches, embed_ms=(embedded - started) * 1e3,
                            search_ms=(total - (embedded - started)) * 1e3, total_ms=total * 1e3,
                            candidates=learned.candidates)


_loaded_lock = threading.Lock()


def text_search_for(catalogue) -> TextSearch | LiveTextSearch:
    """The text search of a :class:`Searcher` or a live catalogue, loaded once per loaded build (a page or a
    server keeps them for as long as it keeps the build)."""
    with _loaded_lock:
        found = getattr(catalogue, "_text_search", None)
        if found is None:
            found = TextSearch.load(catalogue) if isinstance(catalogue, Searcher) else LiveTextSearch.load(catalogue)
            catalogue._text_search = found  # lives and goes with the build it searches
        return found


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
    """Run ``lookalike query`` with words and/or items through the build's text search."""
    query = Query(text=args.text, image=args.image, item_ids=args.like, negative_text=args.negative,
                  negative_item_ids=args.unlike, text_weight=args.text_weight, image_weight=args.image_weight,
                  item_weight=args.item_weight, negative_weight=args.negative_weight)
    return TextSearch.load(searcher).search(query, args.k)
