"""Query expansion: a query vector moved towards its nearest catalogue items before the search.

Alpha query expansion (Radenović, Tolias and Chum, "Fine-tuning CNN image retrieval with no human annotation",
TPAMI 2018): the query plus its ``neighbours`` nearest items, each weighted by its cosine ** ``power``, unit
length again. A catalogue's photos of one product sit in a tight cluster that one photo only touches; its
neighbours pull the query into it, which lifts class retrieval where no label taught the model (a label-free
build, docs/catalogues.md). Stored vectors never change, so a live item is expanded towards and found like a
build item, and near-duplicate checks still compare the photos themselves. Off (``neighbours`` 0) by default:
one more top-k per query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QueryExpansion:
    neighbours: int = 0  # nearest items added to a query; 0: off
    power: float = 3.0  # a neighbour's weight is its cosine with the query ** power (0: all weigh 1)

    @classmethod
    def from_index_params(cls, index_params: dict) -> QueryExpansion:
        """The build's expansion from its ``index`` params (a build made before the option: off)."""
        return cls(int(index_params.get("query_expansion", 0)), float(index_params.get("expansion_power", 3.0)))

    def __bool__(self) -> bool:
        return self.neighbours > 0

    def combine(self, queries: np.ndarray, neighbour_vectors: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """float32 (q, dim) unit: each query plus its neighbours ((q, n, dim), cosines (q, n); n may be below
        ``neighbours`` and padded rows carry a NaN score; those and cosines <= 0 weigh 0)."""
        queries = np.asarray(queries, np.float32).reshape(len(neighbour_vectors), -1)
        scores = np.asarray(scores, np.float32)
        positive = np.nan_to_num(scores, nan=0.0) > 0  # padding (NaN) and dissimilar items never pull
        weights = np.where(positive, np.where(positive, scores, 1.0) ** self.power, 0.0).astype(np.float32)
        expanded = queries + np.einsum("qn,qnd->qd", weights, np.asarray(neighbour_vectors, np.float32))
        norms = np.linalg.norm(expanded, axis=1, keepdims=True)
        return (expanded / np.maximum(norms, 1e-12)).astype(np.float32)

    def expand(self, vector: np.ndarray, nearest: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
               ) -> np.ndarray:
        """One query (dim,) expanded; ``nearest(vector, n)`` gives the catalogue's nearest vectors (<= n, dim) and
        their cosines (<= n,) among the items the search itself may return. The vector itself when off."""
        vector = np.asarray(vector, np.float32)
        if not self:
            return vector
        vectors, scores = nearest(vector, self.neighbours)
        if not len(scores):
            return vector
        return self.combine(vector[None], np.asarray(vectors, np.float32)[None], np.asarray(scores)[None])[0]


def expanded_rows(expansion: QueryExpansion, embeddings: np.ndarray, rows: np.ndarray,
                  search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The catalogue items at ``rows`` as expanded queries (q, dim), each never its own neighbour: what
    "more like this" asks for each of them (the evaluate stage's queries). ``search(queries, k)`` is the build's
    top-k (scores (q, k), rows (q, k), -1 where fewer)."""
    queries = np.asarray(embeddings[rows], np.float32)
    if not expansion:
        return queries
    scores, found = search(queries, expansion.neighbours + 1)
    keep = (found >= 0) & (found != np.asarray(rows)[:, None])
    order = np.argsort(~keep, axis=1, kind="stable")[:, :expansion.neighbours]  # own row dropped, order kept
    picked = np.take_along_axis(found, order, axis=1)
    picked_scores = np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(scores, order, axis=1),
                             np.nan)
    return expansion.combine(queries, embeddings[np.maximum(picked, 0)], picked_scores)
