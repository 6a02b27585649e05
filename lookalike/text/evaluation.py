"""Scoring text -> photo rankings: title queries and attribute queries built from the labels.

Numpy only. A ranking is an int array (n_queries, depth) of gallery rows, best first, -1 padding.

* title -> photo: each query is one item's ``productDisplayName``; relevant is that item's own photo
  (``title_recall_at_1``, ``title_recall_at_10``, ``title_mrr`` with the reciprocal rank cut at the
  ranking's depth).
* attribute queries: the distinct values of a label column among the gallery, written as words
  ("navy blue", "topwear"), each with at least ``min_relevant`` relevant items; relevant = the item has
  that value. ``<name>_precision_at_1`` and ``_at_10``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# sqlite3 (through lexical) before any TensorFlow import: TensorFlow bundles a SQLite without FTS5, and the
# first library loaded wins
from lookalike.text.lexical import LexicalIndex, coverage_fusion, reciprocal_rank_fusion, score_fusion
from lookalike.text.tower import WORD_FIELDS, field_value, item_text

ATTRIBUTES = {"colour": ("baseColour",), "subcategory": ("subCategory",), "articletype": ("articleType",),
              "colour_articletype": ("baseColour", "articleType"), "gender_articletype": ("gender", "articleType")}


def title_metrics(ranked: np.ndarray, own_rows: np.ndarray) -> dict[str, float]:
    """Recall@1, recall@10 and MRR of each query's own row in ``ranked``."""
    hits = ranked == np.asarray(own_rows)[:, None]
    found = hits.any(axis=1)
    rank = np.where(found, hits.argmax(axis=1) + 1, 0)
    return {"title_recall_at_1": float((found & (rank == 1)).mean()),
            "title_recall_at_10": float((found & (rank <= 10)).mean()),
            "title_mrr": float(np.where(found, 1.0 / np.maximum(rank, 1), 0.0).mean())}


TYPO_ATTRIBUTES = ("colour", "articletype")  # also asked with one letter dropped from each longer word


def with_typos(text: str, seed: int) -> str:
    """``text`` with one seeded letter dropped inside every word of 4+ letters ("dresses" -> "drsses"): words no
    catalogue spells, to see which ranking still understands them (not tuned to any list of misspellings)."""
    rng = np.random.default_rng(seed)
    out = []
    for word in text.split():
        if len(word) >= 4:
            cut = int(rng.integers(1, len(word) - 1))
            word = word[:cut] + word[cut + 1:]
        out.append(word)
    return " ".join(out)


def label_words(values: Sequence[str]) -> str:
    """The query a shopper would type for label values: lower case, joined ("Navy Blue", "Tshirts")."""
    return " ".join(str(v).lower() for v in values)


def attribute_queries(items: pd.DataFrame, columns: Sequence[str], min_relevant: int) -> list[tuple[str, tuple]]:
    """(query words, label values) for each value combination with at least ``min_relevant`` items."""
    present = items[list(columns)].astype(str)
    usable = present[~present.apply(lambda c: c.str.lower().isin(["", "na", "nan"])).any(axis=1)]
    counts = usable.value_counts()
    return [(label_words(values), tuple(values)) for values, count in sorted(counts.items())
            if count >= min_relevant]


def relevant_mask(items: pd.DataFrame, columns: Sequence[str], values: Sequence[str]) -> np.ndarray:
    """bool (n,): the gallery items whose ``columns`` equal ``values``."""
    mask = np.ones(len(items), dtype=bool)
    for column, value in zip(columns, values, strict=True):
        mask &= items[column].astype(str).to_numpy() == str(value)
    return mask


def precision_at(ranked: np.ndarray, relevant: list[np.ndarray], k: int) -> float:
    """Mean over queries of relevant items among the first k (a missing result counts as a miss)."""
    scores = []
    for row, mask in zip(ranked, relevant, strict=True):
        top = row[:k]
        top = top[top >= 0]
        scores.append(mask[top].sum() / k)
    return float(np.mean(scores)) if scores else float("nan")


GALLERIES = ("hidden", "half", "visible")  # which gallery items keep their words for the lexical ranking
RANKINGS = ("lexical", "learned", "hybrid")


def rank_all(query_texts: Sequence[str], gallery_vectors: np.ndarray, text_vectors: np.ndarray,
             lexical, depth: int, fusion: dict) -> dict[str, np.ndarray]:
    """The three rankings (rows of the gallery, depth ``depth``) of each query: BM25 over the words the
    gallery shows, cosine between the query's tower vector and each photo, and their fusion."""
    scores = text_vectors @ gallery_vectors.T
    depth = min(depth, len(gallery_vectors))
    learned = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    lexical_ranked = np.full((len(query_texts), depth), -1, dtype=np.int64)
    hybrid = np.full((len(query_texts), depth), -1, dtype=np.int64)
    for i, text in enumerate(query_texts):
        rows, bm25 = lexical.search(text, depth)
        lexical_ranked[i, : len(rows)] = rows
        fused = fuse(rows, bm25, learned[i], scores[i].__getitem__, fusion, depth, lexical, text)[0]
        hybrid[i, : len(fused)] = fused
    return {"lexical": lexical_ranked, "learned": learned, "hybrid": hybrid}


def fuse(lexical_rows: np.ndarray, bm25: np.ndarray, learned_rows: np.ndarray, cosine_of, fusion: dict, k: int,
         lexical: LexicalIndex | None = None, query: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The hybrid ranking of one query (rows, scores) by ``fusion['fusion']``: ``coverage`` (cosine + weight *
    the share of the query's words the item holds), ``score`` (cosine + weight * BM25 / the query's best BM25)
    or ``rrf`` (reciprocal rank fusion). ``cosine_of(rows)``: the query vector's cosine to those gallery rows."""
    if fusion["fusion"] == "rrf":
        return reciprocal_rank_fusion([lexical_rows, learned_rows], [float(fusion["lexical_weight"]), 1.0], k,
                                      float(fusion["rrf_constant"]))
    candidates = np.concatenate([learned_rows, lexical_rows[~np.isin(lexical_rows, learned_rows)]])
    if fusion["fusion"] == "coverage":
        return coverage_fusion(candidates, cosine_of(candidates), lexical.coverage(query, candidates),
                               float(fusion["lexical_weight"]), k)
    return score_fusion(lexical_rows, bm25, candidates, cosine_of(candidates), float(fusion["lexical_weight"]), k)


def shown_words(items: pd.DataFrame, gallery: str, seed: int, fields: Sequence[str]) -> list[str]:
    """Each item's words as the lexical index sees them in a gallery: none ("hidden"), a seeded half of
    the items' ("half"), or all ("visible")."""
    texts = [item_text(row, fields) for row in items.to_dict("records")]
    if gallery == "hidden":
        return [""] * len(texts)
    if gallery == "half":
        keep = np.random.default_rng(seed).random(len(texts)) < 0.5
        return [t if k else "" for t, k in zip(texts, keep, strict=True)]
    return texts


def evaluate_text_search(tower, items: pd.DataFrame, embeddings: np.ndarray, config: dict,
                         seed: int = 0, split: str = "test", galleries: Sequence[str] = GALLERIES) -> dict:
    """The whole protocol on the test split, for each gallery and each ranking (see the module docstring).

    Title queries search every photo of the catalogue; attribute queries search the test photos alone
    (never trained on by the image model or the tower), with at least ``config['min_relevant']`` relevant.
    ``split="val"`` runs the same protocol on the val split, to choose settings without touching test.
    """
    depth = int(config["depth"])
    test = np.flatnonzero(items["split"].to_numpy() == split)
    titles = [field_value(t) for t in items["productDisplayName"].iloc[test]] \
        if "productDisplayName" in items else []
    with_title = [i for i, t in enumerate(titles) if t]
    title_texts = [titles[i] for i in with_title]
    own = test[with_title]
    test_items = items.iloc[test].reset_index(drop=True)
    attribute_sets = {name: attribute_queries(test_items, columns, int(config["min_relevant"]))
                      for name, columns in ATTRIBUTES.items() if all(c in items for c in columns)}
    title_vectors = tower.encode(title_texts) if title_texts else np.zeros((0, embeddings.shape[1]), np.float32)
    result: dict = {"queries": {"title": len(title_texts), **{k: len(v) for k, v in attribute_sets.items()}},
                    "gallery": {"title": int(len(items)), "attributes": int(len(test))}}
    for gallery in galleries:
        rows: dict[str, dict[str, float]] = {name: {} for name in RANKINGS}
        lexical = LexicalIndex(shown_words(items, gallery, seed, WORD_FIELDS))
        if title_texts:
            ranked = rank_all(title_texts, embeddings, title_vectors, lexical, depth, config)
            for name in RANKINGS:
                rows[name].update(title_metrics(ranked[name], own))
        test_lexical = LexicalIndex(shown_words(test_items, gallery, seed, WORD_FIELDS))
        families = [(name, name, queries, [q for q, _ in queries]) for name, queries in attribute_sets.items()]
        families += [(f"{name}_typo", name, attribute_sets[name],
                      [with_typos(q, seed + i) for i, (q, _) in enumerate(attribute_sets[name])])
                     for name in TYPO_ATTRIBUTES if name in attribute_sets]
        for family, attribute, queries, texts in families:
            if not queries:
                continue
            ranked = rank_all(texts, embeddings[test], tower.encode(texts), test_lexical, depth, config)
            masks = [relevant_mask(test_items, ATTRIBUTES[attribute], values) for _, values in queries]
            for name in RANKINGS:
                rows[name][f"{family}_precision_at_1"] = precision_at(ranked[name], masks, 1)
                rows[name][f"{family}_precision_at_10"] = precision_at(ranked[name], masks, 10)
        result[gallery] = rows
    return result
