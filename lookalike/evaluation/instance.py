"""The instance protocol, for catalogues without labels: an altered copy of a held-out photo (flip, crop,
colour jitter and, half the time, a shopper alteration) is the query; the photo it came from is the one
relevant item in the whole gallery. Reported as recall@1, recall@5 and MRR (reciprocal rank, 0 past ``depth``).
"""

from __future__ import annotations

import numpy as np

from lookalike.model.preprocessing import PreprocessSpec
from lookalike.model.runtime import predict_paths
from lookalike.search.index import build_index, search

SHOPPER_ALTERATIONS = ("blur", "background", "jpeg")


def instance_ranks(gallery: np.ndarray, queries: np.ndarray, targets: np.ndarray, depth: int = 100) -> np.ndarray:
    """int64 (len(queries),): the 1-based rank of each query's target row in the exact search of ``gallery``
    (float32 (n, d), unit rows); 0 when it is not within ``depth``."""
    index = build_index(np.ascontiguousarray(gallery, np.float32), {"type": "flat"})
    _, neighbours = search(index, np.ascontiguousarray(queries, np.float32), min(depth, len(gallery)))
    hits = neighbours == np.asarray(targets, np.int64)[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0).astype(np.int64)


def instance_metrics(ranks: np.ndarray) -> dict[str, float]:
    """Recall@1, recall@5 and MRR from :func:`instance_ranks`."""
    ranks = np.asarray(ranks)
    found = ranks > 0
    return {"instance_recall_at_1": float(np.mean(ranks == 1)),
            "instance_recall_at_5": float(np.mean(found & (ranks <= 5))),
            "instance_mrr": float(np.mean(np.where(found, 1.0 / np.maximum(ranks, 1), 0.0)))}


def altered_queries(model, paths: list[str], spec: PreprocessSpec, seed: int, batch_size: int = 32,
                    alterations: tuple[str, ...] = SHOPPER_ALTERATIONS) -> np.ndarray:
    """``model`` (an exported runtime) over one seeded altered copy of each photo."""
    return predict_paths(model, paths, spec, batch_size, augment_seed=seed, description="altered queries",
                         alterations=alterations)
