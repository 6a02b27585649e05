"""Query expansion (lookalike/search/expansion.py): the weighting, the evaluate stage's batch form, and one
behaviour for the build's searcher and the live catalogue (whose live items are neighbours like build items)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from lookalike.live import LiveCatalogue, LiveStore
from lookalike.search.engine import Searcher
from lookalike.search.expansion import QueryExpansion, expanded_rows
from lookalike.search.index import build_index, search


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_a_query_moves_towards_its_neighbours_by_cosine_to_the_power():
    query = unit([1.0, 0.0, 0.0])
    neighbours = unit([[0.8, 0.6, 0.0], [0.1, 0.0, np.sqrt(0.99)]])  # cosines 0.8 and 0.1
    cosines = neighbours @ query
    got = QueryExpansion(2, power=2).combine(query[None], neighbours[None], cosines[None])[0]
    want = unit(query + 0.64 * neighbours[0] + 0.01 * neighbours[1])
    np.testing.assert_allclose(got, want, atol=1e-6)
    flat = QueryExpansion(2, power=0).combine(query[None], neighbours[None], cosines[None])[0]
    np.testing.assert_allclose(flat, unit(query + neighbours[0] + neighbours[1]), atol=1e-6)


def test_padding_and_negative_cosines_weigh_nothing():
    query = unit([1.0, 0.0])
    neighbours = unit([[0.0, 1.0], [-1.0, 0.1]])
    got = QueryExpansion(2, power=0).combine(query[None], neighbours[None], np.array([[np.nan, -0.99]]))[0]
    np.testing.assert_allclose(got, query, atol=1e-6)


def test_off_leaves_the_query_as_it_is_and_asks_for_no_neighbours():
    def nearest(vector: np.ndarray, n: int):
        raise AssertionError("an expansion that is off searched")

    query = unit([0.6, 0.8])
    np.testing.assert_array_equal(QueryExpansion().expand(query, nearest), query)
    assert QueryExpansion.from_index_params({"type": "flat"}) == QueryExpansion(0, 3.0)  # builds before the option


def test_catalogue_rows_never_count_themselves_among_their_neighbours():
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(40, 8)))
    index = build_index(vectors, {"type": "flat"})
    rows = np.array([3, 17, 25])
    expansion = QueryExpansion(3, power=1)
    got = expanded_rows(expansion, vectors, rows, lambda q, k: search(index, q, k))
    for query, row in zip(got, rows, strict=True):
        cosines = vectors @ vectors[row]
        cosines[row] = -np.inf
        nearest = np.argsort(-cosines, kind="stable")[:3]
        want = unit(vectors[row] + (cosines[nearest][:, None] * vectors[nearest]).sum(axis=0))
        np.testing.assert_allclose(query, want, atol=1e-5)
    np.testing.assert_array_equal(expanded_rows(QueryExpansion(), vectors, rows, None), vectors[rows])


@pytest.fixture(scope="module")
def searcher(tiny_project: Path) -> Searcher:
    return Searcher.load(tiny_project / "artifacts", root=tiny_project)


def expanded_by_hand(searcher: Searcher, vector: np.ndarray, n: int, power: float, own_row: int | None):
    cosines = searcher.embeddings @ vector
    if own_row is not None:
        cosines[own_row] = -np.inf
    nearest = np.argsort(-cosines, kind="stable")[:n]
    return unit(vector + ((cosines[nearest] ** power)[:, None] * searcher.embeddings[nearest]).sum(axis=0))


def ranked_ids(searcher: Searcher, vector: np.ndarray, k: int, own_row: int | None) -> list[int]:
    cosines = searcher.embeddings @ vector
    if own_row is not None:
        cosines[own_row] = -np.inf
    return [int(searcher.items["id"].iloc[r]) for r in np.argsort(-cosines, kind="stable")[:k]]


def test_the_builds_searcher_ranks_by_the_expanded_query(searcher: Searcher):
    expanding = dataclasses.replace(searcher, expansion=QueryExpansion(3, power=3))
    row = 7
    item_id = int(searcher.items["id"].iloc[row])
    want = ranked_ids(searcher, expanded_by_hand(searcher, searcher.embeddings[row], 3, 3, row), 10, row)
    assert [m.id for m in expanding.similar_items(item_id, k=10).matches] == want
    plain = [m.id for m in searcher.similar_items(item_id, k=10).matches]
    assert plain == ranked_ids(searcher, searcher.embeddings[row], 10, row)
    assert plain != want  # the expansion changed something on this catalogue, so the check above can fail


def test_the_live_catalogue_expands_like_the_build_and_with_its_live_items(searcher: Searcher, tmp_path: Path):
    expanding = dataclasses.replace(searcher, expansion=QueryExpansion(3, power=3))
    catalogue = LiveCatalogue.open(expanding, LiveStore(tmp_path / "live.db"), near_duplicate_cosine=0.99)
    row = 7
    item_id = str(searcher.items["id"].iloc[row])
    build_only = [str(m.id) for m in expanding.similar_items(int(item_id), k=10).matches]
    assert [m.id for m in catalogue.similar(item_id, k=10).matches] == build_only
    # a live copy of the query's nearest neighbour becomes one of the neighbours the query moves towards
    neighbour_row = int(np.argsort(-(searcher.embeddings @ searcher.embeddings[row]), kind="stable")[1])
    metadata = {c: v for c, v in searcher.metadata(neighbour_row).items() if v != "NA"}
    catalogue.put("live-twin", Path(searcher.resolve_path(neighbour_row)).read_bytes(), metadata)
    vectors = np.vstack([searcher.embeddings, catalogue.vector("live-twin")[None]])
    cosines = vectors @ searcher.embeddings[row]
    cosines[row] = -np.inf
    nearest = np.argsort(-cosines, kind="stable")[:3]
    assert len(vectors) - 1 in nearest
    query = unit(searcher.embeddings[row] + ((cosines[nearest] ** 3)[:, None] * vectors[nearest]).sum(axis=0))
    scores = vectors @ query
    scores[row] = -np.inf
    ids = [str(i) for i in searcher.items["id"]] + ["live-twin"]
    got = catalogue.similar(item_id, k=10).matches
    expected = np.argsort(-scores, kind="stable")[:10]
    # the same items at the same scores; the twin and the photo it copies tie (to float error) in either order
    np.testing.assert_allclose([m.score for m in got], scores[expected], atol=1e-5)
    assert {m.id for m in got} == {ids[r] for r in expected} and "live-twin" in {m.id for m in got}
