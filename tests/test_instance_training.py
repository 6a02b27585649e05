"""Training without labels: the instance sub-space (a photo's other views are its positives), its batches,
its validation protocol, and a catalogue where only some rows carry a label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from lookalike.evaluation.metrics import unit_rows
from lookalike.model import training
from lookalike.model.training import (
    INSTANCE_COLUMN,
    MISSING,
    attribute_labels,
    augmented_rows,
    embed_features,
    instance_ids,
    instance_scores,
    neighbour_groups,
    rows_by_identity,
    sample_instance_batch,
    train_head,
)
from lookalike.params import PROJECT_ROOT


def test_an_instance_batch_holds_k_distinct_views_of_p_rows_and_no_other_positives() -> None:
    train_rows = np.arange(0, 40, 2)
    groups = rows_by_identity(instance_ids(40), train_rows)
    assert len(groups) == len(train_rows)  # one identity per photo, lone photos kept
    rows, views = sample_instance_batch(np.random.default_rng(0), groups, views=3, identities=8, per_identity=3)
    assert len(rows) == 24 and set(rows.tolist()) <= set(train_rows.tolist())
    assert len(set(rows.tolist())) == 8
    for row in set(rows.tolist()):
        assert sorted(views[rows == row].tolist()) == [0, 1, 2]  # without replacement: every view once
    ids = instance_ids(40)[rows]
    np.testing.assert_array_equal(ids[:, None] == ids[None, :], rows[:, None] == rows[None, :])  # same row only


def test_photos_of_one_item_are_positives_and_rows_without_an_item_stand_alone() -> None:
    ids = instance_ids(6, np.array(["a", "a", "b", MISSING, MISSING, "b"]))
    assert ids[0] == ids[1] and ids[2] == ids[5]
    assert len({ids[0], ids[2], ids[3], ids[4]}) == 4
    groups = rows_by_identity(ids, np.arange(6))
    rows, views = sample_instance_batch(np.random.default_rng(1), groups, views=2, identities=4, per_identity=4)
    item_a = None
    for start in range(0, 16, 4):
        chunk = ids[rows[start : start + 4]]
        assert (chunk == chunk[0]).all()  # K picks of one identity
        if chunk[0] == ids[0]:
            item_a = rows[start : start + 4]
            picks = set(zip(item_a.tolist(), views[start : start + 4].tolist(), strict=True))
            assert picks == {(0, 0), (0, 1), (1, 0), (1, 1)}  # both photos, both views, none twice
    assert item_a is not None


def test_instance_scores_by_hand() -> None:
    # gallery: four photos on the unit circle; queries: altered copies of photos 0 and 2,
    # the second nearer to photo 1 than to its own
    angle = np.deg2rad([0, 90, 180, 270])
    gallery = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    queries = unit_rows(np.array([[1.0, 0.1], [-0.2, 1.0]]))
    scores = instance_scores(gallery, queries, np.arange(4), np.array([0, 2]))
    assert scores["precision_at_1"] == 0.5 and scores["map_at_r"] == 0.5
    # with items, photos 0 and 1 are one item: the second query's first result (photo 1) is still wrong,
    # the first query's two relevant photos come first and second
    scores = instance_scores(gallery, queries, np.array([5, 5, 6, 7]), np.array([5, 6]))
    assert scores["map_at_r"] == pytest.approx((1.0 + 0.0) / 2)


def test_train_and_val_rows_get_augmented_views_train_rows_first() -> None:
    """Train rows first: their views are seeded by position, so they do not move when val rows follow."""
    split = np.array(["train", "val", "test", "train", "val", "gallery"])
    np.testing.assert_array_equal(augmented_rows(split), [0, 3, 1, 4])
    assert (attribute_labels(pd.DataFrame({"x": [1, 2]}), INSTANCE_COLUMN) == MISSING).all()


def _views_of_photos(seed: int = 0, n: int = 200, views: int = 3) -> np.ndarray:
    """(views, n, 32): a photo's identity sits in 8 dims, near-equal across its views; 24 dims of
    per-view noise (what an augmentation changes) drown it, so raw features rarely match a view to its photo."""
    rng = np.random.default_rng(seed)
    identity = rng.normal(0, 1, (n, 8))
    kept = identity[None] + rng.normal(0, 0.1, (views, n, 8))
    return np.concatenate([kept, rng.normal(0, 1, (views, n, 24))], axis=2).astype(np.float32)


@pytest.fixture(scope="module")
def params() -> tuple[dict, dict]:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    model = {**params["model"], "hidden_dim": 32, "embedding_dim": 16}
    train = {**params["train"], "steps": 150, "eval_every": 25, "patience": 100, "learning_rate": 0.01,
             "dropout": 0.0, "instance_rows": 32, "instance_views": 2, "instance_temperature": 0.1}
    return model, train


@pytest.mark.parametrize("selection", ["map_at_r", "no_regression"])
def test_without_labels_the_head_learns_which_view_is_which_photo_on_held_out_rows(params, selection: str) -> None:
    features = _views_of_photos()
    rows = np.arange(features.shape[1])
    train_rows, val_rows = rows[rows % 4 != 0], rows[rows % 4 == 0]
    gallery = np.sort(np.concatenate([train_rows, val_rows]))
    raw = instance_scores(unit_rows(features[0, gallery]), unit_rows(features[1, val_rows]), gallery, val_rows)
    model, train = params
    result = train_head(features, None, train_rows, val_rows, model, {**train, "selection": selection},
                        log=lambda _: None)
    assert result.best_validation["map_at_r"] > max(0.6, raw["map_at_r"] + 0.5)  # seen: 0.08 -> 0.86
    assert result.best_validation["instance_map_at_r"] == result.best_validation["map_at_r"]
    assert "val_precision_at_1" in result.history and result.label_names.size == 0
    kept = instance_scores(embed_features(result.head, features[0, gallery]),
                           embed_features(result.head, features[1, val_rows]), gallery, val_rows)
    assert kept["map_at_r"] == pytest.approx(result.best_validation["map_at_r"])  # the kept step's weights


def test_a_partly_labelled_catalogue_trains_labels_on_labelled_rows_and_instances_on_all(params, monkeypatch) -> None:
    features = _views_of_photos(seed=1, n=120)
    n = features.shape[1]
    labels = np.where(np.arange(n) % 2 == 0, np.array(list("abcd"))[np.arange(n) // 2 % 4], MISSING)
    rows = np.arange(n)
    train_rows, val_rows = rows[rows % 5 != 0], rows[rows % 5 == 0]
    seen: dict[str, list[np.ndarray]] = {"labels": [], "instances": []}

    def spy(name, sample):
        def sampled(*args, **kwargs):
            out = sample(*args, **kwargs)
            seen[name].append(out if name == "labels" else out[0])
            return out
        return sampled

    monkeypatch.setattr(training, "sample_pk_batch", spy("labels", training.sample_pk_batch))
    monkeypatch.setattr(training, "sample_instance_batch", spy("instances", training.sample_instance_batch))
    model, train = params
    model = {**model, "subspaces": {"type": {"column": "type", "dim": 8, "weight": 1.0},
                                    "photo": {"column": INSTANCE_COLUMN, "dim": 8, "weight": 1.0}}}
    attributes = {"type": labels, "photo": attribute_labels(pd.DataFrame(index=rows), INSTANCE_COLUMN)}
    result = train_head(features, labels, train_rows, val_rows, model,
                        {**train, "steps": 20, "eval_every": 10, "classes_per_batch": 4, "loss": "proxy_softmax"},
                        log=lambda _: None, attributes=attributes)
    label_rows, instance_rows = np.concatenate(seen["labels"]), np.concatenate(seen["instances"])
    assert len(seen["labels"]) == len(seen["instances"]) == 20  # both kinds of batch in every step
    assert (labels[label_rows] != MISSING).all() and np.isin(label_rows, train_rows).all()
    assert (labels[instance_rows] == MISSING).any() and np.isin(instance_rows, train_rows).all()
    assert {"map_at_r", "instance_map_at_r", "instance_precision_at_1"} <= set(result.best_validation)
    assert result.proxies.shape == (4, 8) and result.label_names.tolist() == list("abcd")


def test_instance_training_refuses_val_rows_without_augmented_views(params) -> None:
    features = _views_of_photos(n=40, views=2)
    rows = np.arange(40)
    train_rows, val_rows = rows[rows % 4 != 0], rows[rows % 4 == 0]
    features[1, val_rows] = features[0, val_rows]  # a features stage that augmented train rows only
    model, train = params
    with pytest.raises(ValueError, match="rerun the features stage"):
        train_head(features, None, train_rows, val_rows, model, train, log=lambda _: None)
    with pytest.raises(ValueError, match="augmented views"):
        train_head(features[:1], None, train_rows, val_rows, model, train, log=lambda _: None)


def test_neighbour_groups_put_look_alike_photos_in_one_pseudo_item_and_leave_other_rows_out() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)).astype(np.float32) * 10
    features = np.concatenate([c + rng.normal(scale=0.1, size=(6, 16)) for c in centres]).astype(np.float32)
    rows = np.arange(0, 18, dtype=np.int64)[np.arange(18) % 6 != 5]  # the last photo of each blob is not given
    groups = neighbour_groups(features, rows, 3, seed=0)
    assert (groups[[5, 11, 17]] == MISSING).all()
    for blob in range(3):
        members = [r for r in rows if r // 6 == blob]
        assert len(set(groups[members])) == 1  # one pseudo-item per blob
    assert len({groups[0], groups[6], groups[12]}) == 3
