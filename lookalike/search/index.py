"""FAISS indexes over unit-length embeddings: inner product = cosine similarity.

``flat`` is exact and the default; ``ivf_flat``, ``ivf_pq`` and ``hnsw`` trade a
little recall for speed and memory on large catalogues (see the README's rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

INDEX_TYPES = ("flat", "ivf_flat", "ivf_pq", "hnsw")


def build_index(embeddings: np.ndarray, params: dict[str, Any], seed: int = 0) -> faiss.Index:
    """Index float32 (n, dim) unit vectors; row i of ``embeddings`` is FAISS id i."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = embeddings.shape
    kind = params["type"]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind in ("ivf_flat", "ivf_pq"):
        nlist = min(int(params["nlist"]), max(1, n // 39))  # FAISS wants >= 39 training points per list
        index = untrained_ivf(kind, dim, nlist, params, seed)
        index.train(embeddings)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params["ef_construction"])
    else:
        raise ValueError(f"unknown index.type {kind!r}; choose one of {', '.join(INDEX_TYPES)}")
    index.add(embeddings)
    configure_search(index, params)
    return index


def untrained_ivf(kind: str, dim: int, nlist: int, params: dict[str, Any], seed: int = 0) -> faiss.Index:
    """An inner-product IVF index (``ivf_flat`` or ``ivf_pq``) with ``nlist`` lists, to train; seeded k-means."""
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf_flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, int(params["pq_m"]), int(params["pq_bits"]),
                                 faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    return index


def configure_search(index: faiss.Index, params: dict[str, Any]) -> None:
    """Apply query-time knobs (nprobe, efSearch); they are not stored in the index file."""
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = int(params.get("nprobe", 1))
        if index.direct_map.type == faiss.DirectMap.NoMap:
            index.make_direct_map()  # lets filtered searches fall back to exact scoring
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(params.get("ef_search", 16))


def save_index(index: faiss.Index, path: str | Path) -> None:
    faiss.write_index(index, str(path))


def load_index(path: str | Path, params: dict[str, Any]) -> faiss.Index:
    index = faiss.read_index(str(path))
    configure_search(index, params)
    return index


def search(
    index: faiss.Index, queries: np.ndarray, k: int, allowed_rows: np.ndarray | None = None,
    excluded_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores float32 (q, k), rows int64 (q, k)); -1 rows where fewer than k exist.

    ``allowed_rows`` restricts the search to those rows, so a filter still gets k
    results: an approximate index that finds too few of them (the allowed rows
    lie outside the probed lists or graph neighbourhood) falls back to exact
    scoring of the allowed rows. ``excluded_rows`` (with no ``allowed_rows``) is
    the complement: every row but those, which never appear in the results
    (tombstones of removed items), with the same fallback.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, index.d)
    k = max(1, min(int(k), index.ntotal))
    if allowed_rows is not None and excluded_rows is not None and len(excluded_rows):
        allowed_rows = np.setdiff1d(allowed_rows, excluded_rows)
    elif excluded_rows is not None and len(excluded_rows):
        excluded = np.unique(np.asarray(excluded_rows, dtype=np.int64))
        inner = faiss.IDSelectorBatch(excluded)
        selector = faiss.IDSelectorNot(inner)  # holds a raw pointer to ``inner``: keep both alive here
        scores, rows = index.search(queries, k, params=_search_params(index, selector, k))
        wanted = min(k, index.ntotal - int(np.count_nonzero((excluded >= 0) & (excluded < index.ntotal))))
        if isinstance(index, faiss.IndexFlat) or (rows >= 0).sum(axis=1).min(initial=wanted) >= wanted:
            return scores, rows
        keep = np.ones(index.ntotal, dtype=bool)
        keep[excluded[(excluded >= 0) & (excluded < index.ntotal)]] = False
        return _exact_among(index, queries, k, np.flatnonzero(keep))
    if allowed_rows is None:
        return index.search(queries, k)
    selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_rows, dtype=np.int64))
    scores, rows = index.search(queries, k, params=_search_params(index, selector, k))
    wanted = min(k, len(allowed_rows))
    if isinstance(index, faiss.IndexFlat) or (rows >= 0).sum(axis=1).min(initial=wanted) >= wanted:
        return scores, rows
    return _exact_among(index, queries, k, np.asarray(allowed_rows, dtype=np.int64))


def _search_params(index: faiss.Index, selector: faiss.IDSelector, k: int) -> faiss.SearchParameters:
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=max(index.hnsw.efSearch, k))
    return faiss.SearchParameters(sel=selector)


def _exact_among(index: faiss.Index, queries: np.ndarray, k: int, rows: np.ndarray,
                 chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner product against the stored vectors of ``rows`` only, ``chunk`` rows at a time."""
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        similarity = queries @ index.reconstruct_batch(part).T
        merged_scores = np.concatenate([scores, similarity.astype(np.float32)], axis=1)
        merged_rows = np.concatenate([found, np.broadcast_to(part, similarity.shape)], axis=1)
        # earlier candidates first on ties: the order of ``rows``, as a single full sort would give
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(merged_scores, order, axis=1)
        found = np.take_along_axis(merged_rows, order, axis=1)
    found[~np.isfinite(scores)] = -1
    return scores, found
