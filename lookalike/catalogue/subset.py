"""Seeded, label-stratified subset of a catalogue and its train / val / test / gallery split.

Every item of the subset is embedded, indexed and can be found. The split only says what training and
evaluation may use: the test split is the query set (never trained on, never used to pick a model), the
val split (carved from train) drives early stopping, and ``gallery`` items (a label with fewer than
``subset.min_per_class`` items, or none) are searched but neither trained on nor queries. A split the
catalogue gives (the dataset's own lists) is honoured as it is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lookalike.catalogue.reading import SPLIT_GIVEN_COLUMN, missing

SPLITS = ("train", "val", "test")
GALLERY_SPLIT = "gallery"  # indexed and found; neither trained on nor a query


def _largest_remainder(shares: pd.Series, total: int) -> pd.Series:
    """Integer counts proportional to ``shares`` that add up to ``total`` exactly."""
    exact = shares / shares.sum() * total
    counts = np.floor(exact).astype(int)
    remainder = (exact - counts).sort_index(kind="stable").sort_values(ascending=False, kind="stable")
    for label in remainder.index[: total - counts.sum()]:
        counts[label] += 1
    return counts


def label_values(table: pd.DataFrame, label_column: str | None) -> pd.Series:
    """Each row's label, "" where it has none (no label column, empty, NA)."""
    if label_column is None:
        return pd.Series("", index=table.index)
    values = table[label_column].astype(str).str.strip()
    return values.where(~missing(values), "")


def stratified_subset(table: pd.DataFrame, label_column: str | None, size: int, seed: int) -> pd.DataFrame:
    """Up to ``size`` rows, label proportions kept (rows without a label are a group of their own)."""
    if size >= len(table):
        return table.sort_values("id").reset_index(drop=True)
    labels = label_values(table, label_column)
    quota = _largest_remainder(labels.value_counts(), size)
    rng = np.random.default_rng(seed)
    picked = []
    for label, group in table.groupby(labels, sort=True):
        picked.append(group.iloc[np.sort(rng.choice(len(group), size=int(quota[label]), replace=False))])
    return pd.concat(picked).sort_values("id").reset_index(drop=True)


def split_train_val_test(table: pd.DataFrame, label_column: str | None, test_fraction: float, val_fraction: float,
                         seed: int, min_per_class: int = 2) -> tuple[pd.Series, dict]:
    """A ``split`` column and a report of what training and evaluation leave out, and why.

    Labelled rows: stratified per label (every label with >= ``min_per_class`` rows has >= 1 test and >= 1
    train row); rarer or missing labels go to the gallery. Without any label: a seeded random split (the
    instance protocol's queries are altered copies of the test photos). A given split wins.
    """
    rng = np.random.default_rng(seed)
    labels = label_values(table, label_column)
    split = pd.Series(GALLERY_SPLIT, index=table.index, dtype=object)
    counts = labels[labels != ""].value_counts()
    rare = counts[counts < max(2, min_per_class)]
    report = {"rows_without_label": int((labels == "").sum()) if label_column else 0,
              "rows_rare_label": int(labels.isin(rare.index).sum()),
              "labels_rare": {str(k): int(v) for k, v in rare.sort_index().items()}}
    if label_column is None:
        groups = [table.index.to_numpy()]
    else:
        kept = labels[(labels != "") & ~labels.isin(rare.index)]
        groups = [group.index.to_numpy() for _, group in kept.groupby(kept, sort=True)]
    for rows in groups:
        order = rows[rng.permutation(len(rows))]
        n = len(order)
        n_test = min(max(1, round(n * test_fraction)), n - 1) if n >= 2 else 0
        n_train = n - n_test
        n_val = min(round(n_train * val_fraction), max(0, n_train - 2))
        split[order] = "train"
        split[order[:n_test]] = "test"
        split[order[n_test: n_test + n_val]] = "val"
    if SPLIT_GIVEN_COLUMN in table and (table[SPLIT_GIVEN_COLUMN] != "").any():
        given = table[SPLIT_GIVEN_COLUMN]
        split = given.where(given != "", GALLERY_SPLIT).astype(object)
        report["split"] = "given by the catalogue"
        if label_column is not None:  # a given split still trains and queries only labelled rows
            split[labels == ""] = GALLERY_SPLIT
    report["gallery_rows"] = int((split == GALLERY_SPLIT).sum())
    return split, report
