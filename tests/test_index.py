"""lookalike.index: FAISS indexes over unit vectors, against brute-force numpy search."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from lookalike.index import INDEX_TYPES, build_index, load_index, save_index, search

N, DIM, K = 2000, 16, 10
GENEROUS = {
    "flat": {"type": "flat"},
    "ivf_flat": {"type": "ivf_flat", "nlist": 16, "nprobe": 16},
    "ivf_pq": {"type": "ivf_pq", "nlist": 8, "nprobe": 8, "pq_m": 8, "pq_bits": 8},
    "hnsw": {"type": "hnsw", "hnsw_m": 16, "ef_construction": 100, "ef_search": 100},
}
# the project's params.yaml values
PROJECT = {"nlist": 64, "nprobe": 8, "pq_m": 8, "pq_bits": 8, "hnsw_m": 32, "ef_construction": 200, "ef_search": 128}


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    return unit_vectors(N, DIM, seed=0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return unit_vectors(100, DIM, seed=1)


@pytest.fixture(scope="module")
def indexes(gallery) -> dict:
    return {kind: build_index(gallery, params, seed=0) for kind, params in GENEROUS.items()}


def brute_force(gallery: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None):
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    if allowed is not None:
        mask = np.full(len(gallery), -np.inf)
        mask[allowed] = 0.0
        scores = scores + mask
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=False)]))


def test_flat_index_equals_brute_force(indexes, gallery, queries):
    scores, rows = search(indexes["flat"], queries, K)
    expected_scores, expected_rows = brute_force(gallery, queries, K)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert rows.dtype == np.int64
    assert scores.dtype == np.float32


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq", "hnsw"])
def test_approximate_index_reaches_recall_at_10(indexes, gallery, queries, kind):
    _, rows = search(indexes[kind], queries, K)
    _, exact = brute_force(gallery, queries, K)
    assert recall(rows, exact) >= 0.8
    assert (rows >= 0).all()


def test_index_types_build_the_expected_faiss_classes(indexes):
    assert isinstance(indexes["flat"], faiss.IndexFlatIP)
    assert isinstance(indexes["ivf_flat"], faiss.IndexIVFFlat)
    assert isinstance(indexes["ivf_pq"], faiss.IndexIVFPQ)
    assert isinstance(indexes["hnsw"], faiss.IndexHNSWFlat)
    assert set(indexes) == set(INDEX_TYPES)
    for index in indexes.values():
        assert index.ntotal == N
        assert index.metric_type == faiss.METRIC_INNER_PRODUCT


def test_query_time_knobs_are_applied(indexes):
    assert indexes["ivf_flat"].nprobe == 16
    assert indexes["hnsw"].hnsw.efSearch == 100


def test_nlist_is_capped_to_39_training_points_per_list(gallery):
    index = build_index(gallery, {"type": "ivf_flat", "nlist": 1000, "nprobe": 4})
    assert index.nlist == N // 39


def test_ivf_build_is_deterministic_for_a_seed(gallery, queries):
    params = {"type": "ivf_flat", "nlist": 16, "nprobe": 2}
    first = search(build_index(gallery, params, seed=3), queries, K)[1]
    second = search(build_index(gallery, params, seed=3), queries, K)[1]
    np.testing.assert_array_equal(first, second)


def test_unknown_index_type_raises(gallery):
    with pytest.raises(ValueError, match="unknown index.type 'annoy'"):
        build_index(gallery, {"type": "annoy"})


def test_k_larger_than_the_gallery_is_capped(gallery):
    index = build_index(gallery[:7], {"type": "flat"})
    scores, rows = search(index, gallery[:2], 50)
    assert rows.shape == (2, 7)
    assert sorted(rows[0].tolist()) == list(range(7))


def test_a_single_query_vector_is_accepted(indexes, gallery):
    _, rows = search(indexes["flat"], gallery[5], 3)
    assert rows.shape == (1, 3)
    assert rows[0, 0] == 5  # a unit vector is its own nearest neighbour


# ---------------------------------------------------------------- filtered search


def test_flat_search_with_allowed_rows_equals_restricted_brute_force(indexes, gallery, queries):
    allowed = np.random.default_rng(4).choice(N, size=60, replace=False)
    scores, rows = search(indexes["flat"], queries, K, allowed_rows=allowed)
    expected_scores, expected_rows = brute_force(gallery, queries, K, allowed)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq", "hnsw"])
def test_search_with_allowed_rows_returns_only_allowed_rows_and_k_results(indexes, queries, kind):
    allowed = np.arange(0, N, 2)  # every other row
    _, rows = search(indexes[kind], queries, K, allowed_rows=allowed)
    assert rows.shape == (len(queries), K)
    assert (rows >= 0).all()
    assert np.isin(rows, allowed).all()


@pytest.mark.parametrize("kind", ["flat", "ivf_flat"])  # ivf_flat here probes every list (nprobe = nlist)
def test_filter_with_fewer_rows_than_k_returns_them_all_then_padding(indexes, queries, kind):
    allowed = np.array([3, 500, 1999])
    _, rows = search(indexes[kind], queries[:1], K, allowed_rows=allowed)
    assert sorted(rows[0][rows[0] >= 0].tolist()) == [3, 500, 1999]
    assert (rows[0][3:] == -1).all()


@pytest.mark.parametrize("kind", ["ivf_flat", "hnsw"])
def test_filter_far_from_the_query_still_gets_k_results_with_project_params(gallery, kind):
    # e.g. a shirt photo searched with a "Footwear only" filter: every allowed row is far from the query
    index = build_index(gallery, {"type": kind, **PROJECT}, seed=0)
    query = gallery[:1]
    allowed = np.argsort(query[0] @ gallery.T)[:50]  # the 50 rows least similar to the query
    _, rows = search(index, query, K, allowed_rows=allowed)
    assert (rows >= 0).all()


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_save_load_round_trip_gives_identical_results(indexes, queries, tmp_path, kind):
    path = tmp_path / f"{kind}.faiss"
    save_index(indexes[kind], path)
    loaded = load_index(path, GENEROUS[kind])
    assert loaded.ntotal == N
    before_scores, before_rows = search(indexes[kind], queries, K)
    after_scores, after_rows = search(loaded, queries, K)
    np.testing.assert_array_equal(after_rows, before_rows)
    np.testing.assert_array_equal(after_scores, before_scores)


def test_load_index_applies_the_query_time_params(indexes, tmp_path):
    path = tmp_path / "ivf.faiss"
    save_index(indexes["ivf_flat"], path)
    assert load_index(path, {"type": "ivf_flat", "nprobe": 3}).nprobe == 3
    save_index(indexes["hnsw"], path)
    assert load_index(path, {"type": "hnsw", "ef_search": 77}).hnsw.efSearch == 77
