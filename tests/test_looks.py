"""Look-aware similarity: the colour descriptor, the sub-space head, query-side modes, the look metrics,
and on the pinned build: a mode changes what comes back, measured."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from lookalike.evaluation.metrics import joint_labels, look_metrics
from lookalike.model.alterations import ALTERATIONS
from lookalike.model.colour import COLOUR_BINS, COLOUR_FEATURES, backbone_part, colour_histogram, palette
from lookalike.model.preprocessing import normalise
from lookalike.model.training import MISSING, attribute_labels, label_codes
from lookalike.model.views import augment
from lookalike.params import PROJECT_ROOT, ParamsError, validate
from lookalike.search.similarity import Similarity, SimilarityError


def shirt(colour: tuple[int, int, int], trousers: tuple[int, int, int] = (20, 20, 90)) -> np.ndarray:
    """uint8 (224, 224, 3): a coloured block (the shirt) above another (the trousers) on white."""
    image = np.full((224, 224, 3), 255, np.uint8)
    image[30:130, 60:164] = colour
    image[130:200, 70:154] = trousers
    return image


# --- the colour descriptor ---

@pytest.mark.parametrize("normalisation", ["lite", "caffe"])
def test_the_model_layer_computes_the_numpy_reference(normalisation: str) -> None:
    from lookalike.model.network import ColourDescriptor

    image = shirt((200, 30, 30))
    layer = np.asarray(ColourDescriptor(normalisation)(normalise(image, normalisation)[None]))[0]
    reference = colour_histogram(image.reshape(28, 8, 28, 8, 3).mean(axis=(1, 3)))
    assert layer.shape == (COLOUR_FEATURES,)
    np.testing.assert_allclose(layer, reference, atol=1e-5)


def test_the_descriptor_reads_the_product_not_the_white_background() -> None:
    red = colour_histogram(shirt((220, 20, 20)))
    global_bins = red[:COLOUR_BINS] ** 2  # the whole photo's histogram, back from its square root
    assert global_bins.sum() == pytest.approx(1.0, abs=1e-3)  # shares of the foreground only
    red_bin = int(np.argmin(((palette() - [220 / 255, 20 / 255, 20 / 255]) ** 2).sum(1)))
    white_bin = int(np.argmin(((palette() - 1.0) ** 2).sum(1)))
    # the mask is soft (a sigmoid): each white pixel leaks 1.8% of a product pixel's weight, here 3% in all
    assert np.argmax(global_bins) == red_bin and global_bins[white_bin] < 0.05
    blue = colour_histogram(shirt((20, 40, 220)))
    assert np.linalg.norm(red - blue) > 0.5  # another shirt colour, another descriptor
    # the grid cells tell the shirt (upper middle) from the trousers (lower middle)
    cells = red[COLOUR_BINS:].reshape(3, 3, COLOUR_BINS) ** 2
    assert cells[0, 1, red_bin] > cells[2, 1, red_bin]


def test_backbone_part_drops_the_descriptor_columns_only_when_there_are_some() -> None:
    features = np.arange(2 * (7 + COLOUR_FEATURES), dtype=np.float32).reshape(2, -1)
    assert backbone_part(features, True).shape == (2, 7)
    assert backbone_part(features, False) is features


# --- the sub-space head and the query-side modes ---

SUBSPACES = {"type": {"column": "articleType", "dim": 4, "weight": 1.0},
             "colour": {"column": "baseColour", "dim": 3, "weight": 0.25}}


def test_the_head_stores_a_unit_weighted_concatenation_of_unit_sub_vectors() -> None:
    from lookalike.model.network import build_head

    head = build_head(10, hidden_dim=8, embedding_dim=7, subspaces=SUBSPACES)
    final, type_part, colour_part = (np.asarray(o) for o in head(np.random.default_rng(0).normal(size=(5, 10))))
    np.testing.assert_allclose(np.linalg.norm(type_part, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(colour_part, axis=1), 1.0, atol=1e-5)
    expected = np.concatenate([type_part, 0.5 * colour_part], axis=1) / np.sqrt(1.25)
    np.testing.assert_allclose(final, expected, atol=1e-5)


def stored(type_part: list[float], colour_part: list[float]) -> np.ndarray:
    """A stored vector as the head makes it, for SUBSPACES."""
    t, c = np.array(type_part, np.float32), np.array(colour_part, np.float32)
    t, c = t / np.linalg.norm(t), c / np.linalg.norm(c)
    return np.concatenate([t, 0.5 * c]) / np.sqrt(1.25)


def test_a_mode_turns_the_inner_product_into_its_weighted_cosines() -> None:
    similarity = Similarity.from_params({"subspaces": SUBSPACES}, {"colour": {"colour": 1.0}, "type": {"type": 1.0}})
    query = stored([1, 0, 0, 0], [1, 0, 0])
    same_type_other_colour = stored([1, 0, 0, 0], [0, 1, 0])
    other_type_same_colour = stored([0, 1, 0, 0], [1, 0, 0])
    gallery = np.stack([same_type_other_colour, other_type_same_colour])
    assert np.argmax(gallery @ similarity.query_vector(query, "type")) == 0
    assert np.argmax(gallery @ similarity.query_vector(query, "colour")) == 1
    # explicit weights: the inner product is proportional to 2 cos_type + 1 cos_colour
    asked = similarity.query_vector(query, "type:2,colour:1")
    scores = gallery @ asked
    assert scores[0] / scores[1] == pytest.approx(2.0 / 1.0, rel=1e-5)
    np.testing.assert_allclose(np.linalg.norm(asked), 1.0, atol=1e-6)
    assert similarity.query_vector(query, "overall") is not None
    np.testing.assert_allclose(similarity.query_vector(query, None), query, atol=1e-7)  # as stored


@pytest.mark.parametrize("asked, message", [
    ("shininess", "unknown similarity"), ("type:1,shine:2", "unknown sub-space"), ("type:x", "name:number"),
    ("type:0,colour:0", "at least one above 0"), ("type:-1", "from 0 to 1000"), ("type:nan", "from 0 to 1000")])
def test_a_similarity_the_build_cannot_answer_is_refused_with_a_reason(asked: str, message: str) -> None:
    similarity = Similarity.from_params({"subspaces": SUBSPACES}, {"colour": {"colour": 1.0}})
    with pytest.raises(SimilarityError, match=message):
        similarity.query_vector(stored([1, 0, 0, 0], [1, 0, 0]), asked)


def test_a_build_from_before_sub_spaces_has_one_type_sub_space() -> None:
    similarity = Similarity.from_manifest({"dimension": 8, "params": {}})
    assert similarity.names == ["type"] and similarity.mode_names == ["overall"]
    round_trip = Similarity.from_manifest({"params": {"similarity": Similarity.from_params(
        {"subspaces": SUBSPACES}, {"colour": {"colour": 1.0}}).to_manifest()}})
    assert round_trip.names == ["type", "colour"] and round_trip.modes == {"colour": {"colour": 1.0}}


# --- labels and metrics ---

def test_attribute_labels_keep_raw_values_and_mark_missing_ones() -> None:
    table = pd.DataFrame({"articleType": ["Shirts", "Shirts", "Jeans", "Tops"],
                          "baseColour": ["Navy Blue", "Blue", None, "NA"]})
    assert list(attribute_labels(table, "baseColour")) == ["Navy Blue", "Blue", MISSING, MISSING]
    assert list(attribute_labels(table, "articleType+baseColour")) == [
        "Shirts|Navy Blue", "Shirts|Blue", MISSING, MISSING]
    codes = label_codes(attribute_labels(table, "baseColour"), np.array([0, 2]))
    assert list(codes) == [0, -1, -1, -1]  # "Blue" is not in the train rows; missing never has a code


def test_look_metrics_by_hand() -> None:
    table = pd.DataFrame({"articleType": ["Shirts"] * 4 + ["Jeans"] * 2,
                          "baseColour": ["Red", "Red", "Blue", "Red", "Red", "Blue"],
                          "gender": ["Men", "Men", "Men", "Women", "Men", "Men"]})
    # one query (row 0); gallery order by cosine: row 2 (Shirts Blue), row 1 (Shirts Red), row 4 (Jeans Red),
    # row 3 (Shirts Red, Women), row 5
    angles = np.array([0.0, 0.2, 0.1, 0.4, 0.3, 0.5])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    scores = look_metrics(embeddings, table, np.array([0]), "articleType", "baseColour", ("gender",))
    # type+colour relevant: rows 1 and 3 (R = 2), at ranks 2 and 4 of [2, 1, 4, 3, 5]
    assert scores["type_colour_precision_at_5"] == pytest.approx(2 / 5)
    assert scores["type_colour_map_at_r"] == pytest.approx((1 / 2) / 2)  # only rank 2 is within R = 2
    assert scores["type_gender_precision_at_5"] == pytest.approx(2 / 5)  # rows 2 and 1
    assert scores["colour_precision_at_5"] == pytest.approx(3 / 5)  # rows 1, 4, 3
    assert scores["type_colour_precision_at_5_bound"] == pytest.approx(2 / 5)
    assert list(joint_labels(table, ["articleType", "baseColour"]))[:2] == ["Shirts|Red", "Shirts|Red"]


# --- params ---

@pytest.fixture
def params(tmp_path) -> dict:
    loaded = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    loaded["data"]["catalogue_dir"] = str(tmp_path)
    return copy.deepcopy(loaded)


def test_sub_space_dims_must_add_up_to_the_embedding(params) -> None:
    params["model"]["subspaces"]["type"]["dim"] += 1
    with pytest.raises(ParamsError, match="model.subspaces"):
        validate(params)


def test_a_zero_stored_weight_is_refused(params) -> None:
    params["model"]["subspaces"]["colour"]["weight"] = 0
    with pytest.raises(ParamsError, match="model.subspaces.colour.weight"):
        validate(params)


def test_a_mode_over_an_unknown_sub_space_is_refused(params) -> None:
    params["similarity"]["colour"] = {"shine": 1.0}
    with pytest.raises(ParamsError, match="similarity.colour"):
        validate(params)


def test_fine_tuning_keeps_the_colour_descriptor_and_the_picture_sub_space(params) -> None:
    """Cached map rows carry the view's descriptor and the picture axes are fitted on the top's output, so the
    default model fine-tunes as it is (both were refused before)."""
    params["train"]["finetune_blocks"] = 2
    validate(params)
    assert params["model"]["colour_descriptor"] and params["model"]["subspaces"]["picture"]["column"] == "@features"


def test_a_params_file_without_sub_spaces_trains_the_type_only_head(params) -> None:
    for key in ("subspaces", "colour_descriptor"):
        del params["model"][key]
    del params["similarity"]  # its modes name the sub-spaces just removed
    del params["text"]["target"]  # and words search one of them
    params["model"]["embedding_dim"] = 256
    validate(params)
    assert params["model"]["colour_descriptor"] is False
    assert params["model"]["subspaces"] == {"type": {"column": "articleType", "dim": 256, "weight": 1.0}}


# --- shopper alterations in training views ---

def test_training_views_take_shopper_alterations_seeded_and_only_when_asked() -> None:
    photo = Image.fromarray(shirt((200, 30, 30))).resize((60, 80))
    plain = [np.asarray(augment(photo, np.random.default_rng([0, i]))) for i in range(8)]
    altered = [np.asarray(augment(photo, np.random.default_rng([0, i]), ("blur", "background", "jpeg"), 1.0))
               for i in range(8)]
    again = [np.asarray(augment(photo, np.random.default_rng([0, i]), ("blur", "background", "jpeg"), 1.0))
             for i in range(8)]
    assert all(np.array_equal(a, b) for a, b in zip(altered, again, strict=True))
    assert all(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(plain, altered, strict=True))
    assert {"blur", "background", "jpeg"} <= set(ALTERATIONS)


def test_the_alteration_rate_sets_the_share_of_altered_training_views() -> None:
    """Rate 0 never alters (the view is the plain augment's), rate 1 always does; in between, about that share."""
    photo = Image.fromarray(shirt((200, 30, 30))).resize((60, 80))
    kinds = ("blur", "background", "jpeg")

    def altered_share(rate: float) -> float:
        return np.mean([not np.array_equal(np.asarray(augment(photo, np.random.default_rng([1, i]), kinds, rate)),
                                           np.asarray(augment(photo, np.random.default_rng([1, i]), kinds, 0.0)))
                        for i in range(60)])

    assert altered_share(0.0) == 0.0
    assert altered_share(1.0) == 1.0
    assert 0.3 < altered_share(0.5) < 0.7


# --- the pinned build: a mode changes what comes back, measured ---

@pytest.fixture(scope="module")
def pinned():
    from lookalike.search.engine import Searcher

    return Searcher.load(PROJECT_ROOT / "artifacts")


def shares(searcher, mode: str, queries: list[int]) -> tuple[float, float]:
    """Mean share of the top 5 with the query's baseColour, and with its articleType, asking ``mode``."""
    colour = type_ = 0.0
    for item_id in queries:
        query = searcher.items.iloc[searcher.row_of(item_id)]
        found = [m.metadata for m in searcher.similar_items(item_id, 5, similarity=mode).matches]
        colour += np.mean([m["baseColour"] == str(query["baseColour"]) for m in found])
        type_ += np.mean([m["articleType"] == str(query["articleType"]) for m in found])
    return colour / len(queries), type_ / len(queries)


def test_same_colour_brings_more_of_the_colour_and_same_type_more_of_the_type(pinned) -> None:
    assert {"colour", "type", "style"} <= set(pinned.similarity.modes)
    test = pinned.items[pinned.items["split"] == "test"]["id"].tolist()[:200]
    colour_by_colour, type_by_colour = shares(pinned, "colour", test)
    colour_by_type, type_by_type = shares(pinned, "type", test)
    assert colour_by_colour > colour_by_type + 0.1, (colour_by_colour, colour_by_type)
    assert type_by_type > type_by_colour + 0.05, (type_by_type, type_by_colour)


def test_an_unknown_similarity_is_refused_before_the_photo_is_read(pinned) -> None:
    with pytest.raises(SimilarityError, match="unknown similarity"):
        pinned.search(PROJECT_ROOT / "no-such-photo.jpg", 5, similarity="shininess")


def test_the_cli_asks_the_chosen_similarity_and_refuses_an_unknown_one(pinned, capsys) -> None:
    from lookalike.cli import main

    item_id = str(int(pinned.items["id"].iloc[0]))
    artifacts = str(PROJECT_ROOT / "artifacts")
    assert main(["--artifacts", artifacts, "similar", item_id, "--similarity", "colour", "--json"]) == 0
    by_colour = [m["id"] for m in json.loads(capsys.readouterr().out)["matches"]]
    assert main(["--artifacts", artifacts, "similar", item_id, "--similarity", "type", "--json"]) == 0
    by_type = [m["id"] for m in json.loads(capsys.readouterr().out)["matches"]]
    expected = [m.id for m in pinned.similar_items(int(item_id), 5, similarity="colour").matches]
    assert by_colour == expected and by_type != by_colour
    assert main(["--artifacts", artifacts, "similar", item_id, "--similarity", "shininess"]) == 2
    assert "unknown similarity 'shininess'" in capsys.readouterr().err
