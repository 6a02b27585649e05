"""lookalike.catalogue.subset: the seeded stratified subset and the train / val / test / gallery split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookalike.catalogue.reading import SPLIT_GIVEN_COLUMN
from lookalike.catalogue.subset import GALLERY_SPLIT, SPLITS, split_train_val_test, stratified_subset

LABEL_SIZES = {"A": 50, "B": 30, "C": 15, "D": 4, "E": 9, "F": 12}


def make_table(sizes: dict[str, int] = LABEL_SIZES, seed: int = 0) -> pd.DataFrame:
    labels = [label for label, n in sizes.items() for _ in range(n)]
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1000, 1000 + len(labels)))  # ids not in label order
    return pd.DataFrame({"id": ids, "articleType": labels, "name": [f"item {i}" for i in ids]})


# ---------------------------------------------------------------- stratified_subset


def test_subset_is_deterministic_for_a_seed():
    table = make_table()
    first = stratified_subset(table, "articleType", 40, seed=3)
    second = stratified_subset(table, "articleType", 40, seed=3)
    pd.testing.assert_frame_equal(first, second)


def test_subset_depends_on_the_seed():
    table = make_table()
    first = stratified_subset(table, "articleType", 40, seed=3)
    second = stratified_subset(table, "articleType", 40, seed=4)
    assert set(first["id"]) != set(second["id"])


@pytest.mark.parametrize("size", [2, 17, 40, 81, 119])
def test_subset_has_exactly_the_requested_size(size):
    subset = stratified_subset(make_table(), "articleType", size, seed=1)
    assert len(subset) == size


@pytest.mark.parametrize("size", [10, 17, 40, 81])
def test_subset_label_counts_are_within_one_of_proportional_rare_labels_included(size):
    # no label is dropped for being rare any more: D (4 rows) gets its share like the others
    table = make_table()
    counts = stratified_subset(table, "articleType", size, seed=1)["articleType"].value_counts()
    for label, available in table["articleType"].value_counts().items():
        exact = available / len(table) * size
        assert abs(counts.get(label, 0) - exact) < 1, (label, counts.get(label, 0), exact)


def test_a_rare_label_keeps_its_share_of_the_subset():
    subset = stratified_subset(make_table({"A": 96, "D": 4}), "articleType", 50, seed=0)
    assert subset["articleType"].value_counts().to_dict() == {"A": 48, "D": 2}


def test_subset_larger_than_the_catalogue_keeps_every_row_even_rare_ones():
    table = make_table()
    subset = stratified_subset(table, "articleType", 10_000, seed=1)
    assert len(subset) == len(table)
    assert subset["articleType"].value_counts().to_dict() == LABEL_SIZES


def test_subset_of_only_rare_labels_is_not_refused():
    # before descriptions this raised (every label under min_per_class); the split sends them to the gallery now
    subset = stratified_subset(make_table({"A": 3, "B": 2}), "articleType", 4, seed=0)
    assert len(subset) == 4
    assert set(subset["articleType"]) == {"A", "B"}


def test_rows_without_a_label_are_sampled_as_a_group_of_their_own():
    table = make_table({"A": 40, "": 20, "NA": 20, "B": 20})  # "" and "NA" are both no label: 40 rows
    subset = stratified_subset(table, "articleType", 50, seed=0)
    assert len(subset) == 50
    unlabelled = subset["articleType"].isin(["", "NA"]).sum()
    assert unlabelled == 20  # 40 of 100 rows
    assert (subset["articleType"] == "A").sum() == 20
    assert (subset["articleType"] == "B").sum() == 10


def test_subset_without_a_label_column_is_a_seeded_sample():
    table = make_table()
    first = stratified_subset(table, None, 30, seed=5)
    assert len(first) == 30
    pd.testing.assert_frame_equal(first, stratified_subset(table, None, 30, seed=5))
    assert set(first["id"]) != set(stratified_subset(table, None, 30, seed=6)["id"])


def test_subset_rows_are_unchanged_catalogue_rows_sorted_by_id():
    table = make_table()
    subset = stratified_subset(table, "articleType", 40, seed=2)
    assert subset["id"].is_monotonic_increasing
    assert subset["id"].is_unique
    original = table.set_index("id").loc[subset["id"]].reset_index()
    pd.testing.assert_frame_equal(subset[original.columns], original)
    assert list(subset.index) == list(range(len(subset)))


# ---------------------------------------------------------------- split_train_val_test


def split_of(table: pd.DataFrame, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1,
             min_per_class: int = 2) -> pd.Series:
    split, _ = split_train_val_test(table, "articleType", test_fraction, val_fraction, seed, min_per_class)
    return split


def test_split_is_deterministic_for_a_seed():
    table = make_table()
    first, first_report = split_train_val_test(table, "articleType", 0.2, 0.1, 5, 5)
    second, second_report = split_train_val_test(table, "articleType", 0.2, 0.1, 5, 5)
    pd.testing.assert_series_equal(first, second)
    assert first_report == second_report


def test_split_depends_on_the_seed():
    table = make_table()
    assert not split_of(table, seed=5).equals(split_of(table, seed=6))


def test_split_labels_every_row_with_one_known_split():
    table = make_table()
    split = split_of(table)
    assert split.index.equals(table.index)
    assert split.isin(SPLITS).all()  # min_per_class 2: no label here is rare
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
    pd.testing.assert_series_equal(split.reset_index(drop=True), split_of(make_table()))


def test_rare_labels_go_to_the_gallery_and_are_reported():
    # before descriptions they were left out of the subset; now they are indexed and found, never trained on
    table = make_table()
    split, report = split_train_val_test(table, "articleType", 0.2, 0.1, 0, min_per_class=10)
    rare = table["articleType"].isin(["D", "E"])  # 4 and 9 rows, fewer than 10
    assert (split[rare] == GALLERY_SPLIT).all()
    assert split[~rare].isin(SPLITS).all()
    assert report["labels_rare"] == {"D": 4, "E": 9}
    assert report["rows_rare_label"] == 13
    assert report["rows_without_label"] == 0
    assert report["gallery_rows"] == 13


def test_a_label_of_one_row_goes_to_the_gallery():
    # before descriptions it went to train (it cannot have both a test and a train row); now it is only indexed
    table = make_table({"A": 10, "B": 1})
    split = split_of(table)
    assert split[table["articleType"] == "B"].tolist() == [GALLERY_SPLIT]
    assert split[table["articleType"] == "A"].isin(SPLITS).all()


def test_rows_without_a_label_go_to_the_gallery_and_are_counted():
    table = make_table({"A": 20, "": 3, "NA": 2, "B": 10})
    split, report = split_train_val_test(table, "articleType", 0.2, 0.1, 0, min_per_class=2)
    unlabelled = table["articleType"].isin(["", "NA"])
    assert (split[unlabelled] == GALLERY_SPLIT).all()
    assert split[~unlabelled].isin(SPLITS).all()
    assert report["rows_without_label"] == 5
    assert report["rows_rare_label"] == 0
    assert report["gallery_rows"] == 5


def test_without_a_label_column_the_split_is_seeded_and_random():
    table = make_table()
    split, report = split_train_val_test(table, None, 0.2, 0.1, 3, min_per_class=10)
    assert split.isin(SPLITS).all()  # nothing is rare or unlabelled without labels
    assert (split == "test").sum() == round(len(table) * 0.2)
    assert (split == "val").sum() == round((len(table) - round(len(table) * 0.2)) * 0.1)
    assert report["rows_without_label"] == 0 and report["gallery_rows"] == 0
    again, _ = split_train_val_test(table, None, 0.2, 0.1, 3, min_per_class=10)
    pd.testing.assert_series_equal(split, again)
    other, _ = split_train_val_test(table, None, 0.2, 0.1, 4, min_per_class=10)
    assert not split.equals(other)


def test_a_given_split_wins_and_rows_it_leaves_out_go_to_the_gallery():
    table = make_table({"A": 6, "B": 6})
    given = ["train", "train", "val", "test", "test", ""] * 2
    table[SPLIT_GIVEN_COLUMN] = given
    for seed in (0, 1):
        split, report = split_train_val_test(table, "articleType", 0.5, 0.5, seed, min_per_class=2)
        assert split.tolist() == [g or GALLERY_SPLIT for g in given]
        assert report["split"] == "given by the catalogue"
        assert report["gallery_rows"] == 2


def test_a_given_split_still_sends_rows_without_a_label_to_the_gallery():
    table = make_table({"A": 4, "": 2})
    table[SPLIT_GIVEN_COLUMN] = ["train", "test", "train", "test", "train", "test"]
    split, report = split_train_val_test(table, "articleType", 0.2, 0.1, 0)
    assert split.tolist() == ["train", "test", "train", "test", GALLERY_SPLIT, GALLERY_SPLIT]
    assert report["rows_without_label"] == 2


def test_an_empty_given_split_column_is_no_given_split():
    table = make_table({"A": 10, "B": 10})
    table[SPLIT_GIVEN_COLUMN] = ""
    split, report = split_train_val_test(table, "articleType", 0.2, 0.1, 0)
    assert "split" not in report
    pd.testing.assert_series_equal(split, split_of(table.drop(columns=[SPLIT_GIVEN_COLUMN])))


def test_a_given_split_is_kept_for_a_rare_label_too():
    # the catalogue's own split is honoured as it is: a label under min_per_class keeps its given split
    table = make_table({"A": 4, "B": 2})
    table[SPLIT_GIVEN_COLUMN] = ["train", "train", "test", "val", "train", "test"]
    split, report = split_train_val_test(table, "articleType", 0.2, 0.1, 0, min_per_class=3)
    assert split.tolist() == table[SPLIT_GIVEN_COLUMN].tolist()
    assert report["labels_rare"] == {"B": 2}
    assert report["gallery_rows"] == 0
