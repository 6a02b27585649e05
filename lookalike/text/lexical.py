"""Lexical ranking over the items' words (SQLite FTS5, BM25) and its fusion with the learned ranking.

A shopper typing a brand or an exact name expects it found: BM25 over the title and attribute
phrases does that, stemmed (porter) and without diacritics, the query's words OR-ed so a word the
catalogue never uses does not empty the result. A query word of 4+ letters the index does not hold
("blak", "sandles") is first replaced by its closest catalogue word (:mod:`lookalike.text.spelling`, the rule
the tower's queries follow too), since a misspelling otherwise matches nothing. It finds only items with words;
the learned tower finds photos. :func:`fuse` merges the two rankings: the one fusion the service runs and the
evaluation scores, so a metric measures what a shopper gets.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Sequence

import numpy as np

from lookalike.text.spelling import Speller, correctable
from lookalike.text.tower import words

TOKENIZER = "porter unicode61 remove_diacritics 2"
CORRECTION_CACHE = 4096  # typed words remembered with their correction until the vocabulary changes
FUSIONS = ("coverage", "score", "rrf")  # text.fusion: how :func:`fuse` merges the lexical and learned rankings


class LexicalIndex:
    """BM25 over one text per gallery row (row = rowid - 1); rows can be added or replaced later (live items).

    Safe to share between threads: one in-memory connection behind a lock (a query takes milliseconds).
    """

    def __init__(self, texts: Sequence[str] = (), known: LexicalIndex | None = None):
        """``known``: a larger index whose words count as spelt right here too and whose catalogue words
        misspellings are matched as first (the live items' index beside their build's: a word of the build is
        never "corrected" into a live item's word)."""
        self._known = known
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            self._db.execute(f"CREATE VIRTUAL TABLE docs USING fts5(words, tokenize='{TOKENIZER}')")
        except sqlite3.OperationalError as error:
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} has no FTS5 ({error}): if TensorFlow was imported "
                               "before sqlite3 its bundled SQLite is the one in use; import sqlite3 first") from error
        # the terms each row holds, as FTS5 indexed them (stemmed), and how many rows hold each: for coverage
        self._db.execute("CREATE VIRTUAL TABLE docs_terms USING fts5vocab(docs, 'instance')")
        self._db.execute(f"CREATE VIRTUAL TABLE probe USING fts5(words, tokenize='{TOKENIZER}')")
        self._db.execute("CREATE VIRTUAL TABLE probe_terms USING fts5vocab(probe, 'row')")
        self._db.execute("CREATE VIRTUAL TABLE probe_instances USING fts5vocab(probe, 'instance')")
        self._lock = threading.Lock()
        self._terms: dict[int, frozenset[str]] = {}
        self._document_frequency: dict[str, int] = {}
        # typo correction: every spelling the rows used -> its term; the spellings whose term the index still
        # holds, with the rows holding it (made again at the first query after rows change)
        self._term_of: dict[str, str | None] = {}
        self._new_spellings: set[str] = set()
        self._speller: Speller | None = None
        # typed word -> (its term, the spelling it is matched as or None, that spelling's term)
        self._corrected: dict[str, tuple[str | None, str | None, str | None]] = {}
        self.rows = 0
        self.set_rows(range(len(texts)), texts)
        with self._lock:
            self._vocabulary()  # made here, not in the first query

    def _stems(self, text: str) -> frozenset[str]:
        """The terms FTS5 makes of ``text`` (same tokenizer: lower case, no diacritics, porter stems)."""
        self._db.execute("INSERT INTO probe(rowid, words) VALUES (1, ?)", (text,))
        terms = frozenset(term for (term,) in self._db.execute("SELECT term FROM probe_terms"))
        self._db.execute("DELETE FROM probe")
        return terms

    def set_rows(self, rows: Sequence[int], texts: Sequence[str]) -> None:
        """Index (or re-index) ``texts`` at ``rows``; an empty text removes the row from lexical results."""
        rows = [int(r) for r in rows]
        with self._lock, self._db:
            for row, text in zip(rows, texts, strict=True):
                self._db.execute("DELETE FROM docs WHERE rowid = ?", (row + 1,))
                if text and text.strip():
                    self._db.execute("INSERT INTO docs(rowid, words) VALUES (?, ?)", (row + 1, text))
                    self._new_spellings.update(w for w in words(text) if w.isalpha() and w not in self._term_of)
                self.rows = max(self.rows, row + 1)
            if len(rows) > 100:  # many rows: every row's terms in one pass over the index
                found: dict[int, set[str]] = {}
                for term, doc in self._db.execute("SELECT term, doc FROM docs_terms"):
                    found.setdefault(int(doc) - 1, set()).add(term)
                self._terms = {row: frozenset(terms) for row, terms in found.items()}
            else:
                for row, text in zip(rows, texts, strict=True):
                    self._terms.pop(row, None)
                    if text and text.strip():
                        self._terms[row] = self._stems(text)
            frequency: dict[str, int] = {}
            for terms in self._terms.values():
                for term in terms:
                    frequency[term] = frequency.get(term, 0) + 1
            self._document_frequency = frequency
            self._speller = None  # the vocabulary changed: corrections are made again from it

    def _word_terms(self, spellings: Sequence[str]) -> dict[str, str | None]:
        """Each word's term (the tokenizer's stem), in one pass; None for a word that is not exactly one term."""
        self._db.executemany("INSERT INTO probe(rowid, words) VALUES (?, ?)", enumerate(spellings, start=1))
        found: dict[int, set[str]] = {}
        for term, doc in self._db.execute("SELECT term, doc FROM probe_instances"):
            found.setdefault(int(doc), set()).add(term)
        self._db.execute("DELETE FROM probe")
        return {w: next(iter(t)) if len(t := found.get(n, set())) == 1 else None
                for n, w in enumerate(spellings, start=1)}

    def _vocabulary(self) -> Speller:
        """The spellings whose term the index holds, each with the rows holding its term (lock held): made again
        only after rows changed, from the spellings seen (each stemmed once), so a query never reads the rows."""
        if self._speller is None:
            if self._new_spellings:
                self._term_of.update(self._word_terms(sorted(self._new_spellings)))
                self._new_spellings.clear()
            frequency = {spelling: count for spelling, term in self._term_of.items()
                         if (count := self._document_frequency.get(term, 0) if term else 0) > 0}
            self._speller = Speller(frequency)
            self._corrected.clear()
        return self._speller

    def _corrections(self, query: str) -> dict[str, tuple[str, str, str]]:
        """typed word -> (its term, the catalogue spelling replacing it, that spelling's term) for each word of 4+
        letters whose term neither this index nor the known one holds and that is near a catalogue word (lock
        held; the known index's catalogue words first). A held word is never changed."""
        speller = self._vocabulary()
        typed = [w for w in dict.fromkeys(words(query)) if correctable(w)
                 and w not in speller]  # a catalogue spelling is held: no stemming needed
        unseen = [w for w in typed if w not in self._corrected]
        if unseen:
            if len(self._corrected) + len(unseen) > CORRECTION_CACHE:
                self._corrected.clear()
            for word, term in self._word_terms(unseen).items():
                known = self._known
                held = term is None or term in self._document_frequency or (known is not None and known.holds(term))
                found = None if held else (known.correction(word) if known is not None else None)
                if not held and found is None and (spelling := speller.closest(word)) is not None:
                    found = (spelling, self._term_of[spelling])
                self._corrected[word] = (term, *found) if found else (term, None, None)
        return {w: (term, spelling, corrected) for w in typed for term, spelling, corrected in [self._corrected[w]]
                if term is not None and spelling is not None}

    def holds(self, term: str) -> bool:
        """Whether some row holds ``term`` (a term as the tokenizer makes it)."""
        return term in self._document_frequency

    def correction(self, word: str) -> tuple[str, str] | None:
        """(the catalogue spelling, its term) a typed word is matched as; None for a word spelt right or far from
        every catalogue word."""
        with self._lock:
            found = self._corrections(word).get(word)
        return None if found is None else found[1:]

    def _corrected_query(self, query: str) -> str:
        """``query`` with each misspelt word replaced by its correction (lock held); as typed when none is."""
        corrections = self._corrections(query)
        if not corrections:
            return query
        return " ".join(corrections[w][1] if w in corrections else w for w in words(query))

    @staticmethod
    def match_expression(query: str, every_word: bool = False) -> str | None:
        """The FTS5 query: each word quoted (so no word is read as an operator), OR-ed (AND-ed with
        ``every_word``); None without words."""
        terms = dict.fromkeys(words(query))
        return (" AND " if every_word else " OR ").join(f'"{t}"' for t in terms) or None

    def search(self, query: str, k: int, allowed_rows: np.ndarray | None = None, every_word: bool = False,
               without: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (rows int64, scores float64: -bm25, higher is better) among ``allowed_rows`` (None: all);
        ``every_word``: only items whose words contain every word of the query; ``without``: never an item whose
        words contain every word of ``without`` (a query's negative words: SQLite leaves them out, so the rows
        read stay at most k however many items hold them). A misspelt word of 4+ letters is matched as the
        catalogue word nearest it (one edit, two from 6 letters on; ties go to the word more rows hold)."""
        if self.match_expression(query) is None or k < 1:
            return np.zeros(0, np.int64), np.zeros(0)
        unwanted = self.match_expression(without, every_word=True) if without else None  # as typed: the same
        # words :meth:`terms` and :meth:`holding` check the tower's candidates against
        sql = "SELECT rowid - 1, bm25(docs) FROM docs WHERE docs MATCH ?"
        args: list = []
        if allowed_rows is not None:
            sql += " AND rowid IN (SELECT value + 1 FROM json_each(?))"
            args.append(json.dumps(np.asarray(allowed_rows, dtype=np.int64).tolist()))
        sql += " ORDER BY bm25(docs), rowid LIMIT ?"
        args.append(int(k))
        with self._lock:
            expression = self.match_expression(self._corrected_query(query), every_word)
            if unwanted is not None:
                expression = f"({expression}) NOT ({unwanted})"
            found = self._db.execute(sql, [expression, *args]).fetchall()
        if not found:
            return np.zeros(0, np.int64), np.zeros(0)
        rows, scores = zip(*found, strict=True)
        return np.array(rows, dtype=np.int64), -np.array(scores, dtype=np.float64)

    def terms(self, text: str) -> frozenset[str]:
        """The terms the index makes of ``text`` (its tokenizer: lower case, no diacritics, porter stems), as typed:
        no correction, so a negative word leaves out only items that hold it."""
        if not text.strip():
            return frozenset()
        with self._lock:
            return self._stems(text)

    def holding(self, terms: frozenset[str], rows: np.ndarray) -> np.ndarray:
        """bool (len(rows),): whether each row's words hold every one of ``terms`` (:meth:`terms`); all False for
        no terms. A lookup per row, so checking a query's candidates costs the same in any catalogue."""
        rows = np.asarray(rows, dtype=np.int64)
        if not terms:
            return np.zeros(len(rows), dtype=bool)
        with self._lock:
            return np.array([terms <= self._terms.get(int(r), frozenset()) for r in rows.tolist()], dtype=bool)

    def coverage(self, query: str, rows: np.ndarray) -> np.ndarray:
        """float (len(rows),): the IDF-weighted share of the query's words that each row's own words contain.

        1 for an item whose words hold every word of the query (an exact name), 0 for one without words;
        rare words count more, as in BM25. Unlike a BM25 score it is on one scale for every query. A misspelt
        word counts as the catalogue word :meth:`search` corrects it to.
        """
        return self.shares(query, rows)[0]

    def shares(self, query: str, rows: np.ndarray) -> np.ndarray:
        """float (2, len(rows)): each row's :meth:`coverage`, and the IDF-weighted share of the row's own words
        that the query holds (its name share: 1 when the query names every word of the item, lower for an item
        with more words than asked; 0 for a row without words)."""
        rows = np.asarray(rows, dtype=np.int64)
        with self._lock:
            terms = self._stems(query) if query.strip() else frozenset()
            if terms and (corrections := self._corrections(query)):  # typed term -> the corrected word's
                terms = (terms - {term for term, _, _ in corrections.values()}) \
                    | {corrected for _, _, corrected in corrections.values()}
            held = [self._terms.get(int(r), frozenset()) for r in rows.tolist()]
            weights = {t: self._idf(t) for t in terms.union(*held)}
        asked = {t: weights[t] for t in terms}  # summed in one order for every row: equal sets, equal shares
        total = sum(asked.values())
        if not terms or total <= 0:
            return np.zeros((2, len(rows)))
        found = [sum(w for t, w in asked.items() if t in h) for h in held]
        own = [sum(weights[t] for t in h) for h in held]
        return np.array([[f / total for f in found],
                         [min(f / o, 1.0) if o > 0 else 0.0 for f, o in zip(found, own, strict=True)]])

    def _idf(self, term: str) -> float:
        """BM25's inverse document frequency of ``term`` among the rows (caller holds the lock)."""
        documents, frequency = len(self._terms), self._document_frequency.get(term, 0)
        return math.log((documents - frequency + 0.5) / (frequency + 0.5) + 1.0)


def reciprocal_rank_fusion(rankings: Sequence[np.ndarray], weights: Sequence[float], k: int,
                           constant: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Merge ranked row lists: score(row) = sum of weight / (constant + rank); top-k rows and scores.

    Rank-based, so BM25's unbounded scores and cosines need no common scale; ties keep the
    order of first appearance (the first ranking's order first).
    """
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, row in enumerate(np.asarray(ranking).tolist(), start=1):
            if row >= 0:
                scores[row] = scores.get(row, 0.0) + weight / (constant + rank)
    ordered = sorted(scores.items(), key=lambda kv: -kv[1])[:k]  # stable: first appearance wins ties
    return (np.array([r for r, _ in ordered], dtype=np.int64), np.array([s for _, s in ordered]))


def coverage_fusion(candidate_rows: np.ndarray, cosines: np.ndarray, coverage: np.ndarray, weight: float,
                    k: int, named: np.ndarray | None = None, name_weight: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Merge by score: cosine + weight * coverage (the share of the query's words the item's words hold)
    + name_weight * coverage * named (``named``: the share of the item's own words the query holds).

    An item holding every word of the query gains ``weight`` over a photo without words; of those, the item
    the query names most nearly (fewest words beyond the query's) gains up to ``name_weight`` more, so an exact
    name comes before longer names holding it. Ties keep ``candidate_rows`` order.
    """
    coverage = np.asarray(coverage, dtype=np.float64)
    fused = np.asarray(cosines, dtype=np.float64) + weight * coverage
    if named is not None and name_weight:
        fused = fused + name_weight * coverage * np.asarray(named, dtype=np.float64)
    order = np.argsort(-fused, kind="stable")[:k]
    return np.asarray(candidate_rows, dtype=np.int64)[order], fused[order]


def score_fusion(lexical_rows: np.ndarray, lexical_scores: np.ndarray, candidate_rows: np.ndarray,
                 cosines: np.ndarray, weight: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge by score: cosine + weight * BM25 / (the query's best BM25), over the union of both rankings.

    ``candidate_rows`` / ``cosines``: every candidate's cosine to the query vector (both rankings' rows).
    An item without words keeps its cosine alone, so a photo-only item still ranks by the tower; the
    best lexical match gets ``weight`` on top of its cosine. Ties keep ``candidate_rows`` order.
    """
    bonus = np.zeros(len(candidate_rows))
    if len(lexical_rows):
        best = max(float(np.max(lexical_scores)), 1e-12)
        position = {int(r): i for i, r in enumerate(candidate_rows.tolist())}
        for row, score in zip(lexical_rows.tolist(), lexical_scores.tolist(), strict=True):
            bonus[position[int(row)]] = weight * score / best
    fused = np.asarray(cosines, dtype=np.float64) + bonus
    order = np.argsort(-fused, kind="stable")[:k]
    return np.asarray(candidate_rows, dtype=np.int64)[order], fused[order]


def fuse(lexical_rows: np.ndarray, lexical_scores: np.ndarray, learned_rows: np.ndarray,
         cosine_of: Callable[[np.ndarray], np.ndarray], shares_of: Callable[[np.ndarray], np.ndarray],
         fusion: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The hybrid ranking of one query, top-k (rows, scores), by ``fusion['fusion']``: ``coverage`` (cosine +
    ``lexical_weight`` * the share of the query's words the item holds + ``name_weight`` * that share * the share
    of the item's words the query holds: :func:`coverage_fusion`), ``score`` (cosine + weight * BM25 / the
    query's best BM25) or ``rrf`` (reciprocal rank fusion, ``rrf_constant``).

    The one home of the fusion: the service (build and live items) and the evaluation both call it, so the
    metrics score the ranking a shopper gets. Rows are any non-negative int keys (gallery rows, or positions in
    a list of item ids); the candidates are the learned rows, then the lexical rows the tower did not find.
    ``cosine_of(rows)``: the query vector's cosine to those rows; ``shares_of(rows)``: their
    :meth:`LexicalIndex.shares` of the query, asked only by ``coverage``.
    """
    lexical_rows = np.asarray(lexical_rows, dtype=np.int64)
    learned_rows = np.asarray(learned_rows, dtype=np.int64)
    weight = float(fusion["lexical_weight"])
    if fusion["fusion"] == "rrf":
        return reciprocal_rank_fusion([lexical_rows, learned_rows], [weight, 1.0], k, float(fusion["rrf_constant"]))
    candidates = np.concatenate([learned_rows, lexical_rows[~np.isin(lexical_rows, learned_rows)]])
    cosines = np.asarray(cosine_of(candidates), dtype=np.float64)
    if fusion["fusion"] == "coverage":
        coverage, named = shares_of(candidates)
        return coverage_fusion(candidates, cosines, coverage, weight, k, named, float(fusion.get("name_weight", 0.0)))
    if fusion["fusion"] == "score":
        return score_fusion(lexical_rows, np.asarray(lexical_scores, dtype=np.float64), candidates, cosines, weight, k)
    raise ValueError(f"unknown fusion {fusion['fusion']!r}: one of {', '.join(FUSIONS)}")
