"""Metric-learning losses on a batch of L2-normalised embeddings, with in-batch mining.

All functions take ``embeddings``: float32 (batch, dim) unit vectors and
``labels``: int (batch,), and return a scalar loss. Distances are Euclidean
between unit vectors, sqrt(2 - 2 cos).
"""

from __future__ import annotations

import tensorflow as tf

from lookalike.params import LOSSES, MININGS

_BIG = 1e9


def pairwise_distances(embeddings: tf.Tensor) -> tf.Tensor:
    """(batch, batch) Euclidean distances between unit vectors; exact zeros on the diagonal."""
    similarity = tf.matmul(embeddings, embeddings, transpose_b=True)
    squared = tf.maximum(2.0 - 2.0 * similarity, 0.0)
    distances = tf.sqrt(tf.maximum(squared, 1e-12))
    return distances * (1.0 - tf.eye(tf.shape(embeddings)[0]))


def _masks(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """float (batch, batch) masks of positives (same label, not self) and negatives."""
    labels = tf.reshape(labels, (-1, 1))
    same = tf.cast(tf.equal(labels, tf.transpose(labels)), tf.float32)
    positives = same * (1.0 - tf.eye(tf.shape(labels)[0]))
    return positives, 1.0 - same


def _hinge(gap: tf.Tensor, margin: float, soft: bool) -> tf.Tensor:
    return tf.nn.softplus(gap) if soft else tf.nn.relu(gap + margin)


def _masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def random_triplet_loss(embeddings, labels, margin: float, noise, soft: bool = False) -> tf.Tensor:
    """The reference design: one random positive and one random negative per anchor.

    noise: float (batch, batch) uniform [0, 1) that picks them (argmax over the
    allowed entries), so the choice is reproducible and testable.
    """
    distances = pairwise_distances(embeddings)
    positives, negatives = _masks(labels)
    pick_positive = tf.argmax(noise * positives - (1.0 - positives), axis=1)
    pick_negative = tf.argmax(noise * negatives - (1.0 - negatives), axis=1)
    d_ap = tf.gather(distances, pick_positive, batch_dims=1)
    d_an = tf.gather(distances, pick_negative, batch_dims=1)
    valid = tf.cast((tf.reduce_sum(positives, 1) > 0) & (tf.reduce_sum(negatives, 1) > 0), tf.float32)
    return _masked_mean(_hinge(d_ap - d_an, margin, soft), valid)


def semihard_triplet_loss(embeddings, labels, margin: float, soft: bool = False) -> tf.Tensor:
    """FaceNet semi-hard mining over every (anchor, positive) pair.

    Negative = the closest one farther than the positive; if none is, the
    farthest negative (as in TF Addons' triplet_semihard_loss).
    """
    distances = pairwise_distances(embeddings)
    positives, negatives = _masks(labels)
    d_ap = distances[:, :, None]  # (anchor, positive, 1)
    d_an = distances[:, None, :]  # (anchor, 1, negative)
    negative = negatives[:, None, :]
    farther = negative * tf.cast(d_an > d_ap, tf.float32)
    closest_farther = tf.reduce_min(d_an + _BIG * (1.0 - farther), axis=2)
    farthest = tf.reduce_max(d_an * negative - _BIG * (1.0 - negative), axis=2)
    chosen = tf.where(tf.reduce_sum(farther, axis=2) > 0, closest_farther, farthest)
    has_negative = tf.cast(tf.reduce_sum(negatives, 1, keepdims=True) > 0, tf.float32)
    return _masked_mean(_hinge(distances - chosen, margin, soft), positives * has_negative)


def batch_hard_triplet_loss(embeddings, labels, margin: float, soft: bool = False) -> tf.Tensor:
    """Hermans et al. 2017: per anchor, the farthest positive against the closest negative."""
    distances = pairwise_distances(embeddings)
    positives, negatives = _masks(labels)
    hardest_positive = tf.reduce_max(distances * positives, axis=1)
    hardest_negative = tf.reduce_min(distances + _BIG * (1.0 - negatives), axis=1)
    valid = tf.cast((tf.reduce_sum(positives, 1) > 0) & (tf.reduce_sum(negatives, 1) > 0), tf.float32)
    return _masked_mean(_hinge(hardest_positive - hardest_negative, margin, soft), valid)


def multi_similarity_loss(
    embeddings, labels, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, epsilon: float = 0.1
) -> tf.Tensor:
    """Multi-similarity loss with its pair mining (Wang et al. 2019), on cosine similarity.

    Mining keeps the negatives with similarity + epsilon above the least similar
    positive, and the positives with similarity - epsilon below the most similar negative.
    """
    similarity = tf.matmul(embeddings, embeddings, transpose_b=True)
    positives, negatives = _masks(labels)
    min_positive = tf.reduce_min(similarity + _BIG * (1.0 - positives), axis=1, keepdims=True)
    max_negative = tf.reduce_max(similarity - _BIG * (1.0 - negatives), axis=1, keepdims=True)
    kept_negatives = negatives * tf.cast(similarity + epsilon > min_positive, tf.float32)
    kept_positives = positives * tf.cast(similarity - epsilon < max_negative, tf.float32)
    positive_term = tf.math.log1p(tf.reduce_sum(kept_positives * tf.exp(-alpha * (similarity - base)), 1)) / alpha
    negative_term = tf.math.log1p(tf.reduce_sum(kept_negatives * tf.exp(beta * (similarity - base)), 1)) / beta
    valid = tf.cast((tf.reduce_sum(positives, 1) > 0) & (tf.reduce_sum(negatives, 1) > 0), tf.float32)
    return _masked_mean(positive_term + negative_term, valid)


def proxy_softmax_loss(embeddings, labels, proxies, scale: float, margin: float) -> tf.Tensor:
    """Normalised softmax over one learned proxy per label, with an additive cosine margin (CosFace).

    proxies: float32 (n_labels, dim), normalised here; labels index its rows.
    """
    cosine = tf.matmul(embeddings, tf.math.l2_normalize(proxies, axis=1), transpose_b=True)
    onehot = tf.one_hot(labels, tf.shape(proxies)[0])
    logits = scale * (cosine - margin * onehot)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(onehot, logits))


def info_nce_loss(embeddings, labels, temperature: float) -> tf.Tensor:
    """Contrastive InfoNCE (NT-Xent, SimCLR: Chen et al. 2020): each anchor picks its positives (same label:
    another view of the same photo) out of every other row of the batch by softmax over cosine / temperature.

    Works without proxies, so it scales to one label per photo. With several positives per anchor their
    log-probabilities are averaged (SupCon, Khosla et al. 2020); anchors without a positive do not count.
    """
    positives, _ = _masks(labels)
    others = 1.0 - tf.eye(tf.shape(embeddings)[0])
    logits = tf.matmul(embeddings, embeddings, transpose_b=True) / temperature - _BIG * (1.0 - others)
    log_probability = logits - tf.reduce_logsumexp(logits, axis=1, keepdims=True)
    n_positives = tf.reduce_sum(positives, 1)
    per_anchor = -tf.reduce_sum(positives * log_probability, 1) / tf.maximum(n_positives, 1.0)
    return _masked_mean(per_anchor, tf.cast(n_positives > 0, tf.float32))


def metric_loss(embeddings, labels, loss: str, mining: str, margin: float, noise, proxies=None,
                scale: float = 16.0, temperature: float = 0.1) -> tf.Tensor:
    """Dispatch on the ``train.loss`` / ``train.mining`` params (``info_nce``: the instance sub-space's)."""
    if loss == "info_nce":
        return info_nce_loss(embeddings, labels, temperature)
    if loss == "multi_similarity":
        return multi_similarity_loss(embeddings, labels)
    if loss == "proxy_softmax":
        return proxy_softmax_loss(embeddings, labels, proxies, scale, margin)
    if loss not in ("triplet", "triplet_soft"):
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    soft = loss == "triplet_soft"
    if mining == "random":
        return random_triplet_loss(embeddings, labels, margin, noise, soft)
    if mining == "semihard":
        return semihard_triplet_loss(embeddings, labels, margin, soft)
    if mining == "batch_hard":
        return batch_hard_triplet_loss(embeddings, labels, margin, soft)
    raise ValueError(f"unknown mining {mining!r}; choose one of {', '.join(MININGS)}")
