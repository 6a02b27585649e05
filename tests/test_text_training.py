"""Training the text tower (TensorFlow) on a small made-up catalogue whose photo vectors encode colour and type."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookalike.text.evaluation import TextColumns
from lookalike.text.training import field_codes, make_views, match_matrix, train_text_tower, validation_scores

COLOURS = ("Red", "Blue", "Black", "White", "Green")
TYPES = ("Dresses", "Shoes", "Watches")
CONFIG = {"pretrained": "none", "word_dim": 16, "min_count": 1, "hidden_dim": 32, "views_per_item": 6,
          "negatives": "all", "temperature": 0.1, "learning_rate": 0.03, "weight_decay": 0.0, "dropout": 0.0,
          "batch_size": 16, "epochs": 30, "patience": 30, "val_min_relevant": 2}
FIELDS = ("productDisplayName", "articleType", "baseColour", "gender", "usage", "season")
COLUMNS = TextColumns(words=FIELDS, title="productDisplayName", title_queries=True,
                      attributes={"colour": ("baseColour",), "subcategory": ("subCategory",),
                                  "articletype": ("articleType",)})


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
    views = make_views(items, np.array([0, 1]), per_item=6, seed=0, fields=FIELDS, title="productDisplayName")
    assert views.texts[0] == "Brand0 Women Red Dresses Dresses Red Women Casual Summer"  # everything
    assert views.texts[1] == "Brand0 Women Red Dresses"  # the title
    assert len(views.texts) == 12 and set(views.rows.tolist()) == {0, 1}
    codes = field_codes(items, FIELDS)
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
    tower, report = train_text_tower(items, vectors, config, COLUMNS, seed=0, log=lambda _: None)
    if negatives == "all":  # the same seed trains the same tower
        again, _ = train_text_tower(items, vectors, config, COLUMNS, seed=0, log=lambda _: None)
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


def test_learned_image_projection_searches_the_locked_vectors_through_the_kept_projection() -> None:
    """The LiT-style option: the photo side is the unit rows of vectors @ W, W trained with the tower."""
    items, vectors = made_up_catalogue()
    tower, report = train_text_tower(items, vectors, CONFIG, COLUMNS, seed=0, log=lambda _: None, image_projection=8)
    projection = report["image_projection"]
    assert projection.shape == (vectors.shape[1], 8) and tower.dimension == 8
    gallery = vectors @ projection
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    test = np.flatnonzero(items["split"] == "test")
    for colour, kind in (("Red", "Shoes"), ("Blue", "Watches"), ("Green", "Dresses")):
        best = test[np.argmax(gallery[test] @ tower.encode([f"{colour.lower()} {kind.lower()}"])[0])]
        assert (items["baseColour"][best], items["articleType"][best]) == (colour, kind)
    _, fixed = train_text_tower(items, vectors, {**CONFIG, "epochs": 1}, COLUMNS, seed=0, log=lambda _: None)
    assert "image_projection" not in fixed  # the stage's default: fixed targets


class NoFashionColumns(pd.DataFrame):
    """A table that fails the test if anything reads a fashion column by name."""

    _metadata: list[str] = []

    @property
    def _constructor(self):
        return NoFashionColumns

    def __getitem__(self, key):
        names = key if isinstance(key, list) else [key]
        assert not {"productDisplayName", "articleType", "baseColour", "subCategory"} & set(map(str, names)), key
        return super().__getitem__(key)


def grocery_catalogue() -> tuple[pd.DataFrame, np.ndarray]:
    """The made-up catalogue with grocery-like columns: class (the label), coarse_class, description (the title)."""
    items, vectors = made_up_catalogue()
    renamed = items.rename(columns={"articleType": "coarse_class", "productDisplayName": "description"})
    renamed["class"] = renamed["baseColour"] + " " + renamed["coarse_class"]
    return renamed.drop(columns=["baseColour", "gender", "usage", "season", "subCategory"]), vectors


GROCERY = TextColumns(words=("description", "class", "coarse_class"), title="description", title_queries=True,
                      attributes={"coarse_class": ("coarse_class",), "class": ("class",)})


def test_views_and_val_scores_read_the_columns_the_roles_name() -> None:
    items, vectors = grocery_catalogue()
    items = NoFashionColumns(items)
    views = make_views(items, np.array([0]), per_item=6, seed=0, fields=GROCERY.words, title=GROCERY.title)
    assert views.texts[0] == "Brand0 Women Red Dresses Red Dresses Dresses" and views.asserts.shape[1] == 3
    assert views.texts[1] == "Brand0 Women Red Dresses" and views.asserts[1].tolist() == [True, False, False]
    untitled = make_views(items, np.array([0]), per_item=4, seed=0, fields=("class", "coarse_class"), title=None)
    assert untitled.texts[0] == "Red Dresses Dresses" and "Brand0" not in " ".join(untitled.texts)
    codes = field_codes(items, GROCERY.words)
    assert codes.shape == (len(items), 3) and codes[:, 2].max() == len(TYPES)
    from lookalike.text.tower import TextTower

    dim = vectors.shape[1]
    tower = TextTower({"vocab": np.array(["red"]), "word_table": np.zeros((2, 4), np.float32),
                       "word_logits": np.zeros(2, np.float32), "w1": np.zeros((4, 2), np.float32),
                       "b1": np.zeros(2, np.float32), "w2": np.zeros((2, dim), np.float32),
                       "b2": np.zeros(dim, np.float32), "skip": np.zeros((4, dim), np.float32)})
    split = items["split"].to_numpy()
    scores = validation_scores(tower, items, vectors, np.flatnonzero(split == "val"), np.flatnonzero(split != "test"),
                               2, GROCERY)
    assert set(scores) == {"title_mrr", "attribute_precision_at_10", "score"} and 0 <= scores["score"] <= 1


def test_training_on_grocery_columns_learns_their_words() -> None:
    items, vectors = grocery_catalogue()
    tower, report = train_text_tower(NoFashionColumns(items), vectors, {**CONFIG, "epochs": 10, "patience": 10},
                                     GROCERY, seed=0, log=lambda _: None)
    assert report["vocabulary"] > 0 and report["best_epoch"] >= 1
    test = np.flatnonzero(items["split"] == "test")
    best = test[np.argmax(vectors[test] @ tower.encode(["green watches"])[0])]
    assert items["class"][best] == "Green Watches"


def test_a_catalogue_without_word_columns_is_refused_before_training() -> None:
    items, vectors = made_up_catalogue()
    with pytest.raises(ValueError, match="no word columns"):
        train_text_tower(items, vectors, CONFIG, TextColumns(words=()), seed=0)
