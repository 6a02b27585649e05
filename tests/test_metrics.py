"""lookalike.evaluation.metrics against tiny cases computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.evaluation.metrics import (
    METRIC_NAMES,
    count_relevant,
    evaluate_retrieval,
    exclude_self,
    per_label_table,
    per_query_scores,
    relevance,
    retrieval_metrics,
)

# Five queries, six ranked results each (1 = shares the query's label), and R per query.
RELEVANT = np.array([
    [1, 0, 1, 0, 0, 0],  # q0, R = 3
    [0, 1, 1, 1, 0, 1],  # q1, R = 6
    [0, 0, 0, 0, 0, 1],  # q2, R = 1
    [0, 0, 0, 0, 0, 0],  # q3, R = 0 (the query's label has no other item)
    [1, 1, 1, 1, 1, 1],  # q4, R = 5
], dtype=bool)
N_RELEVANT = np.array([3, 6, 1, 0, 5])

# By hand, per query:
# P@1: first column                         -> 1, 0, 0, 0, 1
# P@5: hits in the first 5 / 5              -> 2/5, 3/5, 0, 0, 5/5
# R@5: hits in the first 5 / R (0 if R = 0) -> 2/3, 3/6, 0/1, 0, 5/5
# AP@5 = sum_{i<=5} P@i rel_i / min(5, R):
#   q0: (1/1 + 2/3) / 3          = 0.555556
#   q1: (1/2 + 2/3 + 3/4) / 5    = 0.383333
#   q2: 0 (its one hit is at rank 6)
#   q3: 0 (R = 0)
#   q4: (1 + 1 + 1 + 1 + 1) / 5  = 1
# top-5 accuracy: any hit in the first 5     -> 1, 1, 0, 0, 1
# MAP@R = sum_{i<=R} P@i rel_i / R:
#   q0: R = 3, hits at 1, 3               -> (1/1 + 2/3) / 3 = 0.555556
#   q1: R = 6, hits at 2, 3, 4, 6         -> (1/2 + 2/3 + 3/4 + 4/6) / 6 = 0.430556
#   q2: R = 1, rank 1 is not a hit        -> 0
#   q3: R = 0                             -> 0
#   q4: R = 5, hits at 1..5               -> 5 / 5 = 1
EXPECTED = {
    "precision_at_1": [1, 0, 0, 0, 1],
    "precision_at_5": [0.4, 0.6, 0, 0, 1],
    "recall_at_5": [2 / 3, 0.5, 0, 0, 1],
    "map_at_5": [(1 + 2 / 3) / 3, (1 / 2 + 2 / 3 + 3 / 4) / 5, 0, 0, 1],
    "top5_accuracy": [1, 1, 0, 0, 1],
    "map_at_r": [(1 + 2 / 3) / 3, (1 / 2 + 2 / 3 + 3 / 4 + 4 / 6) / 6, 0, 0, 1],
}


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_per_query_score_matches_hand_computation(name):
    scores = per_query_scores(RELEVANT, N_RELEVANT)
    np.testing.assert_allclose(scores[name], EXPECTED[name], atol=1e-9)


def test_per_query_scores_returns_exactly_the_six_metrics():
    assert set(per_query_scores(RELEVANT, N_RELEVANT)) == set(METRIC_NAMES)


def test_retrieval_metrics_are_the_means_over_queries():
    metrics = retrieval_metrics(RELEVANT, N_RELEVANT)
    assert set(metrics) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert metrics[name] == pytest.approx(np.mean(EXPECTED[name]), abs=1e-12)
        assert isinstance(metrics[name], float)


def test_map_at_5_normalises_by_min_of_5_and_r():
    # one hit at rank 1; R = 2 -> AP@5 = 1/2 (normaliser min(5, 2) = 2); R = 10 -> 1/5
    relevant = np.zeros((2, 10), dtype=bool)
    relevant[:, 0] = True
    scores = per_query_scores(relevant, np.array([2, 10]))
    np.testing.assert_allclose(scores["map_at_5"], [0.5, 0.2])


def test_map_at_r_ignores_hits_after_rank_r():
    # R = 2, hits at ranks 2 and 3: only rank 2 counts -> (1/2) / 2 = 0.25
    relevant = np.array([[0, 1, 1, 0, 0]], dtype=bool)
    assert per_query_scores(relevant, np.array([2]))["map_at_r"][0] == pytest.approx(0.25)


def test_too_few_ranks_for_five_raise():
    with pytest.raises(ValueError, match="ranked results"):
        per_query_scores(np.ones((2, 4), dtype=bool), np.array([1, 1]))


def test_too_few_ranks_for_r_raise():
    with pytest.raises(ValueError, match="ranked results"):
        retrieval_metrics(np.ones((1, 6), dtype=bool), np.array([7]))


# ---------------------------------------------------------------- helpers


def test_exclude_self_drops_the_query_wherever_it_appears_and_pads():
    neighbours = np.array([
        [0, 5, 3, -1, -1],  # self first
        [4, 1, 7, 2, 9],  # self second
        [3, 4, 5, 6, 2],  # self last, beyond k
        [8, 9, -1, -1, -1],  # no self, too few results
    ])
    out = exclude_self(neighbours, np.array([0, 1, 2, 3]), k=3)
    expected = [[5, 3, -1], [4, 7, 2], [3, 4, 5], [8, 9, -1]]
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int64


def test_relevance_treats_padding_as_not_relevant():
    gallery_labels = np.array(["a", "b", "a", "b"])
    neighbours = np.array([[2, -1, 1], [3, 0, -1]])
    # q0 label a: row 2 (a) yes, padding no (even though row 0 is also an "a"), row 1 (b) no
    # q1 label b: row 3 (b) yes, row 0 (a) no, padding no
    out = relevance(neighbours, np.array(["a", "b"]), gallery_labels)
    np.testing.assert_array_equal(out, [[True, False, False], [True, False, False]])


def test_count_relevant_excludes_the_query_itself():
    gallery = np.array(["a", "a", "b", "a", "c"])
    np.testing.assert_array_equal(count_relevant(np.array(["a", "b", "c"]), gallery), [2, 0, 0])
    np.testing.assert_array_equal(count_relevant(np.array(["a", "b", "c"]), gallery, self_in_gallery=False),
                                  [3, 1, 1])


def test_count_relevant_for_a_label_outside_the_gallery_is_zero():
    assert count_relevant(np.array(["z"]), np.array(["a", "b"]), self_in_gallery=False).tolist() == [0]


def test_per_label_table_groups_queries_by_label():
    labels = np.array(["x", "y", "y", "z", "x"])
    table = per_label_table(RELEVANT, N_RELEVANT, labels).set_index("label")
    assert table["queries"].to_dict() == {"x": 2, "y": 2, "z": 1}
    # x = queries 0 and 4: P@1 (1 + 1) / 2; y = queries 1 and 2: P@1 0
    assert table.loc["x", "precision_at_1"] == pytest.approx(1.0)
    assert table.loc["y", "precision_at_5"] == pytest.approx((0.6 + 0) / 2)
    assert table.loc["z", "map_at_r"] == 0


# ---------------------------------------------------------------- end to end


def unit_vectors(degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_evaluate_retrieval_on_points_of_a_circle():
    # row:    0    1    2    3     4     5     6
    # label:  A    A    B    B     C     C     C
    # angle:  0   50   20  125   195   230   270
    embeddings = unit_vectors([0, 50, 20, 125, 195, 230, 270])
    labels = np.array(["A", "A", "B", "B", "C", "C", "C"])
    # Ranked by angular distance, the query itself excluded:
    # q0 (A, 0):   2 (20), 1 (50), 6 (90), 3 (125), 5 (130)   -> B A C B C: rel 0 1 0 0 0, R = 1
    # q2 (B, 20):  0 (20), 1 (30), 3 (105), 6 (110), 5 (150) -> A A B C C: rel 0 0 1 0 0, R = 1
    # q4 (C, 195): 5 (35), 3 (70), 6 (75), 1 (145), 0 (165)   -> C B C A A: rel 1 0 1 0 0, R = 2
    # P@1   = (0 + 0 + 1) / 3
    # P@5   = (1/5 + 1/5 + 2/5) / 3
    # R@5   = (1/1 + 1/1 + 2/2) / 3 = 1
    # AP@5  = ((1/2)/1 + (1/3)/1 + (1 + 2/3)/2) / 3
    # top-5 = 1
    # MAP@R = (0 + 0 + (1/1)/2) / 3
    metrics, table = evaluate_retrieval(embeddings, labels, np.array([0, 2, 4]))
    assert metrics["precision_at_1"] == pytest.approx(1 / 3)
    assert metrics["precision_at_5"] == pytest.approx((0.2 + 0.2 + 0.4) / 3)
    assert metrics["recall_at_5"] == pytest.approx(1.0)
    assert metrics["map_at_5"] == pytest.approx((1 / 2 + 1 / 3 + (1 + 2 / 3) / 2) / 3)
    assert metrics["top5_accuracy"] == pytest.approx(1.0)
    assert metrics["map_at_r"] == pytest.approx(0.5 / 3)
    assert table.set_index("label")["gallery_relevant"].to_dict() == {"A": 1, "B": 1, "C": 2}


def test_evaluate_retrieval_never_returns_the_query_even_with_an_identical_twin():
    # rows 0 and 1 are the same point with different labels; each one's nearest *other* item is the twin.
    # If a query could match itself, P@1 would be 1 for both; excluded, it is 0.
    embeddings = unit_vectors([10, 10, 100, 100, 200, 200, 300])
    labels = np.array(["P", "Q", "P", "Q", "P", "Q", "P"])
    metrics, _ = evaluate_retrieval(embeddings, labels, np.array([0, 1]))
    assert metrics["precision_at_1"] == 0.0


def test_evaluate_retrieval_all_queries_perfect_clusters():
    embeddings = unit_vectors([0, 5, 10, 120, 125, 130, 240, 245])
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    metrics, table = evaluate_retrieval(embeddings, labels, np.arange(8))
    for name in ("precision_at_1", "recall_at_5", "map_at_5", "top5_accuracy", "map_at_r"):
        assert metrics[name] == pytest.approx(1.0), name
    # P@5 is capped by R: (6 queries * 2/5 + 2 queries * 1/5) / 8
    assert metrics["precision_at_5"] == pytest.approx((6 * 0.4 + 2 * 0.2) / 8)
    assert table["queries"].sum() == 8


def test_relevance_by_column_agrees_with_and_without_map_at_r_and_skips_columns_that_cannot_score():
    import pandas as pd

    from lookalike.evaluation.metrics import column_metrics

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pd.DataFrame({"two": rng.choice(["x", "y"], 300), "ten": rng.choice(list("abcdefghij"), 300),
                          "one": "same", "holes": [""] * 150 + ["v"] * 150})
    queries = np.arange(0, 300, 7)
    full = column_metrics(vectors, table, queries, ("two", "ten", "one", "holes", "absent"))
    capped = column_metrics(vectors, table, queries, ("two", "ten"), max_map_r=10)
    assert set(full) == {"two", "ten"}  # one value, a query without a value, no such column: nothing to score
    for column in ("two", "ten"):
        assert "map_at_r" in full[column] and "map_at_r" not in capped[column]
        for name in ("precision_at_1", "precision_at_5"):
            assert capped[column][name] == pytest.approx(full[column][name])
    assert full["two"]["precision_at_5"] > full["ten"]["precision_at_5"]  # two values: half the gallery relevant
