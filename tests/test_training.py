"""Head training on cached features: P x K sampling, learning, and the no-regression model selection."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from lookalike.evaluation.metrics import evaluate_retrieval
from lookalike.model.training import (
    MISSING,
    batch_groups,
    embed_features,
    rows_by_label,
    sample_pk_batch,
    train_head,
)
from lookalike.params import PROJECT_ROOT


def test_pk_batch_has_p_labels_with_k_rows_each() -> None:
    labels = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"])
    groups = rows_by_label(labels, np.arange(len(labels)))
    assert sorted(len(g) for g in groups) == [2, 3, 5]  # "d" has no positive pair: never sampled
    batch = sample_pk_batch(np.random.default_rng(0), groups, classes=3, per_class=4)
    assert len(batch) == 12
    assert sorted(np.unique(labels[batch], return_counts=True)[1].tolist()) == [4, 4, 4]
    assert "d" not in set(labels[batch])


def test_batches_by_look_draw_types_in_one_colour_and_skip_rows_without_a_colour() -> None:
    types = np.array(["shirt"] * 6 + ["bag"] * 4)
    looks = np.array(["shirt|red"] * 3 + ["shirt|blue"] * 2 + [MISSING] + ["bag|red"] * 2 + ["bag|black"] * 2)
    rows = np.arange(len(types))
    by_type = batch_groups(types, looks, rows, "label")
    assert sorted(len(g) for g in by_type) == [4, 6]  # the row without a colour is still a shirt
    by_look = batch_groups(types, looks, rows, "look")
    assert sorted(sorted(looks[g].tolist()) for g in by_look) == [
        ["bag|black"] * 2, ["bag|red"] * 2, ["shirt|blue"] * 2, ["shirt|red"] * 3]
    assert all(  # no look labels: by type
        np.array_equal(a, b) for a, b in zip(batch_groups(types, None, rows, "look"), by_type, strict=True))
    with pytest.raises(ValueError, match="batch_by"):
        batch_groups(types, looks, rows, "colour")


def _synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Six labels whose signal sits in 8 of 64 dimensions, drowned by shared noise in the rest."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), 40)
    centres = rng.normal(0, 2, (6, 8))
    signal = centres[labels] + rng.normal(0, 0.6, (len(labels), 8))
    noise = rng.normal(0, 1.5, (len(labels), 56))
    features = np.abs(np.concatenate([signal, noise], axis=1)).astype(np.float32)[None]
    return features, labels.astype(str)


@pytest.fixture(scope="module")
def train_params() -> tuple[dict, dict]:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    model = {**params["model"], "hidden_dim": 32, "embedding_dim": 16}
    train = {**params["train"], "steps": 300, "eval_every": 50, "patience": 100, "classes_per_batch": 6,
             "images_per_class": 4}
    return model, train


@pytest.mark.parametrize("loss", ["proxy_softmax", "triplet"])
def test_training_beats_the_raw_features_on_held_out_rows(train_params, loss: str) -> None:
    features, labels = _synthetic()
    rows = np.arange(len(labels))
    train_rows, val_rows, test_rows = rows[rows % 5 >= 2], rows[rows % 5 == 1], rows[rows % 5 == 0]
    model, train = train_params
    result = train_head(features, labels, train_rows, val_rows, model, {**train, "loss": loss}, log=lambda _: None)
    raw = features[0] / np.linalg.norm(features[0], axis=1, keepdims=True)
    before = evaluate_retrieval(raw, labels, test_rows)[0]
    after = evaluate_retrieval(embed_features(result.head, features[0]), labels, test_rows)[0]
    assert after["map_at_r"] > before["map_at_r"] + 0.05  # seen: 0.25 -> 0.35 (proxy), 0.50 (triplet)
    assert result.best_step % 50 == 0 and 50 <= result.best_step <= 300


def test_no_regression_selection_keeps_a_step_at_least_as_good_as_raw_features_on_val(train_params) -> None:
    features, labels = _synthetic(seed=1)
    rows = np.arange(len(labels))
    train_rows, val_rows = rows[rows % 5 >= 1], rows[rows % 5 == 0]
    model, train = train_params
    messages: list[str] = []
    result = train_head(features, labels, train_rows, val_rows, model, {**train, "selection": "no_regression"},
                        log=messages.append)
    gallery = np.sort(np.concatenate([train_rows, val_rows]))
    raw = features[0, gallery] / np.linalg.norm(features[0, gallery], axis=1, keepdims=True)
    floor = evaluate_retrieval(raw, labels[gallery], np.searchsorted(gallery, val_rows))[0]
    assert any(m.startswith("pretrained features on val") for m in messages)
    assert all(result.best_validation[name] >= floor[name] for name in floor), (result.best_validation, floor)


def test_finetuning_on_cached_maps_trains_the_top_blocks_only_and_the_saved_model_agrees(train_params) -> None:
    """The top blocks train on cached flat map rows with the colour descriptor after them; the picture sub-space's
    axes are refitted on the kept top's output; the full image model gives the vectors the cached rows gave."""
    import keras

    from lookalike.model.backbones import build_backbone, split_backbone
    from lookalike.model.colour import COLOUR_FEATURES
    from lookalike.model.network import (
        PrincipalProjection,
        build_bottom_model,
        build_embedding_model,
        build_pooled_top,
    )
    from lookalike.model.training import freeze_for_finetuning

    keras.utils.set_random_seed(0)
    backbone = build_backbone("efficientnet_lite0", 64, weights="imagenet")  # random weights give all-zero maps
    backbone.name = "backbone"
    bottom, top = split_backbone(backbone, "efficientnet_lite0", 2)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(list("abcd")), 8)
    images = rng.uniform(-1, 1, (len(labels), 64, 64, 3)).astype(np.float32)
    images[:, :8, :8, :] += np.arange(4).repeat(8)[:, None, None, None] * 0.5  # a label cue
    rows_cached = build_bottom_model(bottom, "lite")(images).numpy()
    assert rows_cached.shape == (len(labels), int(np.prod(top.input_shape[1:])) + COLOUR_FEATURES)
    maps = rows_cached.astype(np.float16)[None]
    before = {w.path: w.numpy().copy() for w in backbone.weights}
    freeze_for_finetuning(backbone, top)
    pooled_top = build_pooled_top(top, COLOUR_FEATURES)
    model, train = train_params
    subspaces = {"type": {"column": "labels", "dim": 16, "weight": 1.0},
                 "picture": {"column": "@features", "dim": 8, "weight": 0.1}}
    model = {**model, "colour_descriptor": True, "subspaces": subspaces, "embedding_dim": 24}
    rows = np.arange(len(labels))
    train_rows = rows[rows % 4 != 0]
    result = train_head(maps, labels, train_rows, rows[rows % 4 == 0], model,
                        {**train, "finetune_steps": 20, "eval_every": 10, "classes_per_batch": 4},
                        log=lambda _: None, backbone_top=pooled_top, attributes={"type": labels, "picture": labels})
    changed = {w.path for w in backbone.weights if not np.array_equal(w.numpy(), before[w.path])}
    top_paths = {w.path for w in top.weights}
    assert changed and changed <= top_paths  # nothing below the cut moves
    assert not any("bn" in path or "batch_normalization" in path for path in changed)  # ImageNet BN statistics kept
    assert {w.path for w in top.trainable_weights} == changed
    refit = PrincipalProjection(8, COLOUR_FEATURES)
    refit.build((None, int(pooled_top.output_shape[-1])))
    refit.fit(embed_features(pooled_top, maps[0, train_rows], 256))
    kept = result.head.get_layer("project_picture")
    np.testing.assert_array_equal(kept.axes.numpy(), refit.axes.numpy())  # fitted on the kept top, not the first
    full = build_embedding_model(backbone, result.head, "lite")
    on_maps = embed_features(keras.Model(pooled_top.input, result.head(pooled_top.output)[0]), maps[0], 256)
    np.testing.assert_allclose(full(images).numpy(), on_maps, atol=2e-3)  # maps were cached as float16


def test_a_saved_model_is_byte_stable_and_loads_back_the_same(tmp_path):
    """Keras stamps the time of saving into the archive; the saved model carries none, so the same weights
    always hash the same (DVC skips what follows an unchanged training)."""
    import json
    import zipfile

    import keras

    from lookalike.model.network import load_embedding_model, save_embedding_model

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_initializer="ones")])
    save_embedding_model(model, tmp_path / "a.keras")
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
        assert {info.filename for info in archive.infolist()} >= {"config.json", "model.weights.h5"}
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(load_embedding_model(tmp_path / "a.keras")(x), model(x))


def test_objects_shared_between_layers_are_numbered_not_named_by_address():
    from lookalike.model.network import _numbered_shared_objects

    config = {"layers": [{"a": {"shared_object_id": 139700560750864}}, {"b": [{"shared_object_id": 5}]},
                         {"c": {"shared_object_id": 139700560750864}}], "name": "m"}
    assert _numbered_shared_objects(config, {}) == {
        "layers": [{"a": {"shared_object_id": 1}}, {"b": [{"shared_object_id": 2}]}, {"c": {"shared_object_id": 1}}],
        "name": "m"}
