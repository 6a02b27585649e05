"""study/misses.py: the neighbour lists it compares leave the query itself out."""

from __future__ import annotations

import numpy as np

from study.misses import top_k


def test_top_k_excludes_the_query_and_ranks_by_cosine() -> None:
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.7, 0.7]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert top_k(vectors, np.array([0, 2]), k=2).tolist() == [[1, 3], [3, 1]]
