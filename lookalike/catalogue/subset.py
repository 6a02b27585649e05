"""Seeded, label-stratified subset of a catalogue and its train / val / test split.

The test split is the query set: no test image is ever trained on or used to
pick a model. The val split, carved from train, drives early stopping.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def _largest_remainder(shares: pd.Series, total: int) -> pd.Series:
    """Integer counts proportional to ``shares`` that add up to ``total`` exactly."""
    exact = shares / shares.sum() * total
    counts = np.floor(exact).astype(int)
    remainder = (exact - counts).sort_index(kind="stable").sort_values(ascending=False, kind="stable")
    for label in remainder.index[: total - counts.sum()]:
        counts[label] += 1
    return counts


def stratified_subset(
    table: pd.DataFrame, label_column: str, size: int, min_per_class: int, seed: int
) -> tuple[pd.DataFrame, dict]:
    """Up to ``size`` rows, label proportions kept, rare labels (< min_per_class) left out."""
    counts = table[label_column].value_counts()
    rare = counts[counts < min_per_class]
    kept = table[~table[label_column].isin(rare.index)]
    if kept.empty:
        raise ValueError(f"no label has at least subset.min_per_class = {min_per_class} images")
    report = {
        "labels_left_out": {str(k): int(v) for k, v in rare.sort_index().items()},
        "rows_left_out_rare_label": int(len(table) - len(kept)),
    }
    report["labels_dropped_by_sampling"] = {}
    if size < len(kept):
        available = kept[label_column].value_counts()
        quota = _largest_remainder(available, size)
        while (quota < 2).any() and (quota >= 2).sum() > 1:
            # A label with one sampled image can be neither split into train and test nor a
            # useful query: drop the smallest such label and share its images out again.
            smallest = quota[quota < 2].sort_index().idxmin()
            report["labels_dropped_by_sampling"][str(smallest)] = int(available[smallest])
            available = available.drop(smallest)
            quota = _largest_remainder(available, size)
        rng = np.random.default_rng(seed)
        picked = []
        for label, group in kept[kept[label_column].isin(quota.index)].groupby(label_column, sort=True):
            picked.append(group.iloc[np.sort(rng.choice(len(group), size=int(quota[label]), replace=False))])
        kept = pd.concat(picked)
    report["rows"] = int(len(kept))
    return kept.sort_values("id").reset_index(drop=True), report


def split_train_val_test(
    table: pd.DataFrame, label_column: str, test_fraction: float, val_fraction: float, seed: int
) -> pd.Series:
    """A ``split`` column, stratified per label: every label has >= 1 test and >= 1 train row."""
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=table.index, dtype=object)
    for _, group in table.groupby(label_column, sort=True):
        order = group.index.to_numpy()[rng.permutation(len(group))]
        n = len(order)
        n_test = min(max(1, round(n * test_fraction)), n - 1) if n >= 2 else 0
        n_train = n - n_test
        n_val = min(round(n_train * val_fraction), max(0, n_train - 2))
        split[order[:n_test]] = "test"
        split[order[n_test : n_test + n_val]] = "val"
    return split
