"""Scoring text -> photo rankings: title queries and attribute queries built from the catalogue's roles.

Numpy only. A ranking is an int array (n_queries, depth) of gallery rows, best first, -1 padding. Which
columns are read comes from the catalogue's description (:func:`text_columns`), never from names here.

* title -> photo: each query is one item's title (the description's ``title``, when it names an item rather
  than a class); relevant is that item's own photo (``title_recall_at_1``, ``title_recall_at_10``,
  ``title_mrr`` with the reciprocal rank cut at the ranking's depth).
* attribute queries: the distinct values of a column (or a pair of columns) among the gallery, written as
  words ("navy blue", "topwear"), each with at least ``min_relevant`` relevant items; relevant = the item has
  that value. ``<name>_precision_at_1`` and ``_at_10``, the names derived from the roles (:func:`text_columns`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

# sqlite3 (through lexical) before any TensorFlow import: TensorFlow bundles a SQLite without FTS5, and the
# first library loaded wins
from lookalike.catalogue.reading import missing
from lookalike.text.lexical import LexicalIndex, fuse
from lookalike.text.tower import field_value, item_text, word_columns

if TYPE_CHECKING:
    from lookalike.catalogue.description import CatalogueDescription

COLOUR = "colour"  # the metric name of the colour role's queries, whatever the column is called
PARENT_PURITY = 0.95  # a label's parent class: at least this share of items carry their label's usual value of it


@dataclass(frozen=True)
class TextColumns:
    """The columns text training and evaluation read, derived from a catalogue's roles (:func:`text_columns`)."""

    words: tuple[str, ...]  # an item's words (:func:`lookalike.text.tower.word_columns`), the title first
    title: str | None = None  # the catalogue's title column; training's title views when it is among the words
    title_queries: bool = False  # title -> photo is asked: the title names an item, not a class
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # metric name -> the columns it asks
    typos: tuple[str, ...] = ()  # attribute query sets also asked with a letter dropped (:func:`with_typos`)

    @property
    def single(self) -> tuple[str, ...]:
        """The attribute query sets over one column (training's val score averages these)."""
        return tuple(name for name, columns in self.attributes.items() if len(columns) == 1)


def metric_name(column: str) -> str:
    """A column's name in metric keys: lower case, runs of other characters as one "_" ("Coarse Class" ->
    "coarse_class"): fixed, so a catalogue's committed metric names stay the same from build to build."""
    return re.sub(r"[^0-9a-z]+", "_", column.lower()).strip("_") or "column"


def _present(values: pd.Series) -> pd.Series:
    text = values.astype(str)
    return text[~missing(text)]


def parent_class(items: pd.DataFrame, label: str, candidates: Sequence[str]) -> str | None:
    """The label's parent class among ``candidates``: a column the label determines (at least
    :data:`PARENT_PURITY` of the items carry their label's most common value of it) with fewer distinct values
    than the label, the finest such (most values). It is what a shopper types for a kind of thing
    ("topwear", "fruit"); None when no column qualifies."""
    if label not in items:
        return None
    labels = _present(items[label])
    found: list[tuple[int, int, str]] = []
    for position, column in enumerate(candidates):
        if column == label or column not in items:
            continue
        values = _present(items[column])
        both = labels.index.intersection(values.index)
        if not len(both):
            continue
        pairs = pd.DataFrame({"label": labels[both], "value": values[both]})
        distinct = pairs["value"].nunique()
        if not 2 <= distinct < pairs["label"].nunique():
            continue
        usual = pairs.groupby("label")["value"].agg(lambda v: v.value_counts().iloc[0]).sum()
        if usual / len(pairs) >= PARENT_PURITY:
            found.append((distinct, -position, column))
    return max(found)[2] if found else None


def text_columns(description: CatalogueDescription, items: pd.DataFrame) -> TextColumns:
    """What text training and evaluation read for this catalogue, from its roles.

    Attribute query sets, in this order: ``colour`` (the colour role), the label's parent class
    (:func:`parent_class`), the label, ``colour_<label>`` and ``<look column>_<label>`` for each look column;
    named by :func:`metric_name` (the names docs/text.md and the committed metrics use). The colour and label
    sets are also asked with typos. Title queries are asked when the title is a column of its own (not a label
    or attribute: those name a class, and the attribute queries ask it). ``items``: the whole table (the
    parent class is found in its values).
    """
    label, colour = description.label, description.colour
    parent = parent_class(items, label, [c for c in (*description.labels[1:], *description.attributes)
                                         if c not in (colour, *description.look)]) if label else None
    sets: dict[str, tuple[str, ...]] = {}
    wanted = [(COLOUR, (colour,)) if colour else None,
              (metric_name(parent), (parent,)) if parent else None,
              (metric_name(label), (label,)) if label else None,
              (f"{COLOUR}_{metric_name(label)}", (colour, label)) if colour and label and colour != label else None,
              *((f"{metric_name(look)}_{metric_name(label)}", (look, label))
                for look in description.look if label and look not in (label, colour))]
    for name, columns in filter(None, wanted):
        sets.setdefault(name, columns)
    typos = tuple(name for name in (COLOUR, metric_name(label) if label else None) if name in sets)
    title = description.title
    return TextColumns(words=word_columns(description), title=title,
                       title_queries=bool(title) and title not in description.relevance_columns,
                       attributes=sets, typos=typos)


def title_metrics(ranked: np.ndarray, own_rows: np.ndarray) -> dict[str, float]:
    """Recall@1, recall@10 and MRR of each query's own row in ``ranked``."""
    hits = ranked == np.asarray(own_rows)[:, None]
    found = hits.any(axis=1)
    rank = np.where(found, hits.argmax(axis=1) + 1, 0)
    return {"title_recall_at_1": float((found & (rank == 1)).mean()),
            "title_recall_at_10": float((found & (rank <= 10)).mean()),
            "title_mrr": float(np.where(found, 1.0 / np.maximum(rank, 1), 0.0).mean())}


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
    usable = present[~present.apply(missing).any(axis=1)]
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
             lexical: LexicalIndex, depth: int, fusion: dict) -> dict[str, np.ndarray]:
    """The three rankings (rows of the gallery, depth ``depth``) of each query: BM25 over the words the
    gallery shows, cosine between the query's tower vector and each photo, and their fusion (the service's
    :func:`lookalike.text.lexical.fuse`)."""
    scores = text_vectors @ gallery_vectors.T
    depth = min(depth, len(gallery_vectors))
    learned = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    lexical_ranked = np.full((len(query_texts), depth), -1, dtype=np.int64)
    hybrid = np.full((len(query_texts), depth), -1, dtype=np.int64)
    for i, text in enumerate(query_texts):
        rows, bm25 = lexical.search(text, depth)
        lexical_ranked[i, : len(rows)] = rows
        fused = fuse(rows, bm25, learned[i], scores[i].__getitem__,
                     lambda candidates, text=text: lexical.shares(text, candidates), fusion, depth)[0]
        hybrid[i, : len(fused)] = fused
    return {"lexical": lexical_ranked, "learned": learned, "hybrid": hybrid}


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


def evaluate_text_search(tower, items: pd.DataFrame, embeddings: np.ndarray, config: dict, columns: TextColumns,
                         seed: int = 0, split: str = "test", galleries: Sequence[str] = GALLERIES) -> dict:
    """The whole protocol on the test split, for each gallery and each ranking (see the module docstring).

    ``columns`` (:func:`text_columns`): which columns are the words, the title and each attribute query set.
    Title queries search every photo of the catalogue; attribute queries search the test photos alone
    (never trained on by the image model or the tower), with at least ``config['min_relevant']`` relevant.
    ``split="val"`` runs the same protocol on the val split, to choose settings without touching test.
    """
    depth = int(config["depth"])
    test = np.flatnonzero(items["split"].to_numpy() == split)
    titles = [field_value(t) for t in items[columns.title].iloc[test]] \
        if columns.title_queries and columns.title in items else []
    with_title = [i for i, t in enumerate(titles) if t]
    title_texts = [titles[i] for i in with_title]
    own = test[with_title]
    test_items = items.iloc[test].reset_index(drop=True)
    attribute_sets = {name: attribute_queries(test_items, asked, int(config["min_relevant"]))
                      for name, asked in columns.attributes.items() if all(c in items for c in asked)}
    title_vectors = tower.encode(title_texts) if title_texts else np.zeros((0, embeddings.shape[1]), np.float32)
    result: dict = {"queries": {"title": len(title_texts), **{k: len(v) for k, v in attribute_sets.items()}},
                    "gallery": {"title": int(len(items)), "attributes": int(len(test))}}
    for gallery in galleries:
        rows: dict[str, dict[str, float]] = {name: {} for name in RANKINGS}
        lexical = LexicalIndex(shown_words(items, gallery, seed, columns.words))
        if title_texts:
            ranked = rank_all(title_texts, embeddings, title_vectors, lexical, depth, config)
            for name in RANKINGS:
                rows[name].update(title_metrics(ranked[name], own))
        test_lexical = LexicalIndex(shown_words(test_items, gallery, seed, columns.words))
        families = [(name, name, queries, [q for q, _ in queries]) for name, queries in attribute_sets.items()]
        families += [(f"{name}_typo", name, attribute_sets[name],
                      [with_typos(q, seed + i) for i, (q, _) in enumerate(attribute_sets[name])])
                     for name in columns.typos if name in attribute_sets]
        for family, attribute, queries, texts in families:
            if not queries:
                continue
            ranked = rank_all(texts, embeddings[test], tower.encode(texts), test_lexical, depth, config)
            masks = [relevant_mask(test_items, columns.attributes[attribute], values) for _, values in queries]
            for name in RANKINGS:
                rows[name][f"{family}_precision_at_1"] = precision_at(ranked[name], masks, 1)
                rows[name][f"{family}_precision_at_10"] = precision_at(ranked[name], masks, 10)
        result[gallery] = rows
    return result
