"""Training the text tower (TensorFlow) on a small made-up catalogue whose photo vectors encode colour and type."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookalike.text.training import field_codes, make_views, match_matrix, train_text_tower

COLOURS = ("Red", "Blue", "Black", "White", "Green")
TYPES = ("Dresses", "Shoes", "Watches")
CONFIG = {"pretrained": "none", "word_dim": 16, "min_count": 1, "hidden_dim": 32, "views_per_item": 6,
          "negatives": "all", "temperature": 0.1, "learning_rate": 0.03, "weight_decay": 0.0, "dropout": 0.0,
          "batch_size": 16, "epochs": 30, "patience": 30, "val_min_relevant": 2}


def made_up_catalogue(per_pair: int = 6, dim: int = 16, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Photo vector = colour direction + type direction + noise; every pair in train, val and test."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    rows, vectors = [], []
    for c, colour in enumerate(COLOURS):
        for t, kind in enumerate(TYPES):
            for i in range(per_pair):
                rows.append({"id": len(rows), "productDisplayName": f"Brand{i} Women {colour} {kind}",
                             "articleType": kind, "baseColour": colour, "gender": "Women", "usage": "Casual",
                             "season": "Summer", "subCategory": kind,
                             "split": ("train", "train", "train", "train", "val", "test")[i % 6]})
                vectors.append(basis[c] + basis[len(COLOURS) + t] + 0.1 * rng.normal(size=dim))
    vectors = np.array(vectors, np.float32)
    return pd.DataFrame(rows), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_views_cover_titles_and_attribute_subsets_and_targets_accept_every_matching_item() -> None:
    items, _ = made_up_catalogue()
    views = make_views(items, np.array([0, 1]), per_item=6, seed=0)
    assert views.texts[0] == "Brand0 Women Red Dresses Dresses Red Women Casual Summer"  # everything
    assert views.texts[1] == "Brand0 Women Red Dresses"  # the title
    assert len(views.texts) == 12 and set(views.rows.tolist()) == {0, 1}
    codes = field_codes(items)
    red_dress = next(i for i, t in enumerate(views.texts) if views.asserts[i, 0] == 0 and views.rows[i] == 0
                     and views.asserts[i, 2])  # a view asserting a colour but not the title
    targets = match_matrix(codes[[red_dress]], views.asserts[[red_dress]], codes, views.rows[[red_dress]],
                           np.arange(len(items)))[0]
    expected = np.ones(len(items), dtype=bool)
    for f in np.flatnonzero(views.asserts[red_dress]):
        expected &= codes[:, f] == codes[0, f]
    np.testing.assert_array_equal(targets.astype(bool), expected)
    assert targets[0] == 1 and targets.sum() > 1  # its own item and every other item matching what it says


@pytest.mark.parametrize("negatives", ["all", "batch"])
def test_training_learns_colour_and_type_words_and_is_deterministic(negatives: str) -> None:
    items, vectors = made_up_catalogue()
    config = {**CONFIG, "negatives": negatives}
    tower, report = train_text_tower(items, vectors, config, seed=0, log=lambda _: None)
    if negatives == "all":  # the same seed trains the same tower
        again, _ = train_text_tower(items, vectors, config, seed=0, log=lambda _: None)
        np.testing.assert_allclose(tower.encode(["red shoes"]), again.encode(["red shoes"]), atol=1e-5)
    assert report["best_epoch"] >= 1 and report["vocabulary"] > 0
    assert report["history"][report["best_epoch"] - 1]["score"] == pytest.approx(report["best_val_score"])
    test = np.flatnonzero(items["split"] == "test")
    for colour in COLOURS:
        for kind in TYPES:
            query = tower.encode([f"{colour.lower()} {kind.lower()}"])[0]
            best = test[np.argmax(vectors[test] @ query)]
            assert (items["baseColour"][best], items["articleType"][best]) == (colour, kind)
    vector = tower.encode(["green"])[0]
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    top = np.argsort(-vectors[test] @ vector)[:len(TYPES)]
    assert set(items["baseColour"].to_numpy()[test[top]]) == {"Green"}
