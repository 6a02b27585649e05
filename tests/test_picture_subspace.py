"""The picture sub-space: the head's input on fixed principal axes beside the trained sub-spaces, and the text tower
placed in it (words search the space where one product is told from another)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml
from test_text import FASHION_ROLES, catalogue, hand_searcher, hand_tower

from lookalike.model.network import build_head, fit_projections
from lookalike.model.training import MISSING, attribute_labels, train_head
from lookalike.params import FEATURES_COLUMN, PROJECT_ROOT, ParamsError, text_target, validate
from lookalike.search.similarity import Similarity
from lookalike.text.search import Query, TextSearch, compose
from lookalike.text.tower import TextTower

SUBSPACES = {"type": {"column": "articleType", "dim": 6, "weight": 1.0},
             "picture": {"column": FEATURES_COLUMN, "dim": 5, "weight": 0.25}}
COLOUR = 10  # the colour descriptor's length in these made-up features


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_projection(features: np.ndarray, fit_rows: np.ndarray, dim: int, colour: int = COLOUR) -> np.ndarray:
    """The study's recipe in plain numpy: unit backbone part and unit colour part (the last ``colour`` numbers),
    joined, centred on the fit rows' mean, on their top principal axes (SVD), unit rows."""
    split = features.shape[1] - colour
    joined = (np.concatenate([unit(features[:, :split]), unit(features[:, split:])], axis=1) if colour
              else unit(features)).astype(np.float64)
    centred = joined - joined[fit_rows].mean(axis=0)
    _, _, axes = np.linalg.svd(centred[fit_rows], full_matrices=False)
    return unit(centred @ axes[:dim].T)


def made_up_features(n: int = 240, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(size=(n, 40)) * rng.uniform(0.2, 3.0, 40) + rng.normal(size=40)).astype(np.float32)


def assert_same_axes(found: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to each axis's sign (principal axes have no sign of their own)."""
    signs = np.sign((found * expected).sum(axis=0))
    np.testing.assert_allclose(found, expected * signs, atol=2e-5)


def test_the_picture_part_is_the_features_on_their_principal_axes_and_survives_saving(tmp_path) -> None:
    import keras

    features = made_up_features()
    fit_rows = np.arange(160)
    head = build_head(40, hidden_dim=16, embedding_dim=11, subspaces=SUBSPACES, colour_features=COLOUR)
    assert len(head.outputs) == 2  # the stored vector, then the trained sub-space alone: the loss never sees it
    assert fit_projections(head, features[fit_rows]) == 1
    stored = np.asarray(head(features)[0])
    np.testing.assert_allclose(np.linalg.norm(stored[:, 6:], axis=1), np.sqrt(0.25 / 1.25), atol=1e-5)
    assert_same_axes(unit(stored[:, 6:]), reference_projection(features, fit_rows, 5))
    head.save(tmp_path / "head.keras")
    again = keras.models.load_model(tmp_path / "head.keras", compile=False)
    np.testing.assert_allclose(np.asarray(again(features)[0]), stored, atol=1e-6)


def test_training_fits_the_picture_part_on_the_train_rows_and_never_moves_it() -> None:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(6), 40).astype(str)
    features = made_up_features(len(labels))
    features[:, :6] += 3.0 * np.eye(6, dtype=np.float32)[labels.astype(int)]  # the labels can be learned
    rows = rng.permutation(len(labels))
    train_rows, val_rows = np.sort(rows[:180]), np.sort(rows[180:])
    model = {**params["model"], "hidden_dim": 16, "embedding_dim": 11, "colour_descriptor": False,
             "subspaces": SUBSPACES}
    train = {**params["train"], "steps": 60, "eval_every": 20, "patience": 10, "classes_per_batch": 6,
                 "images_per_class": 4, "selection": "map_at_r"}
    result = train_head(features[None], labels, train_rows, val_rows, model, train,
                        attributes={"type": labels, "picture": np.full(len(labels), MISSING)}, log=lambda _: None)
    stored = np.asarray(result.head(features)[0])
    assert_same_axes(unit(stored[:, 6:]), reference_projection(features, train_rows, 5, colour=0))
    assert result.best_validation["map_at_r"] > 0  # the type sub-space trained beside it


def test_a_large_catalogue_fits_the_axes_on_a_seeded_sample_of_its_train_rows(monkeypatch) -> None:
    import lookalike.model.training as training

    fitted: list[np.ndarray] = []
    monkeypatch.setattr(training, "PROJECTION_FIT_ROWS", 50)
    monkeypatch.setattr(training, "fit_projections", lambda head, features: fitted.append(np.asarray(features)))
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    labels = np.repeat(np.arange(6), 40).astype(str)
    features = made_up_features(len(labels))
    model = {**params["model"], "hidden_dim": 16, "embedding_dim": 11, "colour_descriptor": False,
             "subspaces": SUBSPACES}
    train = {**params["train"], "steps": 2, "eval_every": 1, "patience": 1, "classes_per_batch": 6,
             "images_per_class": 4, "selection": "map_at_r"}
    rows = np.arange(len(labels))
    for _ in range(2):
        train_head(features[None], labels, rows[rows % 6 != 0], rows[rows % 6 == 0], model, train,
                   attributes={"type": labels, "picture": np.full(len(labels), MISSING)}, log=lambda _: None)
    assert fitted[0].shape == (50, 40) and np.array_equal(fitted[0], fitted[1])  # a sample, the same each time
    assert all(any(np.array_equal(row, f) for f in features[rows % 6 != 0]) for row in fitted[0])  # of train rows


def test_the_features_column_names_no_column() -> None:
    assert list(attribute_labels(pd.DataFrame({"articleType": ["Shirts"] * 3}), FEATURES_COLUMN)) == [MISSING] * 3


@pytest.fixture
def params(tmp_path) -> dict:
    loaded = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    loaded["data"]["catalogue_dir"] = str(tmp_path)
    return copy.deepcopy(loaded)


def test_the_default_build_has_a_picture_sub_space_that_words_search(params) -> None:
    validate(params)
    assert params["model"]["subspaces"]["picture"]["column"] == FEATURES_COLUMN
    assert text_target(params) == "picture" and params["similarity"]["picture"] == {"picture": 1.0}


@pytest.mark.parametrize("change, message", [
    (lambda p: p["model"]["subspaces"]["usage"].update(column=FEATURES_COLUMN), "at most one"),
    (lambda p: p["text"].update(target="shine"), "text.target"),
    (lambda p: (p["model"].update(embedding="concat"), p["text"].update(target="picture")), "model.embedding: head"),
])
def test_a_picture_sub_space_or_words_target_the_build_cannot_have_is_refused(params, change, message) -> None:
    change(params)
    with pytest.raises(ParamsError, match=message):
        validate(params)


def test_words_search_the_picture_sub_space_when_there_is_one_else_the_whole_stored_vector(params) -> None:
    del params["text"]["target"]  # a params file from before the option: auto
    validate(params)
    assert text_target(params) == "picture"
    # a catalogue's own sub-spaces, without the picture one (the grocery runs, a folder of photos): the whole vector
    params["model"]["subspaces"] = {"photo": {"column": "@instance", "dim": 256, "weight": 1.0}}
    params["model"]["embedding_dim"], params["similarity"] = 256, {}
    validate(params)
    assert text_target(params) == "stored"
    params["text"]["target"] = "picture"  # named, and not there: refused
    with pytest.raises(ParamsError, match="text.target"):
        validate(params)


def test_span_is_where_a_sub_space_lies_and_how_long_it_is_there() -> None:
    layout = Similarity.from_params({"subspaces": {"type": {"dim": 3, "weight": 1.0},
                                                   "picture": {"dim": 2, "weight": 0.25}}})
    assert layout.span("type") == (0, 3, pytest.approx(np.sqrt(1 / 1.25)))
    assert layout.span("picture") == (3, 5, pytest.approx(np.sqrt(0.25 / 1.25)))


# --- the tower in one sub-space ---

SHARE = 0.04  # the picture sub-space's share of the stored mix, as in the fashion build (0.1 of 2.9)


def stored_with_picture(vectors: np.ndarray) -> np.ndarray:
    """Stored vectors whose picture sub-space (last) holds ``vectors`` and whose trained sub-space (first) holds the
    type alone (the catalogue's type directions)."""
    other = unit(vectors[:, 4:])
    return np.concatenate([np.sqrt(1 - SHARE) * other, np.sqrt(SHARE) * vectors], axis=1).astype(np.float32)


def test_a_placed_tower_scores_stored_vectors_by_their_cosine_in_its_sub_space(tmp_path) -> None:
    items, vectors = catalogue()
    stored = stored_with_picture(vectors)
    tower = hand_tower().placed(4, stored.shape[1], 1 / np.sqrt(SHARE))
    queries = tower.encode(["red dress", "blue shoes"])
    assert queries.shape == (2, stored.shape[1]) and not queries[:, :4].any()
    np.testing.assert_allclose(queries @ stored.T, hand_tower().encode(["red dress", "blue shoes"]) @ vectors.T,
                               atol=1e-5)
    tower.save(tmp_path / "tower.npz")
    again = TextTower.load(tmp_path / "tower.npz")
    assert (again.offset, again.dimension, again.scale) == (4, stored.shape[1], pytest.approx(1 / np.sqrt(SHARE)))
    np.testing.assert_allclose(again.encode(["red dress"]), queries[:1], atol=1e-6)


def test_words_search_a_sub_space_as_they_searched_the_whole_vector(tmp_path) -> None:
    """The same catalogue with its photo vectors in the picture sub-space beside noise: words alone find the same
    items with the same scores (the hybrid adds cosines to word shares, so their scale must not shrink)."""
    items, vectors = catalogue()
    fusion = {"fusion": "coverage", "lexical_weight": 0.5, "rrf_constant": 60, "depth": 100}
    whole = TextSearch(hand_searcher(items, vectors, FASHION_ROLES), hand_tower(), dict(fusion))
    stored = stored_with_picture(vectors)
    placed = TextSearch(hand_searcher(items, stored, FASHION_ROLES),
                        hand_tower().placed(4, stored.shape[1], 1 / np.sqrt(SHARE)), dict(fusion))
    for text in ("red shoes", "acme black dress", "white"):
        expected = whole.search(Query(text=text), k=6).matches
        found = placed.search(Query(text=text), k=6).matches
        assert [m.id for m in found] == [m.id for m in expected]
        np.testing.assert_allclose([m.score for m in found], [m.score for m in expected], atol=1e-5)
    # a photo plus words: the words still steer the colour, from the sub-space alone
    blue_dress = 102
    matches = placed.search(Query(item_ids=[blue_dress], text="red", text_weight=1.0), k=3).matches
    assert matches[0].id == 100


def test_compose_keeps_each_part_s_length_and_gives_the_asked_length() -> None:
    a, b = np.eye(3, dtype=np.float32)[:2]
    np.testing.assert_allclose(compose([(a, 1.0), (2 * b, 1.0)]), unit(a + 2 * b), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(compose([(a, 1.0)], length=5.0)), 5.0, atol=1e-5)
