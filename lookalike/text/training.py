"""Training the text tower into the build's image embedding space (TensorFlow; the query path is numpy).

Each train-split item gives several *views* of its words: everything, the title alone, subsets of the
attribute phrases ("red", "red dresses women") and titles with words dropped, so short shopper queries
are trained for as well as full titles. The loss is InfoNCE with a learned temperature in both directions
(text -> photo and photo -> text) with *multi-positive* targets: a view that asserts only "red dresses"
is right about every red dress in the batch, not only its own, so those are not pushed away as negatives.
The negatives are the batch (``negatives: batch``) or every train photo (``negatives: all``; the image
side is fixed, so this costs one matrix product). The val split picks the epoch (early stopping).
Which columns are the words, the title and the val queries comes from the catalogue's roles
(:class:`lookalike.text.evaluation.TextColumns`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lookalike.text.evaluation import TextColumns, attribute_queries, precision_at, relevant_mask, title_metrics
from lookalike.text.tower import (
    PretrainedTokenizer,
    TextTower,
    build_vocabulary,
    field_value,
    pad_ids,
    read_safetensors,
    unit,
    words,
)


@dataclass
class Views:
    """Text views of items: the text, the item row it came from, and which fields it asserts (for targets)."""

    texts: list[str]
    rows: np.ndarray  # int64 (v,): the item each view describes
    asserts: np.ndarray  # bool (v, fields): the view claims the item's value of that field


def field_codes(items: pd.DataFrame, fields: Sequence[str]) -> np.ndarray:
    """int64 (n, fields): one code per distinct normalised value of each word field, 0 where it is missing."""
    codes = np.zeros((len(items), len(fields)), dtype=np.int64)
    for f, name in enumerate(fields):
        values = [field_value(v).lower() if name in items else "" for v in
                  (items[name] if name in items else [""] * len(items))]
        lookup: dict[str, int] = {}
        codes[:, f] = [0 if not v else lookup.setdefault(v, len(lookup) + 1) for v in values]
    return codes


def make_views(items: pd.DataFrame, rows: np.ndarray, per_item: int, seed: int, fields: Sequence[str],
               title: str | None = None) -> Views:
    """``per_item`` views of each of ``rows`` over the word ``fields``: all words, the title, then random
    subsets of the other fields' phrases and title word dropout (seeded). ``title``: the field that is an
    item's name (a view of it asserts the title alone); None, or not among ``fields``: no title views."""
    fields = list(fields)
    at = fields.index(title) if title in fields else None
    rng = np.random.default_rng(seed)
    texts, owners, asserts = [], [], []
    for row in rows:
        record = items.iloc[int(row)]
        name = field_value(record.get(title, "")) if at is not None else ""
        attrs = [(f, field_value(record.get(column, ""))) for f, column in enumerate(fields) if f != at]
        attrs = [(f, v) for f, v in attrs if v]
        candidates = []
        everything = [(at, name)] * bool(name) + attrs
        candidates.append(everything)
        if name:
            candidates.append([(at, name)])
        for _ in range(max(0, per_item - len(candidates))):
            if name and rng.random() < 0.35:
                title_words = name.split()
                keep = [w for w in title_words if rng.random() < 0.6] or [title_words[rng.integers(len(title_words))]]
                # a title with words dropped still asserts only the title: its own item (and exact twins)
                candidates.append([(at, " ".join(keep))])
            elif attrs:
                size = int(rng.integers(1, min(3, len(attrs)) + 1))
                picked = sorted(rng.choice(len(attrs), size=size, replace=False).tolist())
                candidates.append([attrs[i] for i in picked])
        for view in candidates[:per_item]:
            if not view:
                continue
            flags = np.zeros(len(fields), dtype=bool)
            flags[[f for f, _ in view]] = True
            texts.append(" ".join(v for _, v in view))
            owners.append(int(row))
            asserts.append(flags)
    return Views(texts, np.array(owners, dtype=np.int64),
                 np.array(asserts, dtype=bool).reshape(-1, len(fields)))


def match_matrix(view_codes: np.ndarray, view_asserts: np.ndarray, item_codes: np.ndarray,
                 view_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
    """float32 (views, items): 1 where the item has every value the view asserts, or is the view's own item."""
    equal = view_codes[:, None, :] == item_codes[None, :, :]
    ok = (equal | ~view_asserts[:, None, :]).all(axis=2)
    ok |= view_rows[:, None] == item_rows[None, :]
    return ok.astype(np.float32)


def _pretrained() -> tuple[np.ndarray, Path]:
    from lookalike.text.tower import pretrained_files

    weights, tokenizer = pretrained_files()
    return read_safetensors(weights, "embedding.weight"), tokenizer


def train_text_tower(items: pd.DataFrame, image_embeddings: np.ndarray, config: dict[str, Any],
                     columns: TextColumns, seed: int = 0,
                     log: Callable[[str], object] = print,
                     image_projection: int = 0) -> tuple[TextTower, dict[str, Any]]:
    """Train on the train split, select the epoch on val; returns the tower and a training report.

    ``items`` carries a ``split`` column; row i of ``items`` is row i of ``image_embeddings`` (unit vectors).
    ``columns`` (:func:`lookalike.text.evaluation.text_columns`): the word columns, the title, the val queries.
    ``image_projection`` > 0: the image side learns too (a study of locked features, as in LiT): the gallery is
    the unit rows of ``image_embeddings @ W``, W (d, image_projection) trained with the tower; the kept epoch's W
    is the report's ``image_projection`` (the gallery to search is ``unit(image_embeddings @ W)``).
    """
    fields = list(columns.words)
    missing = [c for c in fields if c not in items]
    if not fields or len(missing) == len(fields):
        raise ValueError("the catalogue's description names no word columns the items carry (words: "
                         f"{', '.join(fields) or 'none'}): the text tower has nothing to learn from")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    split = items["split"].to_numpy()
    train_rows = np.flatnonzero(split == "train")
    val_rows = np.flatnonzero(split == "val")
    images = unit(image_embeddings)
    dim = int(image_projection) or images.shape[1]
    codes = field_codes(items, fields)
    texts_all = [" ".join(field_value(items.iloc[r].get(f, "")) for f in fields) for r in train_rows]
    vocab = build_vocabulary(texts_all, int(config["min_count"]))
    index = {w: i + 1 for i, w in enumerate(vocab)}
    views = make_views(items, train_rows, int(config["views_per_item"]), seed, fields, columns.title)
    word_ids = pad_ids([[index[w] for w in words(t) if w in index] for t in views.texts])
    use_pre = config["pretrained"] == "wordllama"
    tokenizer = None
    if use_pre:
        pre_table, tokenizer_file = _pretrained()
        tokenizer = PretrainedTokenizer(tokenizer_file)
        pre_ids = pad_ids(tokenizer.ids(views.texts))
    rng = np.random.default_rng(seed)
    d_word = int(config["word_dim"])
    d_in = d_word + (pre_table.shape[1] if use_pre else 0)
    hidden = int(config["hidden_dim"])
    init = tf.keras.initializers.GlorotUniform(seed=seed)
    variables = {
        "word_table": tf.Variable(rng.normal(0, 0.1, (len(vocab) + 1, d_word)).astype(np.float32)),
        "word_logits": tf.Variable(np.zeros(len(vocab) + 1, np.float32)),
        "w1": tf.Variable(init((d_in, hidden))), "b1": tf.Variable(tf.zeros(hidden)),
        "w2": tf.Variable(init((hidden, dim))), "b2": tf.Variable(tf.zeros(dim)),
        "skip": tf.Variable(init((d_in, dim))),
        "log_scale": tf.Variable(np.log(1 / float(config["temperature"])).astype(np.float32)),
    }
    projection = tf.Variable(init((images.shape[1], dim))) if image_projection else None

    def project(gallery):  # the image side: fixed targets, or the learned projection of the locked features
        return gallery if projection is None else tf.math.l2_normalize(gallery @ projection, axis=1)
    if use_pre:
        pre_const = tf.constant(pre_table.astype(np.float32))
        variables["pre_logits"] = tf.Variable(np.zeros(len(pre_table), np.float32))

    def pool(table, logits, ids):
        mask = ids > 0
        weights = tf.where(mask, tf.gather(logits, ids), -1e9)
        weights = tf.nn.softmax(weights, axis=1) * tf.cast(mask, tf.float32)
        weights = weights / tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1e-12)
        return tf.einsum("nl,nld->nd", weights, tf.gather(table, ids))

    def encode(w_ids, p_ids, training):
        parts = [pool(variables["word_table"], variables["word_logits"], w_ids)]
        if use_pre:
            parts.append(pool(pre_const, variables["pre_logits"], p_ids))
        x = tf.concat(parts, axis=1)
        if training and config["dropout"]:
            x = tf.nn.dropout(x, float(config["dropout"]), seed=seed)
        h = tf.nn.relu(x @ variables["w1"] + variables["b1"])
        return tf.math.l2_normalize(h @ variables["w2"] + variables["b2"] + x @ variables["skip"], axis=1)

    optimizer = tf.keras.optimizers.Adam(float(config["learning_rate"]))
    trainable = list(variables.values()) + ([projection] if projection is not None else [])
    all_negatives = config["negatives"] == "all"
    train_images = tf.constant(images[train_rows])

    @tf.function(reduce_retracing=True)
    def step(w_ids, p_ids, targets_ti, gallery, targets_it, positions):
        with tf.GradientTape() as tape:
            text = encode(w_ids, p_ids, True)
            scale = tf.exp(tf.minimum(variables["log_scale"], np.log(100.0)))
            logits = scale * text @ tf.transpose(project(gallery))  # (B, G)
            loss_ti = -tf.reduce_mean(tf.reduce_sum(targets_ti * tf.nn.log_softmax(logits, axis=1), axis=1))
            # photo -> text over the batch's own photos (columns ``positions`` of the gallery)
            own = tf.gather(logits, positions, axis=1)  # (B texts, B photos)
            loss_it = -tf.reduce_mean(tf.reduce_sum(targets_it * tf.nn.log_softmax(tf.transpose(own), axis=1),
                                                    axis=1))
            loss = (loss_ti + loss_it) / 2 + float(config["weight_decay"]) * tf.reduce_sum(
                tf.square(variables["word_table"]))
        grads = tape.gradient(loss, trainable)
        optimizer.apply_gradients(zip(grads, trainable, strict=True))
        return loss

    def snapshot() -> dict[str, np.ndarray]:
        out = {name: v.numpy() for name, v in variables.items() if name != "log_scale"}
        out["vocab"] = np.array(vocab, dtype=str)
        if use_pre:
            out["pre_table"] = pre_table.astype(np.float16)
        return out

    view_codes = codes[views.rows]
    position_of = {int(r): i for i, r in enumerate(train_rows)}
    batch = int(config["batch_size"])
    by_item: dict[int, list[int]] = {}
    for v, r in enumerate(views.rows.tolist()):
        by_item.setdefault(r, []).append(v)
    items_with_views = np.array(sorted(by_item), dtype=np.int64)
    history, best, best_score, best_epoch, waited = [], None, -np.inf, 0, 0
    started = time.perf_counter()
    for epoch in range(1, int(config["epochs"]) + 1):
        order = rng.permutation(items_with_views)
        losses = []
        for start in range(0, len(order), batch):
            owners = order[start:start + batch]
            if len(owners) < 2:
                continue
            picked = np.array([by_item[int(r)][rng.integers(len(by_item[int(r)]))] for r in owners])
            positions = np.array([position_of[int(r)] for r in owners], dtype=np.int32)
            if all_negatives:
                gallery_rows = train_rows
                gallery = train_images
            else:
                gallery_rows = owners
                gallery = tf.constant(images[owners])
                positions = np.arange(len(owners), dtype=np.int32)
            targets = match_matrix(view_codes[picked], views.asserts[picked], codes[gallery_rows],
                                   views.rows[picked], gallery_rows)
            targets_ti = targets / targets.sum(axis=1, keepdims=True)
            own = targets[:, positions].T  # (B photos, B texts)
            targets_it = own / own.sum(axis=1, keepdims=True)
            w_ids = tf.constant(pad_ids([word_ids[p][word_ids[p] > 0] for p in picked]))
            p_ids = tf.constant(pad_ids([pre_ids[p][pre_ids[p] > 0] for p in picked])) if use_pre else \
                tf.zeros((len(picked), 1), tf.int32)
            losses.append(float(step(w_ids, p_ids, tf.constant(targets_ti), gallery, tf.constant(targets_it),
                                     tf.constant(positions))))
        tower = TextTower(snapshot(), tokenizer)
        searched = images if projection is None else unit(images @ projection.numpy())
        val = validation_scores(tower, items, searched, val_rows, np.flatnonzero(split != "test"),
                                int(config["val_min_relevant"]), columns)
        score = val["score"]
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), **val,
                        "temperature": float(1 / np.exp(variables["log_scale"].numpy()))})
        log(f"epoch {epoch}: loss {history[-1]['loss']:.4f}, val title MRR {val['title_mrr']:.4f}, "
            f"attribute P@10 {val['attribute_precision_at_10']:.4f}, score {score:.4f}")
        if score > best_score:
            best, best_score, best_epoch, waited = snapshot(), score, epoch, 0
            best_projection = None if projection is None else projection.numpy()
        else:
            waited += 1
            if waited >= int(config["patience"]):
                log(f"early stop at epoch {epoch}: best val score {best_score:.4f} at epoch {best_epoch}")
                break
    report = {"best_epoch": best_epoch, "epochs_run": len(history), "best_val_score": float(best_score),
              "vocabulary": len(vocab), "train_views": len(views.texts), "train_items": int(len(train_rows)),
              "val_items": int(len(val_rows)), "seconds": round(time.perf_counter() - started, 1),
              "history": history}
    if projection is not None:
        report["image_projection"] = best_projection
    return TextTower(best, tokenizer), report


def validation_scores(tower: TextTower, items: pd.DataFrame, images: np.ndarray, val_rows: np.ndarray,
                      gallery_rows: np.ndarray, min_relevant: int, columns: TextColumns) -> dict[str, float]:
    """Selection score on the val split, never touching test: val titles against the train+val photos
    (own photo relevant), and the one-column attribute queries (``columns.single``) against the val photos
    alone; score = the mean of the parts the catalogue has."""
    gallery = images[gallery_rows]
    asks_titles = columns.title_queries and columns.title in items
    titles = [field_value(t) for t in items[columns.title].iloc[val_rows]] if asks_titles else []
    keep = [i for i, t in enumerate(titles) if t]
    result = {"title_mrr": 0.0, "attribute_precision_at_10": 0.0}
    if keep:
        scores = tower.encode([titles[i] for i in keep]) @ gallery.T
        ranked = gallery_rows[np.argsort(-scores, axis=1, kind="stable")[:, :100]]
        result["title_mrr"] = title_metrics(ranked, val_rows[keep])["title_mrr"]
    val_items = items.iloc[val_rows].reset_index(drop=True)
    precisions = []
    for name in columns.single:
        asked = columns.attributes[name]
        if not all(c in items for c in asked):
            continue
        queries = attribute_queries(val_items, asked, min_relevant)
        if not queries:
            continue
        scores = tower.encode([q for q, _ in queries]) @ images[val_rows].T
        ranked = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        masks = [relevant_mask(val_items, asked, values) for _, values in queries]
        precisions.append(precision_at(ranked, masks, 10))
    result["attribute_precision_at_10"] = float(np.mean(precisions)) if precisions else 0.0
    parts = ([result["title_mrr"]] if keep else []) + ([result["attribute_precision_at_10"]] if precisions else [])
    result["score"] = float(np.mean(parts)) if parts else 0.0
    return result
