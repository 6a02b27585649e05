"""Lexical ranking over the items' words (SQLite FTS5, BM25) and its fusion with the learned ranking.

A shopper typing a brand or an exact name expects it found: BM25 over the title and attribute
phrases does that, stemmed (porter) and without diacritics, the query's words OR-ed so a word the
catalogue never uses does not empty the result. It finds only items with words; the learned tower
finds photos. :func:`fuse` merges the two rankings: the one fusion the service runs and the evaluation
scores, so a metric measures what a shopper gets.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Sequence

import numpy as np

from lookalike.text.tower import words

TOKENIZER = "porter unicode61 remove_diacritics 2"
FUSIONS = ("coverage", "score", "rrf")  # text.fusion: how :func:`fuse` merges the lexical and learned rankings


class LexicalIndex:
    """BM25 over one text per gallery row (row = rowid - 1); rows can be added or replaced later (live items).

    Safe to share between threads: one in-memory connection behind a lock (a query takes milliseconds).
    """

    def __init__(self, texts: Sequence[str] = ()):
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
        self._lock = threading.Lock()
        self._terms: dict[int, frozenset[str]] = {}
        self._document_frequency: dict[str, int] = {}
        self.rows = 0
        self.set_rows(range(len(texts)), texts)

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
        read stay at most k however many items hold them)."""
        expression = self.match_expression(query, every_word)
        if expression is None or k < 1:
            return np.zeros(0, np.int64), np.zeros(0)
        unwanted = self.match_expression(without, every_word=True) if without else None
        if unwanted is not None:
            expression = f"({expression}) NOT ({unwanted})"
        sql = "SELECT rowid - 1, bm25(docs) FROM docs WHERE docs MATCH ?"
        args: list = [expression]
        if allowed_rows is not None:
            sql += " AND rowid IN (SELECT value + 1 FROM json_each(?))"
            args.append(json.dumps(np.asarray(allowed_rows, dtype=np.int64).tolist()))
        sql += " ORDER BY bm25(docs), rowid LIMIT ?"
        args.append(int(k))
        with self._lock:
            found = self._db.execute(sql, args).fetchall()
        if not found:
            return np.zeros(0, np.int64), np.zeros(0)
        rows, scores = zip(*found, strict=True)
        return np.array(rows, dtype=np.int64), -np.array(scores, dtype=np.float64)

    def terms(self, text: str) -> frozenset[str]:
        """The terms the index makes of ``text`` (its tokenizer: lower case, no diacritics, porter stems)."""
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
        rare words count more, as in BM25. Unlike a BM25 score it is on one scale for every query.
        """
        rows = np.asarray(rows, dtype=np.int64)
        with self._lock:
            terms = self._stems(query) if query.strip() else frozenset()
            documents = len(self._terms)
            weights = {t: math.log((documents - f + 0.5) / (f + 0.5) + 1.0)
                       for t in terms for f in [self._document_frequency.get(t, 0)]}
            held = [self._terms.get(int(r), frozenset()) for r in rows.tolist()]
        total = sum(weights.values())
        if not terms or total <= 0:
            return np.zeros(len(rows))
        return np.array([sum(w for t, w in weights.items() if t in h) for h in held]) / total


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
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge by score: cosine + weight * coverage (the share of the query's words the item's words hold).

    An item holding every word of the query gains ``weight`` over a photo without words; items with
    the same coverage keep the tower's order. Ties keep ``candidate_rows`` order.
    """
    fused = np.asarray(cosines, dtype=np.float64) + weight * np.asarray(coverage, dtype=np.float64)
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
         cosine_of: Callable[[np.ndarray], np.ndarray], coverage_of: Callable[[np.ndarray], np.ndarray],
         fusion: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The hybrid ranking of one query, top-k (rows, scores), by ``fusion['fusion']``: ``coverage`` (cosine +
    ``lexical_weight`` * the share of the query's words the item holds), ``score`` (cosine + weight * BM25 / the
    query's best BM25) or ``rrf`` (reciprocal rank fusion, ``rrf_constant``).

    The one home of the fusion: the service (build and live items) and the evaluation both call it, so the
    metrics score the ranking a shopper gets. Rows are any non-negative int keys (gallery rows, or positions in
    a list of item ids); the candidates are the learned rows, then the lexical rows the tower did not find.
    ``cosine_of(rows)``: the query vector's cosine to those rows; ``coverage_of(rows)``: their share of the
    query's words (:meth:`LexicalIndex.coverage`), asked only by ``coverage``.
    """
    lexical_rows = np.asarray(lexical_rows, dtype=np.int64)
    learned_rows = np.asarray(learned_rows, dtype=np.int64)
    weight = float(fusion["lexical_weight"])
    if fusion["fusion"] == "rrf":
        return reciprocal_rank_fusion([lexical_rows, learned_rows], [weight, 1.0], k, float(fusion["rrf_constant"]))
    candidates = np.concatenate([learned_rows, lexical_rows[~np.isin(lexical_rows, learned_rows)]])
    cosines = np.asarray(cosine_of(candidates), dtype=np.float64)
    if fusion["fusion"] == "coverage":
        return coverage_fusion(candidates, cosines, coverage_of(candidates), weight, k)
    if fusion["fusion"] == "score":
        return score_fusion(lexical_rows, np.asarray(lexical_scores, dtype=np.float64), candidates, cosines, weight, k)
    raise ValueError(f"unknown fusion {fusion['fusion']!r}: one of {', '.join(FUSIONS)}")
