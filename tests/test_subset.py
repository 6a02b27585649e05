"""lookalike.catalogue.subset: the seeded stratified subset and the train / val / test split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookalike.catalogue.subset import SPLITS, split_train_val_test, stratified_subset

LABEL_SIZES = {"A": 50, "B": 30, "C": 15, "D": 4, "E": 9, "F": 12}


def make_table(sizes: dict[str, int] = LABEL_SIZES, seed: int = 0) -> pd.DataFrame:
    labels = [label for label, n in sizes.items() for _ in range(n)]
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1000, 1000 + len(labels)))  # ids not in label order
    return pd.DataFrame({"id": ids, "articleType": labels, "name": [f"item {i}" for i in ids]})


# ---------------------------------------------------------------- stratified_subset


def test_subset_is_deterministic_for_a_seed():
    table = make_table()
    first, report_first = stratified_subset(table, "articleType", 40, 5, seed=3)
    second, report_second = stratified_subset(table, "articleType", 40, 5, seed=3)
    pd.testing.assert_frame_equal(first, second)
    assert report_first == report_second


def test_subset_depends_on_the_seed():
    table = make_table()
    first, _ = stratified_subset(table, "articleType", 40, 5, seed=3)
    second, _ = stratified_subset(table, "articleType", 40, 5, seed=4)
    assert set(first["id"]) != set(second["id"])


@pytest.mark.parametrize("size", [2, 17, 40, 81, 115])
def test_subset_has_exactly_the_requested_size(size):
    subset, report = stratified_subset(make_table(), "articleType", size, 5, seed=1)
    assert len(subset) == size
    assert report["rows"] == size


@pytest.mark.parametrize("size", [10, 17, 40, 81])
def test_subset_label_counts_are_within_one_of_proportional(size):
    table = make_table()
    kept = table[table["articleType"] != "D"]  # D is rare (4 < 5)
    subset, report = stratified_subset(table, "articleType", size, 5, seed=1)
    kept = kept[~kept["articleType"].isin(list(report["labels_dropped_by_sampling"]))]
    counts = subset["articleType"].value_counts()
    for label, available in kept["articleType"].value_counts().items():
        exact = available / len(kept) * size
        assert abs(counts.get(label, 0) - exact) < 1, (label, counts.get(label, 0), exact)
        assert counts[label] >= 2


def test_labels_too_small_to_sample_twice_are_dropped_and_reported():
    subset, report = stratified_subset(make_table(), "articleType", 10, 5, seed=1)
    assert len(subset) == 10
    assert report["labels_dropped_by_sampling"]
    assert not subset["articleType"].isin(list(report["labels_dropped_by_sampling"])).any()


def test_rare_labels_are_left_out_and_reported():
    subset, report = stratified_subset(make_table(), "articleType", 40, 10, seed=1)
    # D (4) and E (9) have fewer than 10 rows
    assert report["labels_left_out"] == {"D": 4, "E": 9}
    assert report["rows_left_out_rare_label"] == 13
    assert not subset["articleType"].isin(["D", "E"]).any()


def test_subset_larger_than_catalogue_keeps_every_non_rare_row():
    table = make_table()
    subset, report = stratified_subset(table, "articleType", 10_000, 5, seed=1)
    assert len(subset) == len(table) - LABEL_SIZES["D"]
    assert report["rows"] == len(subset)


def test_subset_rows_are_unchanged_catalogue_rows_sorted_by_id():
    table = make_table()
    subset, _ = stratified_subset(table, "articleType", 40, 5, seed=2)
    assert subset["id"].is_monotonic_increasing
    assert subset["id"].is_unique
    original = table.set_index("id").loc[subset["id"]].reset_index()
    pd.testing.assert_frame_equal(subset[original.columns], original)
    assert list(subset.index) == list(range(len(subset)))


def test_subset_with_only_rare_labels_raises():
    with pytest.raises(ValueError, match="min_per_class"):
        stratified_subset(make_table({"A": 3, "B": 2}), "articleType", 5, 10, seed=0)


# ---------------------------------------------------------------- split_train_val_test


def split_of(table: pd.DataFrame, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1) -> pd.Series:
    return split_train_val_test(table, "articleType", test_fraction, val_fraction, seed)


def test_split_is_deterministic_for_a_seed():
    table = make_table()
    pd.testing.assert_series_equal(split_of(table, seed=5), split_of(table, seed=5))


def test_split_depends_on_the_seed():
    table = make_table()
    assert not split_of(table, seed=5).equals(split_of(table, seed=6))


def test_split_labels_every_row_with_one_known_split():
    table = make_table()
    split = split_of(table)
    assert split.index.equals(table.index)
    assert split.isin(SPLITS).all()
    assert set(split) == set(SPLITS)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("test_fraction", [0.01, 0.2, 0.5, 0.95])
def test_every_label_has_a_test_and_a_train_row(seed, test_fraction):
    table = make_table({"A": 50, "B": 2, "C": 3, "D": 7})
    split = split_of(table, seed=seed, test_fraction=test_fraction, val_fraction=0.5)
    for label, group in split.groupby(table["articleType"]):
        assert (group == "test").sum() >= 1, label
        assert (group == "train").sum() >= 1, label


def test_test_share_per_label_follows_test_fraction():
    table = make_table({"A": 50, "B": 30, "C": 10})
    split = split_of(table, test_fraction=0.2, val_fraction=0.1)
    n_test = (split == "test").groupby(table["articleType"]).sum()
    assert n_test.to_dict() == {"A": 10, "B": 6, "C": 2}
    # val is carved from the rest: round(40 * 0.1) = 4, round(24 * 0.1) = 2, round(8 * 0.1) = 1
    n_val = (split == "val").groupby(table["articleType"]).sum()
    assert n_val.to_dict() == {"A": 4, "B": 2, "C": 1}


def test_val_is_drawn_only_from_the_non_test_part():
    table = make_table()
    without_val = split_of(table, seed=9, val_fraction=0.0)
    with_val = split_of(table, seed=9, val_fraction=0.4)
    # the test rows do not depend on val_fraction: val comes out of the train rows only
    assert (with_val == "test").equals(without_val == "test")
    assert ((with_val == "val") <= (without_val == "train")).all()
    assert (without_val != "val").all()


def test_split_works_on_a_table_with_a_non_default_index():
    table = make_table().set_axis(np.arange(500, 500 + sum(LABEL_SIZES.values())))
    split = split_of(table)
    assert split.index.equals(table.index)
    assert split.isin(SPLITS).all()


def test_single_row_label_goes_to_train():
    # documented limit: a label with one row cannot have both a test and a train row
    table = make_table({"A": 10, "B": 1})
    split = split_of(table)
    assert split[table["articleType"] == "B"].tolist() == ["train"]
