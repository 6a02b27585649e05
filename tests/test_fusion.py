"""study/fusion.py: the re-ranking study's building blocks, on small hand-made vectors."""

from __future__ import annotations

import numpy as np

from lookalike.evaluation.metrics import evaluate_retrieval, unit_rows
from study.fusion import (
    database_augmentation,
    fused_vectors,
    interleaved_scores,
    query_expansion,
    ranks,
    score_metrics,
)


def test_score_metrics_with_plain_cosine_matches_the_evaluate_stage() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 60)
    vectors = unit_rows(rng.normal(size=(60, 8)) + 2.0 * np.eye(8)[labels])
    queries = np.arange(0, 60, 3)
    gallery = np.arange(60)
    expected, _ = evaluate_retrieval(vectors, labels, queries)
    got = score_metrics(lambda positions: vectors[queries[positions]] @ vectors.T, queries, gallery, labels)
    assert got == expected


def test_fused_vectors_give_the_weighted_cosine() -> None:
    rng = np.random.default_rng(0)
    t, p = unit_rows(rng.normal(size=(5, 3))), unit_rows(rng.normal(size=(5, 7)))
    fused = fused_vectors(t, p, 0.7)
    np.testing.assert_allclose(fused @ fused.T, 0.7 * t @ t.T + 0.3 * p @ p.T, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-6)


def test_interleave_takes_t_first_then_p_then_the_rest_by_t() -> None:
    t = np.array([[-np.inf, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]])  # column 0 is the query itself
    p = np.array([[1.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.95, 0.99]])
    order = np.argsort(-interleaved_scores(t, p, first=3), axis=1, kind="stable")[0]
    # T's best 3 (1, 2, 3), then P's best not among them (7, 6: the query is never picked), then the rest by T
    assert order.tolist() == [1, 2, 3, 7, 6, 4, 5, 0]


def test_ranks_are_zero_based_best_first() -> None:
    assert ranks(np.array([[0.1, 0.9, 0.5]])).tolist() == [[2, 0, 1]]


def test_database_augmentation_averages_with_the_nearest_candidates_only() -> None:
    vectors = unit_rows(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]))
    # row 0's nearest candidate is row 1; row 1 is not its own neighbour, so its nearest candidate is row 3
    out = database_augmentation(vectors, candidates=np.array([1, 3]), n=1)
    np.testing.assert_allclose(out[0], unit_rows(vectors[[0]] + vectors[[1]])[0], atol=1e-6)
    np.testing.assert_allclose(out[1], unit_rows(vectors[[1]] + vectors[[3]])[0], atol=1e-6)
    assert database_augmentation(vectors, np.array([1, 3]), 0) is vectors


def test_query_expansion_leaves_the_query_own_row_out() -> None:
    gallery = unit_rows(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    expanded = query_expansion(gallery[[0]], gallery, own=np.array([0]), n=1)
    np.testing.assert_allclose(expanded[0], unit_rows(gallery[[0]] + gallery[[2]])[0], atol=1e-6)
