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

from lookalike.evaluation.metrics import evaluate_retrieval, unit_rows
from lookalike.model.losses import metric_loss
from lookalike.model.network import CompiledModel, build_embedding_model, build_head

SELECTION_METRIC = "map_at_r"
SELECTIONS = ("map_at_r", "look", "no_regression")
MISSING = ""  # an attribute value that does not count (NaN, "NA", empty in styles.csv)


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


def attribute_labels(table: pd.DataFrame, column: str) -> np.ndarray:
    """str (n,): a sub-space's label per row; ``a+b`` joins columns (type and colour together: the look).
    Missing values (empty, NaN, the literal NA) become MISSING, so they neither pull nor push."""
    parts = []
    for name in column.split("+"):
        values = table[name].astype("string").fillna(MISSING).str.strip().to_numpy(dtype=object)
        parts.append(np.where(np.isin(values, ["", "NA", "nan"]), MISSING, values))
    joined = parts[0].astype(str)
    for part in parts[1:]:
        joined = np.where((joined == MISSING) | (part == MISSING), MISSING, joined + "|" + part.astype(str))
    return joined.astype(str)


def label_codes(values: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """int32 (n,): each value's index among the values seen in ``train_rows``; -1 for MISSING or unseen."""
    names = sorted(set(values[train_rows].tolist()) - {MISSING})
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup.get(v, -1) for v in values.tolist()], np.int32)


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
    attributes: dict[str, np.ndarray] | None = None,
    look_labels: np.ndarray | None = None,
) -> TrainResult:
    """Train a head on ``features`` (views, n, ...); view 0 is the plain image.

    ``features`` are pooled backbone features (views, n, feature_dim), or, with
    ``backbone_top``, cached (views, n, h, w, c) maps that the top backbone blocks
    turn into pooled features: those blocks then train too, at
    ``train.finetune_learning_rate`` (cosine decay over ``train.finetune_steps``).
    Only ``train_rows`` are sampled (any view); ``val_rows`` are queries against
    train + val for early stopping on MAP@R (``train.selection: look``: the mean of MAP@R by ``labels`` and
    by ``look_labels``, type and colour together).

    ``attributes``: sub-space name -> label per row (``model.subspaces`` order; missing: MISSING); each
    sub-space trains on its own label with its own proxies. None: one sub-space on ``labels``.
    """
    seed = int(train_params["seed"])
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    views = features.shape[0]
    feature_dim = features.shape[-1] if backbone_top is None else int(backbone_top.output_shape[-1])
    subspaces = model_params.get("subspaces") if attributes else None
    head = build_head(feature_dim, model_params["hidden_dim"], model_params["embedding_dim"],
                      train_params["dropout"], model_params["embedding"], seed, subspaces)
    # maps -> embedding, with the per-sub-space outputs for the loss
    embedder = head if backbone_top is None else build_embedding_model(backbone_top, head, all_outputs=True)
    steps = int(train_params["finetune_steps"] if backbone_top is not None else train_params["steps"])
    optimizer = keras.optimizers.AdamW(train_params["learning_rate"], weight_decay=train_params["weight_decay"])
    top_variables = [] if backbone_top is None else backbone_top.trainable_variables
    top_optimizer = keras.optimizers.AdamW(
        keras.optimizers.schedules.CosineDecay(float(train_params["finetune_learning_rate"]), steps),
        weight_decay=train_params["weight_decay"]) if top_variables else None
    loss_name, mining, margin = train_params["loss"], train_params["mining"], float(train_params["margin"])
    attributes = attributes or {"type": np.asarray(labels, dtype=str)}
    codes = [label_codes(values, train_rows) for values in attributes.values()]
    label_names = np.array(sorted(set(np.asarray(labels, dtype=str)[train_rows].tolist())))
    # Proxies (one learned vector per label and sub-space) are used by proxy_softmax only; not part of the model.
    shapes = head.output_shape[1:] if len(attributes) > 1 else [head.output_shape]  # one per sub-space
    part_dims = [int(shape[-1]) for shape in shapes]
    proxies = [tf.Variable(rng.normal(0.0, 0.01, (max(1, int(c.max()) + 1), dim)).astype(np.float32))
               for c, dim in zip(codes, part_dims, strict=True)]
    variables = head.trainable_variables + (proxies if loss_name == "proxy_softmax" else [])
    scale = float(train_params["proxy_scale"])

    def subspace_loss(embeddings, batch_codes, part_proxies, noise):
        if loss_name == "proxy_softmax":  # rows without this attribute neither pull nor push
            keep = batch_codes >= 0
            return metric_loss(tf.boolean_mask(embeddings, keep), tf.boolean_mask(batch_codes, keep), loss_name,
                               mining, margin, noise, part_proxies, scale)
        # pair losses: a row without the attribute gets a label of its own (never anyone's positive)
        unique = -1 - tf.range(tf.shape(batch_codes)[0], dtype=tf.int32)
        return metric_loss(embeddings, tf.where(batch_codes >= 0, batch_codes, unique), loss_name, mining, margin,
                           noise, part_proxies, scale)

    @tf.function
    def step(batch_features, batch_codes, noise):
        with tf.GradientTape() as tape:
            outputs = embedder(batch_features, training=True)
            parts = outputs[1:] if isinstance(outputs, (list, tuple)) else [outputs]
            loss = tf.add_n([subspace_loss(part, part_codes, part_proxies, noise)
                             for part, part_codes, part_proxies in zip(parts, batch_codes, proxies, strict=True)])
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
        scores = evaluate_retrieval(embedded, labels[gallery_rows], val_positions)[0]
        if look_labels is not None:
            look = evaluate_retrieval(embedded, look_labels[gallery_rows], val_positions)[0]["map_at_r"]
            scores["look_map_at_r"] = look
            scores["look"] = (scores["map_at_r"] + look) / 2
        return scores

    # "no_regression": the kept step must match or beat the pretrained features on every val metric,
    # so training never makes search worse for the queries the head would otherwise lose.
    floor: dict[str, float] = {}
    if train_params["selection"] == "no_regression" and len(val_rows):
        if backbone_top is not None:
            raise ValueError("train.selection: no_regression needs pooled features; set train.finetune_blocks: 0")
        floor = evaluate_retrieval(unit_rows(features[0, gallery_rows]), labels[gallery_rows], val_positions)[0]
        floor.pop("look", None)
        log("pretrained features on val: " + ", ".join(f"{k} {v:.4f}" for k, v in floor.items()))

    selection = "look" if train_params["selection"] == "look" and look_labels is not None else SELECTION_METRIC

    def criterion(scores: dict[str, float]) -> float:
        regresses = any(scores[name] < value for name, value in floor.items())
        return scores[selection] - (2.0 if regresses else 0.0)  # any step that does not regress wins

    history, best = [], (-3.0, 0, {}, embedder.get_weights())
    checks_without_gain, started = 0, time.perf_counter()
    for step_number in range(1, steps + 1):
        rows = sample_pk_batch(rng, groups, train_params["classes_per_batch"], train_params["images_per_class"])
        view = rng.integers(0, views, size=len(rows))
        noise = rng.random((len(rows), len(rows)), dtype=np.float32)
        batch = tf.convert_to_tensor(features[view, rows], tf.float32)
        loss = float(step(batch, [tf.constant(c[rows]) for c in codes], noise))
        record = {"step": step_number, "loss": loss}
        if step_number % train_params["eval_every"] == 0 or step_number == steps:
            scores = validate() if len(val_rows) else {SELECTION_METRIC: -loss}
            record.update({f"val_{k}": v for k, v in scores.items()})
            if criterion(scores) > best[0]:
                best, checks_without_gain = (criterion(scores), step_number, scores, embedder.get_weights()), 0
            else:
                checks_without_gain += 1
            log(f"step {step_number}: loss {loss:.4f}, val MAP@R {scores[SELECTION_METRIC]:.4f}"
                + (f", look MAP@R {scores['look_map_at_r']:.4f} " if "look_map_at_r" in scores else " ")
                +
                f"(kept: step {best[1]}, {time.perf_counter() - started:.0f} s)")
        history.append(record)
        if checks_without_gain >= train_params["patience"]:
            log(f"early stop at step {step_number}: no gain in {checks_without_gain} checks")
            break
    if floor and best[0] < 0:
        log("warning: no checked step matched the pretrained features on every val metric; kept the best MAP@R")
    embedder.set_weights(best[3])
    return TrainResult(head, pd.DataFrame(history), best[1], best[2], time.perf_counter() - started,
                       proxies[0].numpy(), label_names)


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
