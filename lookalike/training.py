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
from lookalike.model import CompiledModel, build_embedding_model, build_head

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


def embed_features(model: keras.Model | CompiledModel, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """float32 (n, emb_dim): ``model`` (the head, or top blocks + head) over cached features
    (n, feature_dim) or maps (n, h, w, c); maps go in batches of 256 to bound activation memory.

    The call is a traced function: eager Keras calls over maps grew memory by gigabytes.
    """
    compiled = model if isinstance(model, CompiledModel) else CompiledModel(model)
    if features.ndim > 2:
        batch_size = min(batch_size, 256)
    return np.concatenate([
        compiled(np.asarray(features[i : i + batch_size], np.float32)) for i in range(0, len(features), batch_size)
    ]) if len(features) else np.zeros((0, *compiled.output_shape), np.float32)


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    model_params: dict,
    train_params: dict,
    log=print,
    backbone_top: keras.Model | None = None,
) -> TrainResult:
    """Train a head on ``features`` (views, n, ...); view 0 is the plain image.

    ``features`` are pooled backbone features (views, n, feature_dim), or, with
    ``backbone_top``, cached (views, n, h, w, c) maps that the top backbone blocks
    turn into pooled features: those blocks then train too, at
    ``train.finetune_learning_rate`` (cosine decay over ``train.finetune_steps``).
    Only ``train_rows`` are sampled (any view); ``val_rows`` are queries against
    train + val for early stopping on MAP@R.
    """
    seed = int(train_params["seed"])
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    views = features.shape[0]
    feature_dim = features.shape[-1] if backbone_top is None else int(backbone_top.output_shape[-1])
    head = build_head(feature_dim, model_params["hidden_dim"], model_params["embedding_dim"],
                      train_params["dropout"], model_params["embedding"], seed)
    embedder = head if backbone_top is None else build_embedding_model(backbone_top, head)  # maps -> embedding
    steps = int(train_params["finetune_steps"] if backbone_top is not None else train_params["steps"])
    optimizer = keras.optimizers.AdamW(train_params["learning_rate"], weight_decay=train_params["weight_decay"])
    top_variables = [] if backbone_top is None else backbone_top.trainable_variables
    top_optimizer = keras.optimizers.AdamW(
        keras.optimizers.schedules.CosineDecay(float(train_params["finetune_learning_rate"]), steps),
        weight_decay=train_params["weight_decay"]) if top_variables else None
    loss_name, mining, margin = train_params["loss"], train_params["mining"], float(train_params["margin"])
    label_codes, label_names = pd.factorize(labels)
    label_codes = label_codes.astype(np.int32)
    # Proxies (one learned vector per label) are used by proxy_softmax only; they are not part of the model.
    proxies = tf.Variable(rng.normal(0.0, 0.01, (len(label_names), head.output_shape[-1])).astype(np.float32))
    variables = head.trainable_variables + ([proxies] if loss_name == "proxy_softmax" else [])

    @tf.function
    def step(batch_features, batch_labels, noise):
        with tf.GradientTape() as tape:
            embeddings = embedder(batch_features, training=True)
            loss = metric_loss(embeddings, batch_labels, loss_name, mining, margin, noise, proxies,
                               float(train_params["proxy_scale"]))
        gradients = tape.gradient(loss, variables + top_variables)
        optimizer.apply_gradients(zip(gradients[: len(variables)], variables, strict=True))
        if top_variables:
            top_optimizer.apply_gradients(zip(gradients[len(variables):], top_variables, strict=True))
        return loss

    groups = rows_by_label(labels, train_rows)
    gallery_rows = np.sort(np.concatenate([train_rows, val_rows]))
    val_positions = np.searchsorted(gallery_rows, val_rows)

    compiled_embedder = CompiledModel(embedder)  # traced once; reads the live weights at every check

    def validate() -> dict[str, float]:
        embedded = embed_features(compiled_embedder, features[0, gallery_rows])
        return evaluate_retrieval(embedded, labels[gallery_rows], val_positions)[0]

    # "no_regression": the kept step must match or beat the pretrained features on every val metric,
    # so training never makes search worse for the queries the head would otherwise lose.
    floor: dict[str, float] = {}
    if train_params["selection"] == "no_regression" and len(val_rows):
        if backbone_top is not None:
            raise ValueError("train.selection: no_regression needs pooled features; set train.finetune_blocks: 0")
        floor = evaluate_retrieval(unit_rows(features[0, gallery_rows]), labels[gallery_rows], val_positions)[0]
        log("pretrained features on val: " + ", ".join(f"{k} {v:.4f}" for k, v in floor.items()))

    def criterion(scores: dict[str, float]) -> float:
        regresses = any(scores[name] < value for name, value in floor.items())
        return scores[SELECTION_METRIC] - (2.0 if regresses else 0.0)  # any step that does not regress wins

    history, best = [], (-3.0, 0, {}, embedder.get_weights())
    checks_without_gain, started = 0, time.perf_counter()
    for step_number in range(1, steps + 1):
        rows = sample_pk_batch(rng, groups, train_params["classes_per_batch"], train_params["images_per_class"])
        view = rng.integers(0, views, size=len(rows))
        noise = rng.random((len(rows), len(rows)), dtype=np.float32)
        batch = tf.convert_to_tensor(features[view, rows], tf.float32)
        loss = float(step(batch, label_codes[rows], noise))
        record = {"step": step_number, "loss": loss}
        if step_number % train_params["eval_every"] == 0 or step_number == steps:
            scores = validate() if len(val_rows) else {SELECTION_METRIC: -loss}
            record.update({f"val_{k}": v for k, v in scores.items()})
            if criterion(scores) > best[0]:
                best, checks_without_gain = (criterion(scores), step_number, scores, embedder.get_weights()), 0
            else:
                checks_without_gain += 1
            log(f"step {step_number}: loss {loss:.4f}, val MAP@R {scores[SELECTION_METRIC]:.4f} "
                f"(kept: step {best[1]}, {time.perf_counter() - started:.0f} s)")
        history.append(record)
        if checks_without_gain >= train_params["patience"]:
            log(f"early stop at step {step_number}: no gain in {checks_without_gain} checks")
            break
    if floor and best[0] < 0:
        log("warning: no checked step matched the pretrained features on every val metric; kept the best MAP@R")
    embedder.set_weights(best[3])
    return TrainResult(head, pd.DataFrame(history), best[1], best[2], time.perf_counter() - started,
                       proxies.numpy(), np.asarray(label_names))


def maps_description(params: dict, shape: tuple[int, ...]) -> dict:
    """What cached maps were cut for: the train stage refuses maps whose description differs."""
    backbone = params["backbone"]
    return {"backbone": backbone["name"], "weights": backbone["weights"], "image_size": backbone["image_size"],
            "resize_mode": backbone["resize_mode"], "finetune_blocks": params["train"]["finetune_blocks"],
            "shape": [int(d) for d in shape]}


def freeze_for_finetuning(backbone: keras.Model, backbone_top: keras.Model) -> None:
    """Only the top blocks' convolutions train; batch-norm layers keep their ImageNet statistics
    (a frozen Keras BatchNormalization also runs in inference mode)."""
    for layer in backbone.layers:
        layer.trainable = False
    for layer in backbone_top.layers:
        layer.trainable = bool(layer.weights) and not isinstance(layer, keras.layers.BatchNormalization)
