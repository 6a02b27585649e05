"""Training the embedding head with a metric loss on cached backbone features.

With a frozen backbone a training step is a few milliseconds on CPU, so the head
trains for thousands of steps in seconds; a validation split carved from the
train split (never the test queries) picks the step to keep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from lookalike.losses import metric_loss
from lookalike.metrics import evaluate_retrieval, unit_rows
from lookalike.model import build_head

SELECTION_METRIC = "map_at_r"
SELECTIONS = ("map_at_r", "no_regression")


@dataclass
class TrainResult:
    head: keras.Model
    history: pd.DataFrame  # step, loss, and validation metrics where checked
    best_step: int
    best_validation: dict[str, float]
    seconds: float
    proxies: np.ndarray  # (n_labels, dim) label proxies of proxy_softmax, in ``label_names`` order
    label_names: np.ndarray


def rows_by_label(labels: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """Rows grouped by label, keeping only labels with at least two rows (a positive pair)."""
    groups = pd.Series(rows).groupby(labels[rows]).apply(lambda s: s.to_numpy())
    return [g for g in groups if len(g) >= 2]


def sample_pk_batch(rng: np.random.Generator, groups: list[np.ndarray], classes: int, per_class: int) -> np.ndarray:
    """P labels x K rows each (rows drawn with replacement only when a label has fewer than K)."""
    chosen = rng.choice(len(groups), size=min(classes, len(groups)), replace=False)
    picks = [rng.choice(groups[c], size=per_class, replace=len(groups[c]) < per_class) for c in chosen]
    return np.concatenate(picks)


def embed_features(head: keras.Model, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """float32 (n, emb_dim): the head over pooled features (n, feature_dim)."""
    return np.concatenate([
        head(features[i : i + batch_size], training=False).numpy() for i in range(0, len(features), batch_size)
    ]) if len(features) else np.zeros((0, head.output_shape[-1]), np.float32)


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    model_params: dict,
    train_params: dict,
    log=print,
) -> TrainResult:
    """Train a head on ``features`` float32 (views, n, feature_dim); view 0 is the plain image.

    Only ``train_rows`` are sampled (any view); ``val_rows`` are queries against
    train + val for early stopping on MAP@R.
    """
    seed = int(train_params["seed"])
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    views, _, feature_dim = features.shape
    head = build_head(feature_dim, model_params["hidden_dim"], model_params["embedding_dim"],
                      train_params["dropout"], model_params["embedding"], seed)
    optimizer = keras.optimizers.AdamW(train_params["learning_rate"], weight_decay=train_params["weight_decay"])
    loss_name, mining, margin = train_params["loss"], train_params["mining"], float(train_params["margin"])
    label_codes, label_names = pd.factorize(labels)
    label_codes = label_codes.astype(np.int32)
    # Proxies (one learned vector per label) are used by proxy_softmax only; they are not part of the model.
    proxies = tf.Variable(rng.normal(0.0, 0.01, (len(label_names), head.output_shape[-1])).astype(np.float32))
    variables = head.trainable_variables + ([proxies] if loss_name == "proxy_softmax" else [])

    @tf.function
    def step(batch_features, batch_labels, noise):
        with tf.GradientTape() as tape:
            embeddings = head(batch_features, training=True)
            loss = metric_loss(embeddings, batch_labels, loss_name, mining, margin, noise, proxies,
                               float(train_params["proxy_scale"]))
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss

    groups = rows_by_label(labels, train_rows)
    gallery_rows = np.sort(np.concatenate([train_rows, val_rows]))
    val_positions = np.searchsorted(gallery_rows, val_rows)

    def validate() -> dict[str, float]:
        embedded = embed_features(head, features[0, gallery_rows])
        return evaluate_retrieval(embedded, labels[gallery_rows], val_positions)[0]

    # "no_regression": the kept step must match or beat the pretrained features on every val metric,
    # so training never makes search worse for the queries the head would otherwise lose.
    floor: dict[str, float] = {}
    if train_params["selection"] == "no_regression" and len(val_rows):
        floor = evaluate_retrieval(unit_rows(features[0, gallery_rows]), labels[gallery_rows], val_positions)[0]
        log("pretrained features on val: " + ", ".join(f"{k} {v:.4f}" for k, v in floor.items()))

    def criterion(scores: dict[str, float]) -> float:
        regresses = any(scores[name] < value for name, value in floor.items())
        return scores[SELECTION_METRIC] - (2.0 if regresses else 0.0)  # any step that does not regress wins

    history, best = [], (-3.0, 0, {}, head.get_weights())
    checks_without_gain, started = 0, time.perf_counter()
    for step_number in range(1, int(train_params["steps"]) + 1):
        rows = sample_pk_batch(rng, groups, train_params["classes_per_batch"], train_params["images_per_class"])
        view = rng.integers(0, views, size=len(rows))
        noise = rng.random((len(rows), len(rows)), dtype=np.float32)
        loss = float(step(features[view, rows], label_codes[rows], noise))
        record = {"step": step_number, "loss": loss}
        if step_number % train_params["eval_every"] == 0 or step_number == train_params["steps"]:
            scores = validate() if len(val_rows) else {SELECTION_METRIC: -loss}
            record.update({f"val_{k}": v for k, v in scores.items()})
            if criterion(scores) > best[0]:
                best, checks_without_gain = (criterion(scores), step_number, scores, head.get_weights()), 0
            else:
                checks_without_gain += 1
            log(f"step {step_number}: loss {loss:.4f}, val MAP@R {scores[SELECTION_METRIC]:.4f} "
                f"(kept: step {best[1]})")
        history.append(record)
        if checks_without_gain >= train_params["patience"]:
            log(f"early stop at step {step_number}: no gain in {checks_without_gain} checks")
            break
    if floor and best[0] < 0:
        log("warning: no checked step matched the pretrained features on every val metric; kept the best MAP@R")
    head.set_weights(best[3])
    return TrainResult(head, pd.DataFrame(history), best[1], best[2], time.perf_counter() - started,
                       proxies.numpy(), np.asarray(label_names))


def finetune_backbone(
    model: keras.Model, image_paths: list[str], labels: np.ndarray, train_rows: np.ndarray,
    params: dict, trained: TrainResult, log=print,
) -> dict[str, float]:
    """Fine-tune the last ``train.finetune_blocks`` backbone blocks and the head on images.

    Runs after the head has trained on cached features, with the same loss, on
    P x K batches of augmented train images. Batch-norm statistics stay frozen.
    Costs seconds per step on CPU, hence off by default.
    """
    from lookalike.backbones import block_layer_groups
    from lookalike.params import preprocess_spec
    from lookalike.preprocessing import augment, image_to_input, load_image

    train_params = params["train"]
    rng = np.random.default_rng(int(train_params["seed"]) + 1)
    backbone = model.get_layer("backbone")
    for layer in backbone.layers:
        layer.trainable = False
    for group in block_layer_groups(backbone, params["backbone"]["name"])[-int(train_params["finetune_blocks"]):]:
        for layer in group:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    backbone.trainable = True
    spec = preprocess_spec(params)
    codes = pd.Index(trained.label_names).get_indexer(labels).astype(np.int32)
    proxies = tf.Variable(trained.proxies)
    variables = model.trainable_variables + ([proxies] if train_params["loss"] == "proxy_softmax" else [])
    optimizer = keras.optimizers.Adam(train_params["finetune_learning_rate"])

    @tf.function
    def step(images, batch_labels, noise):
        with tf.GradientTape() as tape:
            embeddings = model(images, training=True)
            loss = metric_loss(embeddings, batch_labels, train_params["loss"], train_params["mining"],
                               float(train_params["margin"]), noise, proxies, float(train_params["proxy_scale"]))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    groups = rows_by_label(labels, train_rows)
    started = time.perf_counter()
    for step_number in range(1, int(train_params["finetune_steps"]) + 1):
        rows = sample_pk_batch(rng, groups, train_params["classes_per_batch"], train_params["images_per_class"])
        images = np.stack([image_to_input(augment(load_image(image_paths[r]), rng), spec) for r in rows])
        noise = rng.random((len(rows), len(rows)), dtype=np.float32)
        loss = float(step(images, codes[rows], noise))
        if step_number % 10 == 0:
            log(f"fine-tune step {step_number}: loss {loss:.4f}")
    seconds = time.perf_counter() - started
    return {"finetune_seconds": round(seconds, 1),
            "finetune_seconds_per_step": round(seconds / max(1, int(train_params["finetune_steps"])), 2)}
