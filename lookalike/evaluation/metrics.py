"""Retrieval metrics over ranked neighbour lists, with the query itself excluded.

Every function takes ``relevant``: a bool array (n_queries, k) saying whether the
i-th returned item shares the query's label, and where needed ``n_relevant``:
(n_queries,) the number of relevant items in the gallery other than the query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lookalike.catalogue.description import family_values
from lookalike.search.index import build_index
from lookalike.search.photos import PhotoRows, search_items

MorePhotos = tuple[PhotoRows, np.ndarray]  # the items' other photos: which item each is of, their vectors (m, dim)

METRIC_NAMES = ("precision_at_1", "precision_at_5", "recall_at_5", "map_at_5", "top5_accuracy", "map_at_r")


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (cosine = inner product); all-zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def exclude_self(neighbours: np.ndarray, query_rows: np.ndarray, k: int) -> np.ndarray:
    """Drop each query's own row from its neighbour list, keep the first ``k``.

    neighbours: int (n_queries, >= k + 1) gallery rows, best first, -1 for "none".
    Returns int (n_queries, k), padded with -1 where fewer than k remain.
    """
    out = np.full((len(neighbours), k), -1, dtype=np.int64)
    for i, (row, query) in enumerate(zip(neighbours, query_rows, strict=True)):
        kept = row[(row != query) & (row >= 0)][:k]
        out[i, : len(kept)] = kept
    return out


def relevance(neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """bool (n_queries, k): neighbour shares the query's label; padding (-1) is never relevant."""
    valid = neighbours >= 0
    labels = gallery_labels[np.where(valid, neighbours, 0)]
    return valid & (labels == query_labels[:, None])


def _average_precision(relevant: np.ndarray, cutoff: np.ndarray, normaliser: np.ndarray) -> np.ndarray:
    """sum_{i <= cutoff} P@i * rel_i / normaliser, per query."""
    ranks = np.arange(1, relevant.shape[1] + 1)
    within = ranks[None, :] <= cutoff[:, None]
    hits = relevant & within
    precision = np.cumsum(hits, axis=1) / ranks[None, :]
    total = (precision * hits).sum(axis=1)
    return np.where(normaliser > 0, total / np.maximum(normaliser, 1), 0.0)


def per_query_scores(relevant: np.ndarray, n_relevant: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric per query (n_queries,), so any grouping can average them.

    P@k = hits in top k / k; R@5 = hits in top 5 / R; AP@5 = sum_{i<=5} P@i rel_i / min(5, R);
    top-5 accuracy = any hit in top 5; MAP@R = sum_{i<=R} P@i rel_i / R (Musgrave et al. 2020),
    where R is the number of relevant gallery items other than the query.
    """
    if relevant.shape[1] < max(5, n_relevant.max(initial=0)):
        raise ValueError(
            f"need max(5, max R) = {max(5, n_relevant.max(initial=0))} ranked results, got {relevant.shape[1]}"
        )
    found5 = relevant[:, :5].sum(axis=1)
    return {
        "precision_at_1": relevant[:, 0].astype(float),
        "precision_at_5": found5 / 5.0,
        "recall_at_5": np.where(n_relevant > 0, found5 / np.maximum(n_relevant, 1), 0.0),
        "map_at_5": _average_precision(relevant[:, :5], np.full(len(relevant), 5), np.minimum(5, n_relevant)),
        "top5_accuracy": relevant[:, :5].any(axis=1).astype(float),
        "map_at_r": _average_precision(relevant, n_relevant, n_relevant),
    }


def retrieval_metrics(relevant: np.ndarray, n_relevant: np.ndarray) -> dict[str, float]:
    """All six metrics averaged over queries; ``relevant`` must span max(5, max R) ranks."""
    return {name: float(values.mean()) for name, values in per_query_scores(relevant, n_relevant).items()}


def per_label_table(relevant: np.ndarray, n_relevant: np.ndarray, query_labels: np.ndarray) -> pd.DataFrame:
    """One row per label: query count and the mean of each metric over that label's queries."""
    scores = pd.DataFrame(per_query_scores(relevant, n_relevant))
    scores.insert(0, "label", query_labels)
    table = scores.groupby("label", sort=True).mean()
    table.insert(0, "queries", scores.groupby("label").size())
    table.insert(1, "gallery_relevant", pd.Series(n_relevant).groupby(query_labels).first())
    return table.reset_index()


def count_relevant(query_labels: np.ndarray, gallery_labels: np.ndarray, self_in_gallery: bool = True) -> np.ndarray:
    """Relevant gallery items per query, not counting the query itself."""
    values, counts = np.unique(gallery_labels, return_counts=True)
    lookup = dict(zip(values.tolist(), counts.tolist(), strict=True))
    n = np.array([lookup.get(label, 0) for label in query_labels.tolist()], dtype=np.int64)
    return n - 1 if self_in_gallery else n


def gallery_index(embeddings: np.ndarray, more: MorePhotos | None = None):
    """An exact index of every photo: the items' (rows 0..n-1), then their other photos'."""
    return build_index(embeddings if more is None else np.vstack([embeddings, more[1]]), {"type": "flat"})


def evaluate_retrieval(
    embeddings: np.ndarray,
    labels: np.ndarray,
    query_rows: np.ndarray,
    index=None,
    queries: np.ndarray | None = None,
    more: MorePhotos | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Queries = ``query_rows`` of the gallery ``embeddings`` (each excluded from its own results), or
    ``queries`` (one vector per query row: the same items asked another question, e.g. re-weighted).

    Searches ``index`` (a FAISS index over ``embeddings`` and, with ``more``, the items' other photos after them:
    an item is found by its best photo) or an exact one built here. Returns the six metrics and the per-label
    table.
    """
    labels = np.asarray(labels)
    query_rows = np.asarray(query_rows, dtype=np.int64)
    if index is None:
        index = gallery_index(embeddings, more)
    n_relevant = count_relevant(labels[query_rows], labels)
    depth = int(max(5, n_relevant.max(initial=0)))
    _, neighbours = search_items(index, more[0] if more else PhotoRows.single(len(embeddings)),
                                 embeddings[query_rows] if queries is None else queries, depth + 1)
    ranked = exclude_self(neighbours, query_rows, depth)
    relevant = relevance(ranked, labels[query_rows], labels)
    return retrieval_metrics(relevant, n_relevant), per_label_table(relevant, n_relevant, labels[query_rows])


def joint_labels(table: pd.DataFrame, columns: list[str],
                 families: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> np.ndarray:
    """str (n,): the raw values of ``columns`` joined ("Shirts|Navy Blue"); no names merged, so "Navy Blue"
    and "Blue" stay different (the metric reports the catalogue's own labels), unless ``families`` (column ->
    its declared families) merges a column's values into their families ("Shirts|Blue")."""
    def values(column: str) -> np.ndarray:
        raw = table[column].astype("string").fillna("").to_numpy(dtype=str)
        merge = (families or {}).get(column)
        return np.array(family_values(raw.tolist(), merge), dtype=str) if merge else raw

    joined = values(columns[0])
    for column in columns[1:]:
        joined = np.char.add(np.char.add(joined, "|"), values(column))
    return joined


def look_metrics(embeddings: np.ndarray, table: pd.DataFrame, query_rows: np.ndarray, label_column: str,
                 colour_column: str | None, pairs: tuple[str, ...] = (),
                 queries: np.ndarray | None = None, more: MorePhotos | None = None,
                 colour_families: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
    """Beside the type metrics, whether results share the look: relevant = same label and same colour
    (P@5, MAP@R), same colour alone (P@5), the best type+colour P@5 any ranking could reach given the gallery
    (per query min(5, R) / 5, averaged), and for each column of ``pairs`` same label and same value of it
    (``type_<column>_precision_at_5``). Exact search. Nothing without a colour column and pairs.

    With ``colour_families`` (the description's families of the colour column) also P@5 by colour family,
    with the label and alone (``type_colour_family_precision_at_5``, ``colour_family_precision_at_5``): raw
    names are noisy (a Navy Blue shirt for a Blue one is a miss), so the family figures say how far a miss is;
    the raw ones stay the headline, being the catalogue's own labels."""
    def score(columns: list[str]) -> dict[str, float]:
        return evaluate_retrieval(embeddings, joint_labels(table, columns), query_rows, index, queries, more)[0]

    index = gallery_index(embeddings, more)

    found: dict[str, float] = {}
    has_colour = colour_column is not None and colour_column in table
    if has_colour:
        type_colour = score([label_column, colour_column])
        look = joint_labels(table, [label_column, colour_column])
        n_relevant = count_relevant(look[query_rows], look)
        found.update({"type_colour_precision_at_5": type_colour["precision_at_5"],
                      "type_colour_map_at_r": type_colour["map_at_r"]})
    for column in pairs:
        if column in table:
            found[f"type_{column.lower()}_precision_at_5"] = score([label_column, column])["precision_at_5"]
    if has_colour:
        found["colour_precision_at_5"] = score([colour_column])["precision_at_5"]
        found["type_colour_precision_at_5_bound"] = float(np.mean(np.minimum(n_relevant, 5) / 5.0))
    if has_colour and colour_families:
        families = {colour_column: colour_families}
        for name, columns in (("type_colour_family", [label_column, colour_column]),
                              ("colour_family", [colour_column])):
            labels = joint_labels(table, columns, families)
            found[f"{name}_precision_at_5"] = float(top5_relevance(embeddings, labels, query_rows, index, queries,
                                                                   more).mean())
    return found


def top5_relevance(embeddings: np.ndarray, labels: np.ndarray, query_rows: np.ndarray, index,
                   queries: np.ndarray | None = None, more: MorePhotos | None = None) -> np.ndarray:
    """bool (n_queries, 5): each of a query's first five results (itself excluded) shares its label. Searches
    six deep only: enough for P@1 and P@5 where a label has thousands of items (MAP@R would rank them all)."""
    query_rows = np.asarray(query_rows, dtype=np.int64)
    _, neighbours = search_items(index, more[0] if more else PhotoRows.single(len(embeddings)),
                                 embeddings[query_rows] if queries is None else queries, 6)
    return relevance(exclude_self(neighbours, query_rows, 5), labels[query_rows], labels)


def column_metrics(embeddings: np.ndarray, table: pd.DataFrame, query_rows: np.ndarray, columns: tuple[str, ...],
                   queries: np.ndarray | None = None, max_map_r: int = 1000, more: MorePhotos | None = None
                   ) -> dict[str, dict[str, float]]:
    """Relevance by each column on its own (same value = relevant), for the columns with a value for every
    query: column -> P@1, P@5, and MAP@R where no query has more than ``max_map_r`` relevant items (a column
    such as gender has thousands: its MAP@R would rank the whole catalogue per query). Exact search."""
    found = {}
    index = gallery_index(embeddings, more)
    for column in columns:
        if column not in table:
            continue
        values = table[column].astype("string").fillna("").to_numpy(dtype=str)
        if (np.char.strip(values[query_rows]) == "").any() or len(set(values.tolist())) < 2:
            continue
        if count_relevant(values[query_rows], values).max(initial=0) <= max_map_r:
            scores = evaluate_retrieval(embeddings, values, query_rows, index, queries, more)[0]
            found[column] = {k: scores[k] for k in ("precision_at_1", "precision_at_5", "map_at_r")}
            continue
        relevant = top5_relevance(embeddings, values, query_rows, index, queries, more)
        found[column] = {"precision_at_1": float(relevant[:, 0].mean()),
                         "precision_at_5": float(relevant[:, :5].mean())}
    return found
