"""Training the embedding head with a metric loss on cached backbone features.

With a frozen backbone a training step is a few milliseconds on CPU, so the head
trains for thousands of steps in seconds; a validation split carved from the
train split (never the test queries) picks the step to keep.

Without labels the head still learns (self-supervised): an instance sub-space (column ``@instance``)
takes each photo as its own class and its augmented views as the positives, with a contrastive loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from lookalike.catalogue.reading import missing
from lookalike.evaluation.metrics import count_relevant, evaluate_retrieval, relevance, retrieval_metrics, unit_rows
from lookalike.model.colour import COLOUR_FEATURES
from lookalike.model.losses import info_nce_loss, metric_loss
from lookalike.model.network import CompiledModel, build_head, fit_projections
from lookalike.params import BATCH_BY, FEATURES_COLUMN, INSTANCE_COLUMN
from lookalike.search.index import build_index, search

SELECTION_METRIC = "map_at_r"
MISSING = ""  # an attribute value that does not count (one of the reader's MISSING_VALUES, or NaN)
INSTANCE_DEFAULTS = {"instance_rows": 64, "instance_views": 2, "instance_temperature": 0.1}  # train.* if unset
# the picture sub-space's principal axes are fitted on at most this many train rows (a seeded sample beyond it): its
# float64 copies stay near 3 GB for a catalogue of any size, and 100,000 rows pin 256 axes of 1,920 numbers
PROJECTION_FIT_ROWS = 100_000


@dataclass
class TrainResult:
    head: keras.Model
    history: pd.DataFrame  # step, loss, and validation metrics where checked
    best_step: int
    best_validation: dict[str, float]
    seconds: float
    proxies: np.ndarray  # (n_labels, dim) proxy_softmax proxies of the first label sub-space, ``label_names`` order
    label_names: np.ndarray


def rows_by_label(labels: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """Rows grouped by label, keeping only labels with at least two rows (a positive pair)."""
    groups = pd.Series(rows).groupby(labels[rows]).apply(lambda s: s.to_numpy())
    return [g for g in groups if len(g) >= 2]


def instance_ids(n: int, items: np.ndarray | None = None) -> np.ndarray:
    """int32 (n,): each row's identity for the instance sub-space: its item where ``items`` names one (photos
    of one item are positives of each other), else the row itself."""
    if items is None:
        return np.arange(n, dtype=np.int32)
    items = np.asarray(items).astype(str)
    ids = pd.factorize(items)[0]
    unnamed = items == MISSING
    ids[unnamed] = ids.max(initial=0) + 1 + np.arange(unnamed.sum())  # no item: a class of its own
    return ids.astype(np.int32)


def rows_by_identity(ids: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` grouped by identity, singletons kept: a lone photo still has its augmented views."""
    ordered = rows[np.argsort(ids[rows], kind="stable")]
    starts = np.unique(ids[ordered], return_index=True)[1]
    return np.split(ordered, starts[1:])


def sample_instance_batch(rng: np.random.Generator, groups: list[np.ndarray], views: int, identities: int,
                          per_identity: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, views): P identities x K (row, view) pairs each, so every anchor has K - 1 views of the same
    photo (or item) as positives; pairs repeat only when an identity has fewer than K of them."""
    chosen = rng.choice(len(groups), size=min(identities, len(groups)), replace=False)
    rows, picked = [], []
    for group in (groups[c] for c in chosen):
        pairs = rng.choice(len(group) * views, size=per_identity, replace=len(group) * views < per_identity)
        rows.append(group[pairs // views])
        picked.append(pairs % views)
    return np.concatenate(rows), np.concatenate(picked)


def neighbour_groups(features: np.ndarray, rows: np.ndarray, groups: int, seed: int = 0) -> np.ndarray:
    """str (n,): a pseudo-item per row of ``rows`` (MISSING elsewhere): k-means of their unit pretrained features
    into ``groups`` clusters (DeepCluster's pseudo-labels). Given to :func:`train_head` as ``items``, photos of
    one cluster are each other's positives: the instance signal widened to look-alike photos, with no label."""
    import faiss

    vectors = np.ascontiguousarray(unit_rows(np.asarray(features[rows], np.float32)))
    kmeans = faiss.Kmeans(vectors.shape[1], int(min(groups, len(rows))), niter=20, seed=seed, spherical=True)
    kmeans.train(vectors)
    _, assigned = kmeans.index.search(vectors, 1)
    out = np.full(len(features), MISSING, dtype=object)
    out[rows] = [f"cluster-{c}" for c in assigned[:, 0]]
    return out.astype(str)


def augmented_rows(split: np.ndarray) -> np.ndarray:
    """Rows whose augmented views the features stage computes: the train split's, which training samples, then
    the val split's (an instance sub-space's validation queries are their view 1). Train rows come first so
    that their views, seeded by position, are the same whether or not val rows follow."""
    return np.concatenate([np.flatnonzero(split == "train"), np.flatnonzero(split == "val")])


def batch_groups(labels: np.ndarray, look_labels: np.ndarray | None, train_rows: np.ndarray,
                 batch_by: str) -> list[np.ndarray]:
    """The groups a P x K batch draws its P classes from: train rows by the type label, or (``batch_by:
    look``, where there are look labels) by type and colour together, so that a batch holds same-type photos
    in several colours, the look sub-space's hard negatives. Rows without the label are never drawn."""
    if batch_by not in BATCH_BY:
        raise ValueError(f"train.batch_by must be one of {', '.join(BATCH_BY)}, not {batch_by!r}")
    by = look_labels if batch_by == "look" and look_labels is not None else labels
    return rows_by_label(by, train_rows[by[train_rows] != MISSING])


def sample_pk_batch(rng: np.random.Generator, groups: list[np.ndarray], classes: int, per_class: int) -> np.ndarray:
    """P labels x K rows each (rows drawn with replacement only when a label has fewer than K)."""
    chosen = rng.choice(len(groups), size=min(classes, len(groups)), replace=False)
    picks = [rng.choice(groups[c], size=per_class, replace=len(groups[c]) < per_class) for c in chosen]
    return np.concatenate(picks)


def attribute_labels(table: pd.DataFrame, column: str) -> np.ndarray:
    """str (n,): a sub-space's label per row; ``a+b`` joins columns (type and colour together: the look).
    Missing values (the reader's :func:`~lookalike.catalogue.reading.missing`: one rule, so a row the catalogue
    report counts as unlabelled is unlabelled here too) become MISSING, so they neither pull nor push.
    INSTANCE_COLUMN names no column: all MISSING (``train_head`` labels those rows by identity); nor does
    FEATURES_COLUMN (a sub-space fitted, not trained)."""
    if column in (INSTANCE_COLUMN, FEATURES_COLUMN):
        return np.full(len(table), MISSING)
    parts = []
    for name in column.split("+"):
        values = table[name].astype("string").fillna(MISSING).str.strip()
        parts.append(np.where(missing(values).to_numpy(), MISSING, values.to_numpy(dtype=object)))
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
    (n, feature_dim), maps (n, h, w, c) or flat map rows; maps go in batches of 256 to bound activation memory
    (flat rows: pass ``batch_size``).

    The call is a traced function: eager Keras calls over maps grew memory by gigabytes.
    """
    compiled = model if isinstance(model, CompiledModel) else CompiledModel(model)
    if features.ndim > 2:
        batch_size = min(batch_size, 256)
    return np.concatenate([
        compiled(np.asarray(features[i : i + batch_size], np.float32)) for i in range(0, len(features), batch_size)
    ]) if len(features) else np.zeros((0, *compiled.output_shape), np.float32)


def instance_scores(gallery: np.ndarray, queries: np.ndarray, gallery_ids: np.ndarray,
                    query_ids: np.ndarray) -> dict[str, float]:
    """The retrieval metrics (MAP@R, P@1, ...) of ``queries`` (unit rows: augmented views) against
    ``gallery`` (unit rows: plain photos, the queries' own among them): relevant = the same identity."""
    n_relevant = count_relevant(query_ids, gallery_ids, self_in_gallery=False)
    depth = int(max(5, n_relevant.max(initial=0)))
    _, found = search(build_index(gallery, {"type": "flat"}), np.ascontiguousarray(queries, np.float32), depth)
    ranked = np.full((len(queries), depth), -1, np.int64)  # -1 (never relevant) pads a gallery of fewer rows
    ranked[:, : found.shape[1]] = found
    return retrieval_metrics(relevance(ranked, query_ids, gallery_ids), n_relevant)


def train_head(
    features: np.ndarray,
    labels: np.ndarray | None,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    model_params: dict,
    train_params: dict,
    log=print,
    backbone_top: keras.Model | None = None,
    attributes: dict[str, np.ndarray] | None = None,
    look_labels: np.ndarray | None = None,
    items: np.ndarray | None = None,
) -> TrainResult:
    """Train a head on ``features`` (views, n, ...); view 0 is the plain image.

    ``features`` are pooled backbone features (views, n, feature_dim), or, with
    ``backbone_top`` (:func:`~lookalike.model.network.build_pooled_top`), cached flat rows (views, n, h*w*c
    [+ colour descriptor]) that the top backbone blocks turn into the head's input: those blocks then train too,
    at ``train.finetune_learning_rate`` (cosine decay over ``train.finetune_steps``). A picture sub-space is
    fitted on the top's output before training and fitted again on the kept weights' output after it.
    Only ``train_rows`` are sampled (any view); ``val_rows`` are queries against
    train + val for early stopping on MAP@R (``train.selection: look``: the mean of MAP@R by ``labels`` and
    by ``look_labels``, type and colour together).

    ``attributes``: sub-space name -> label per row (``model.subspaces`` order; missing: MISSING); each
    sub-space trains on its own label with its own proxies. None: one sub-space on ``labels``, or on the
    photo itself when ``labels`` is None or all MISSING.

    A sub-space whose column is INSTANCE_COLUMN learns without labels: its batch is ``train.instance_rows``
    train rows (labelled or not) x ``train.instance_views`` views, under InfoNCE at
    ``train.instance_temperature``; a row's positives are its other views and, with ``items`` (an item id
    per row), its item's other photos. Label sub-spaces keep their P x K batch of labelled rows in the same
    step. Validation adds the instance protocol (each val row's view 1 against view 0 of train + val;
    relevant: the same row or item) as ``instance_map_at_r`` and ``instance_precision_at_1``; without
    labelled val rows its metrics are the plain ``map_at_r``, ``precision_at_1``... the kept step is chosen on.
    """
    seed = int(train_params["seed"])
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    views, n = features.shape[0], features.shape[1]
    labels = np.full(n, MISSING) if labels is None else np.asarray(labels).astype(str)
    labelled_train, label_queries = (rows[labels[rows] != MISSING] for rows in (train_rows, val_rows))
    feature_dim = features.shape[-1] if backbone_top is None else int(backbone_top.output_shape[-1])
    subspaces = model_params.get("subspaces") if attributes else None
    head = build_head(feature_dim, model_params["hidden_dim"], model_params["embedding_dim"],
                      train_params["dropout"], model_params["embedding"], seed, subspaces,
                      COLOUR_FEATURES if model_params.get("colour_descriptor") else 0)
    batch_size = 4096 if backbone_top is None else 256  # rows of maps through the top blocks: bounded activations
    projected = any(spec["column"] == FEATURES_COLUMN for spec in (subspaces or {}).values())
    fit_rows = train_rows if len(train_rows) <= PROJECTION_FIT_ROWS else np.sort(
        np.random.default_rng(seed).choice(train_rows, PROJECTION_FIT_ROWS, replace=False))

    def fit_picture() -> None:
        """The picture sub-space's axes, on the head's input of the train split (fine-tuning: the top's output)."""
        fit_projections(head, features[0, fit_rows] if backbone_top is None
                        else embed_features(backbone_top, features[0, fit_rows], batch_size))

    if projected:
        fit_picture()
    # (flat maps ->) embedding, with the per-sub-space outputs for the loss
    embedder = head if backbone_top is None else keras.Model(backbone_top.input, head(backbone_top.output))
    steps = int(train_params["finetune_steps"] if backbone_top is not None else train_params["steps"])
    optimizer = keras.optimizers.AdamW(train_params["learning_rate"], weight_decay=train_params["weight_decay"])
    top_variables = [] if backbone_top is None else backbone_top.trainable_variables
    top_optimizer = keras.optimizers.AdamW(
        keras.optimizers.schedules.CosineDecay(float(train_params["finetune_learning_rate"]), steps),
        weight_decay=train_params["weight_decay"]) if top_variables else None
    loss_name, mining, margin = train_params["loss"], train_params["mining"], float(train_params["margin"])
    specs = {name: spec for name, spec in (subspaces or {}).items() if spec["column"] != FEATURES_COLUMN} \
        or {"type": {"column": INSTANCE_COLUMN if len(labelled_train) == 0 else "labels"}}
    attributes = attributes or {"type": labels}
    is_instance = [spec["column"] == INSTANCE_COLUMN for spec in specs.values()]
    ids = instance_ids(n, items)
    codes = [ids if instance else label_codes(attributes[name], train_rows)
             for name, instance in zip(specs, is_instance, strict=True)]
    label_names = np.array(sorted(set(labels[train_rows].tolist()) - {MISSING}))

    # One step = a P x K batch of labelled rows (label sub-spaces) then P' rows x K' views (instance sub-spaces).
    def knob(name: str) -> float:
        return train_params.get(name, INSTANCE_DEFAULTS[name])

    groups = [] if all(is_instance) else batch_groups(labels, look_labels, train_rows,
                                                      train_params.get("batch_by", "label"))
    label_size = min(train_params["classes_per_batch"], len(groups)) * train_params["images_per_class"]
    instance_groups = rows_by_identity(ids, train_rows) if any(is_instance) else []
    instance_rows, instance_views = int(knob("instance_rows")), int(knob("instance_views"))
    instance_size = min(instance_rows, len(instance_groups)) * instance_views
    if not label_size and not instance_size:
        raise ValueError(f"nothing to train on: no label has two train rows; a sub-space with column "
                         f"{INSTANCE_COLUMN} trains without labels")
    check_instance = any(is_instance) and len(val_rows) > 0
    if any(is_instance) and views < 2:
        raise ValueError("an instance sub-space needs augmented views (features.augmented_views >= 1)")
    if check_instance:
        copies = np.all((features[1, val_rows] == features[0, val_rows]).reshape(len(val_rows), -1), axis=1)
        if copies.any():
            raise ValueError(f"{copies.sum()} val rows have no augmented view (view 1 = view 0), which the instance "
                             "validation queries with: rerun the features stage with the instance sub-space")

    # Proxies (one learned vector per label and sub-space) are used by proxy_softmax only; not part of the model.
    shapes = head.output_shape[1:] if len(head.outputs) > 1 else [head.output_shape]  # one per trained sub-space
    part_dims = [int(shape[-1]) for shape in shapes]
    proxies = [tf.Variable(rng.normal(0.0, 0.01, (1 if instance else max(1, int(c.max()) + 1), dim))
                           .astype(np.float32)) for c, dim, instance in zip(codes, part_dims, is_instance, strict=True)]
    trained_proxies = [p for p, instance in zip(proxies, is_instance, strict=True) if not instance and label_size]
    variables = head.trainable_variables + (trained_proxies if loss_name == "proxy_softmax" else [])
    scale, temperature = float(train_params["proxy_scale"]), float(knob("instance_temperature"))

    def subspace_loss(embeddings, batch_codes, part_proxies, noise, instance: bool):
        if instance:  # thousands of one-photo classes: contrastive, no proxies
            return info_nce_loss(embeddings, batch_codes, temperature)
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
            loss = tf.add_n([
                subspace_loss(part[label_size:] if instance else part[:label_size], part_codes, part_proxies, noise,
                              instance)
                for part, part_codes, part_proxies, instance in zip(parts, batch_codes, proxies, is_instance,
                                                                    strict=True)
                if instance or label_size])
        gradients = tape.gradient(loss, variables + top_variables)
        optimizer.apply_gradients(zip(gradients[: len(variables)], variables, strict=True))
        if top_variables:
            top_optimizer.apply_gradients(zip(gradients[len(variables):], top_variables, strict=True))
        return loss

    gallery_rows = np.sort(np.concatenate([train_rows, val_rows]))
    label_positions = np.searchsorted(gallery_rows, label_queries)
    validating = check_instance or len(label_queries) > 0

    compiled_embedder = CompiledModel(embedder)  # traced once; reads the live weights at every check

    def scores_of(gallery: np.ndarray, queries: np.ndarray | None) -> dict[str, float]:
        """Val metrics of the gallery (view 0 of train + val) and the instance queries (view 1 of val)."""
        scores: dict[str, float] = {}
        if len(label_queries):
            scores = evaluate_retrieval(gallery, labels[gallery_rows], label_positions)[0]
            if look_labels is not None:
                look = evaluate_retrieval(gallery, look_labels[gallery_rows], label_positions)[0]["map_at_r"]
                scores["look_map_at_r"] = look
                scores["look"] = (scores["map_at_r"] + look) / 2
        if queries is not None:
            found = instance_scores(gallery, queries, ids[gallery_rows], ids[val_rows])
            scores = scores or dict(found)  # no labels: the instance protocol is the val metric
            scores.update({f"instance_{name}": found[name] for name in ("map_at_r", "precision_at_1")})
        return scores

    def validate() -> dict[str, float]:
        queries = embed_features(compiled_embedder, features[1, val_rows], batch_size) if check_instance else None
        return scores_of(embed_features(compiled_embedder, features[0, gallery_rows], batch_size), queries)

    # "no_regression": the kept step must match or beat the pretrained features on every val metric,
    # so training never makes search worse for the queries the head would otherwise lose.
    floor: dict[str, float] = {}
    if train_params["selection"] == "no_regression" and validating:
        if backbone_top is not None:
            raise ValueError("train.selection: no_regression needs pooled features; set train.finetune_blocks: 0")
        floor = scores_of(unit_rows(features[0, gallery_rows]),
                          unit_rows(features[1, val_rows]) if check_instance else None)
        floor.pop("look", None)
        log("pretrained features on val: " + ", ".join(f"{k} {v:.4f}" for k, v in floor.items()))

    looks = ("look", "look_map_at_r")
    selection = train_params["selection"] if train_params["selection"] in looks and look_labels is not None \
        else SELECTION_METRIC

    def criterion(scores: dict[str, float]) -> float:
        regresses = any(scores[name] < value for name, value in floor.items())
        return scores[selection] - (2.0 if regresses else 0.0)  # any step that does not regress wins

    history, best = [], (-3.0, 0, {}, embedder.get_weights())
    checks_without_gain, started = 0, time.perf_counter()
    for step_number in range(1, steps + 1):
        rows = sample_pk_batch(rng, groups, train_params["classes_per_batch"], train_params["images_per_class"]
                               ) if label_size else np.zeros(0, np.int64)
        view = rng.integers(0, views, size=len(rows))
        noise = rng.random((len(rows), len(rows)), dtype=np.float32)
        if instance_size:
            more_rows, more_views = sample_instance_batch(rng, instance_groups, views, instance_rows, instance_views)
            rows, view = np.concatenate([rows, more_rows]), np.concatenate([view, more_views])
        batch = tf.convert_to_tensor(features[view, rows], tf.float32)
        batch_codes = [tf.constant(c[rows[label_size:]] if instance else c[rows[:label_size]])
                       for c, instance in zip(codes, is_instance, strict=True)]
        loss = float(step(batch, batch_codes, noise))
        record = {"step": step_number, "loss": loss}
        if step_number % train_params["eval_every"] == 0 or step_number == steps:
            scores = validate() if validating else {SELECTION_METRIC: -loss}
            record.update({f"val_{k}": v for k, v in scores.items()})
            if criterion(scores) > best[0]:
                best, checks_without_gain = (criterion(scores), step_number, scores, embedder.get_weights()), 0
            else:
                checks_without_gain += 1
            others = "".join(f", {name} MAP@R {scores[f'{name}_map_at_r']:.4f}" for name in ("look", "instance")
                             if f"{name}_map_at_r" in scores)
            log(f"step {step_number}: loss {loss:.4f}, val MAP@R {scores[SELECTION_METRIC]:.4f}{others} "
                f"(kept: step {best[1]}, {time.perf_counter() - started:.0f} s)")
        history.append(record)
        if checks_without_gain >= train_params["patience"]:
            log(f"early stop at step {step_number}: no gain in {checks_without_gain} checks")
            break
    if floor and best[0] < 0:
        log("warning: no checked step matched the pretrained features on every val metric; kept the best MAP@R")
    embedder.set_weights(best[3])
    if projected and backbone_top is not None:
        fit_picture()  # the kept top's picture: the axes follow the features the stored vectors are made of
    first_label = next((i for i, instance in enumerate(is_instance) if not instance), None)
    kept_proxies = proxies[first_label].numpy() if first_label is not None else np.zeros((0, part_dims[0]), np.float32)
    return TrainResult(head, pd.DataFrame(history), best[1], best[2], time.perf_counter() - started,
                       kept_proxies, label_names)


def maps_description(params: dict, shape: tuple[int, ...]) -> dict:
    """What cached maps were cut for: the train stage refuses maps whose description differs."""
    backbone = params["backbone"]
    return {"backbone": backbone["name"], "weights": backbone["weights"], "image_size": backbone["image_size"],
            "resize_mode": backbone["resize_mode"], "finetune_blocks": params["train"]["finetune_blocks"],
            "colour_descriptor": bool(params["model"].get("colour_descriptor")), "shape": [int(d) for d in shape]}


def freeze_for_finetuning(backbone: keras.Model, backbone_top: keras.Model) -> None:
    """Only the top blocks' convolutions train; batch-norm layers keep their ImageNet statistics
    (a frozen Keras BatchNormalization also runs in inference mode)."""
    for layer in backbone.layers:
        layer.trainable = False
    for layer in backbone_top.layers:
        layer.trainable = bool(layer.weights) and not isinstance(layer, keras.layers.BatchNormalization)
