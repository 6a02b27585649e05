"""study/learning_curve.py and study/alterations.py: the parts that decide what is measured."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from study.alterations import ALTERATIONS
from study.learning_curve import train_subsets


def _subset() -> pd.DataFrame:
    labels = ["a"] * 40 + ["b"] * 20 + ["c"] * 10 + ["d"] * 3
    split = (["train"] * 30 + ["test"] * 10) + (["train"] * 15 + ["test"] * 5) + (["train"] * 8 + ["val"] * 2) \
        + ["train", "train", "test"]
    return pd.DataFrame({"id": range(len(labels)), "articleType": labels, "split": split})


def test_train_subsets_are_stratified_seeded_and_the_full_size_is_the_train_split() -> None:
    subset = _subset()
    train_rows = np.flatnonzero(subset["split"].to_numpy() == "train")
    parts = train_subsets(subset, "articleType", [20, 10**6], seed=0)
    assert parts[len(train_rows)].tolist() == train_rows.tolist()  # all of it, in the train stage's order
    small = parts[20]
    assert len(small) == 20 and set(small) <= set(train_rows)
    counts = subset.loc[small, "articleType"].value_counts()
    assert counts["a"] > counts["b"] > counts["c"]  # proportions kept
    assert train_subsets(subset, "articleType", [20], seed=0)[20].tolist() == small.tolist()
    assert train_subsets(subset, "articleType", [20], seed=1)[20].tolist() != small.tolist()


def test_every_alteration_is_seeded_and_changes_the_photo() -> None:
    rng = np.random.default_rng(0)
    pixels = np.full((80, 60, 3), 255, np.uint8)
    pixels[15:65, 10:50] = rng.integers(0, 200, (50, 40, 3))
    photo = Image.fromarray(pixels)
    for name, alter in ALTERATIONS.items():
        first = np.asarray(alter(photo, np.random.default_rng(7)))
        again = np.asarray(alter(photo, np.random.default_rng(7)))
        assert np.array_equal(first, again), name
        assert first.shape != pixels.shape or not np.array_equal(first, pixels), name
