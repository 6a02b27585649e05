"""lookalike.model.losses on tiny hand-made batches of 2-D unit vectors, against numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from lookalike.model.losses import (
    batch_hard_triplet_loss,
    info_nce_loss,
    metric_loss,
    multi_similarity_loss,
    pairwise_distances,
    proxy_softmax_loss,
    random_triplet_loss,
    semihard_triplet_loss,
)


def unit_vectors(degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def chord(degrees: float) -> float:
    """Euclidean distance between unit vectors ``degrees`` apart: 2 sin(theta / 2)."""
    return 2 * math.sin(math.radians(degrees) / 2)


def relu(x: float) -> float:
    return max(x, 0.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def np_distances(embeddings: np.ndarray) -> np.ndarray:
    e = embeddings.astype(np.float64)
    distances = np.sqrt(np.maximum(2 - 2 * e @ e.T, 0))
    np.fill_diagonal(distances, 0.0)
    return distances


def value(tensor) -> float:
    return float(np.asarray(tensor))


# Four points, two labels; angles in degrees.
#   0: label 0 at   0      1: label 0 at  60
#   2: label 1 at  40      3: label 1 at 130
ANGLES = [0, 60, 40, 130]
EMBEDDINGS = unit_vectors(ANGLES)
LABELS = np.array([0, 0, 1, 1])
MARGIN = 0.2


def test_pairwise_distances_match_numpy_with_zero_diagonal():
    distances = np.asarray(pairwise_distances(tf.constant(EMBEDDINGS)))
    np.testing.assert_allclose(distances, np_distances(EMBEDDINGS), atol=1e-5)
    assert (np.diag(distances) == 0).all()
    assert distances[0, 3] == pytest.approx(chord(130), abs=1e-5)


# ---------------------------------------------------------------- random triplets


def test_random_triplet_loss_uses_the_positive_and_negative_the_noise_picks():
    labels = np.array([0, 0, 0, 1, 1, 1])
    embeddings = unit_vectors([0, 30, 80, 50, 120, 200])
    positive = [2, 0, 1, 5, 3, 4]  # one allowed positive per anchor
    negative = [4, 5, 3, 0, 2, 1]  # one allowed negative per anchor
    noise = np.full((6, 6), 0.5, dtype=np.float32)
    np.fill_diagonal(noise, 0.99)  # the anchor itself must never be picked, however large its noise
    for anchor in range(6):
        noise[anchor, positive[anchor]] = 0.9
        noise[anchor, negative[anchor]] = 0.9
    d = np_distances(embeddings)
    expected = np.mean([relu(d[a, positive[a]] - d[a, negative[a]] + MARGIN) for a in range(6)])
    loss = random_triplet_loss(tf.constant(embeddings), tf.constant(labels), MARGIN, tf.constant(noise))
    assert value(loss) == pytest.approx(expected, abs=1e-5)
    assert expected > 0  # the case is not trivially zero


def test_random_triplet_loss_follows_a_different_noise():
    labels = np.array([0, 0, 0, 1, 1, 1])
    embeddings = unit_vectors([0, 30, 80, 50, 120, 200])
    noise_a = np.random.default_rng(0).uniform(size=(6, 6)).astype(np.float32)
    d = np_distances(embeddings)
    same = labels[:, None] == labels[None, :]
    expected = []
    for anchor in range(6):
        pos = [j for j in range(6) if same[anchor, j] and j != anchor]
        neg = [j for j in range(6) if not same[anchor, j]]
        p = max(pos, key=lambda j: noise_a[anchor, j])
        n = max(neg, key=lambda j: noise_a[anchor, j])
        expected.append(softplus(d[anchor, p] - d[anchor, n]))
    loss = random_triplet_loss(tf.constant(embeddings), tf.constant(labels), MARGIN, tf.constant(noise_a), soft=True)
    assert value(loss) == pytest.approx(np.mean(expected), abs=1e-5)


def test_random_triplet_loss_ignores_anchors_without_a_positive():
    # anchor 2 is alone in its label: only anchors 0 and 1 count
    embeddings = unit_vectors([0, 90, 45])
    labels = np.array([0, 0, 1])
    noise = np.zeros((3, 3), dtype=np.float32)
    # anchor 0: positive 1 (d90), negative 2 (d45); anchor 1: positive 0 (d90), negative 2 (d45)
    expected = relu(chord(90) - chord(45) + MARGIN)
    loss = random_triplet_loss(tf.constant(embeddings), tf.constant(labels), MARGIN, tf.constant(noise))
    assert value(loss) == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------- semi-hard


def semihard_reference(embeddings: np.ndarray, labels: np.ndarray, margin: float) -> float:
    d = np_distances(embeddings)
    losses = []
    for a in range(len(labels)):
        negatives = [d[a, n] for n in range(len(labels)) if labels[n] != labels[a]]
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a] or not negatives:
                continue
            farther = [x for x in negatives if x > d[a, p]]
            chosen = min(farther) if farther else max(negatives)
            losses.append(relu(d[a, p] - chosen + margin))
    return float(np.mean(losses))


def test_semihard_loss_by_hand():
    # (anchor, positive): d_ap; negatives' distances; the chosen negative; hinge with margin 0.2
    # (0, 1): d60 = 1.0;   negs d40 = 0.684, d130 = 1.813; semi-hard: d130 -> relu(1.0 - 1.813 + 0.2) = 0
    # (1, 0): d60 = 1.0;   negs d20 = 0.347, d70 = 1.147;  semi-hard: d70  -> relu(1.0 - 1.147 + 0.2) = 0.053
    # (2, 3): d90 = 1.414; negs d40 = 0.684, d20 = 0.347;  none farther: the farthest, d40 -> 1.414 - 0.684 + 0.2
    # (3, 2): d90 = 1.414; negs d130 = 1.813, d70 = 1.147; semi-hard: d130 -> relu(1.414 - 1.813 + 0.2) = 0
    expected = (relu(chord(60) - chord(70) + MARGIN) + relu(chord(90) - chord(40) + MARGIN)) / 4
    loss = semihard_triplet_loss(tf.constant(EMBEDDINGS), tf.constant(LABELS), MARGIN)
    assert value(loss) == pytest.approx(expected, abs=1e-5)


def test_semihard_loss_picks_the_closest_of_several_farther_negatives():
    # points: 0 at 0, 1 at 30 (label 0); 2 at 50, 3 at 110 (label 1); margin 1.0
    # (0, 1): d30; negs d50, d110 both farther -> closest d50:   1 + d30 - d50
    # (1, 0): d30; negs d20, d80: farther d80                  -> 1 + d30 - d80
    # (2, 3): d60; negs d50, d20: none farther -> farthest d50 -> 1 + d60 - d50
    # (3, 2): d60; negs d110, d80 both farther -> closest d80  -> 1 + d60 - d80
    embeddings = unit_vectors([0, 30, 50, 110])
    labels = np.array([0, 0, 1, 1])
    expected = (4 + 2 * chord(30) + 2 * chord(60) - 2 * chord(50) - 2 * chord(80)) / 4
    loss = semihard_triplet_loss(tf.constant(embeddings), tf.constant(labels), margin=1.0)
    assert value(loss) == pytest.approx(expected, abs=1e-5)
    assert value(loss) == pytest.approx(semihard_reference(embeddings, labels, 1.0), abs=1e-5)


def test_semihard_loss_falls_back_to_the_farthest_negative():
    # every negative is closer to the anchor than its positive: the farthest negative is used
    embeddings = unit_vectors([0, 170, 10, 20])
    labels = np.array([0, 0, 1, 1])
    # (0, 1): d170; negatives d10, d20 -> none farther, fallback d20: 1.992 - 0.347 + 0.2
    d = np_distances(embeddings)
    first_pair = relu(d[0, 1] - d[0, 3] + MARGIN)
    assert first_pair == pytest.approx(chord(170) - chord(20) + MARGIN, abs=1e-6)
    loss = semihard_triplet_loss(tf.constant(embeddings), tf.constant(labels), MARGIN)
    assert value(loss) == pytest.approx(semihard_reference(embeddings, labels, MARGIN), abs=1e-5)


def test_semihard_loss_matches_reference_on_a_random_batch():
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(12, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = np.repeat(np.arange(4), 3)
    loss = semihard_triplet_loss(tf.constant(embeddings), tf.constant(labels), 0.3)
    assert value(loss) == pytest.approx(semihard_reference(embeddings, labels, 0.3), abs=1e-5)


# ---------------------------------------------------------------- batch hard


def test_batch_hard_loss_by_hand():
    # anchor: hardest (farthest) positive vs hardest (closest) negative
    # 0: pos d60, negs d40, d130 -> d60 - d40
    # 1: pos d60, negs d20, d70  -> d60 - d20
    # 2: pos d90, negs d40, d20  -> d90 - d20
    # 3: pos d90, negs d130, d70 -> d90 - d70
    gaps = [chord(60) - chord(40), chord(60) - chord(20), chord(90) - chord(20), chord(90) - chord(70)]
    hard = batch_hard_triplet_loss(tf.constant(EMBEDDINGS), tf.constant(LABELS), MARGIN)
    assert value(hard) == pytest.approx(np.mean([relu(g + MARGIN) for g in gaps]), abs=1e-5)
    soft = batch_hard_triplet_loss(tf.constant(EMBEDDINGS), tf.constant(LABELS), MARGIN, soft=True)
    assert value(soft) == pytest.approx(np.mean([softplus(g) for g in gaps]), abs=1e-5)


def test_batch_hard_uses_the_farthest_positive():
    # anchor 0 at 0 has positives at 10 and 80; the hardest positive is d80
    embeddings = unit_vectors([0, 10, 80, 180, 200, 190])
    labels = np.array([0, 0, 0, 1, 1, 1])
    d = np_distances(embeddings)
    expected = []
    for a in range(6):
        pos = [d[a, j] for j in range(6) if labels[j] == labels[a] and j != a]
        neg = [d[a, j] for j in range(6) if labels[j] != labels[a]]
        expected.append(relu(max(pos) - min(neg) + 1.5))
    loss = batch_hard_triplet_loss(tf.constant(embeddings), tf.constant(labels), 1.5)
    assert value(loss) == pytest.approx(np.mean(expected), abs=1e-5)
    # anchor 0: farthest positive 80 (d80), closest negative 200 (d160)
    assert expected[0] == pytest.approx(relu(chord(80) - chord(160) + 1.5), abs=1e-6)


# ---------------------------------------------------------------- multi-similarity


def multi_similarity_reference(embeddings, labels, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1) -> float:
    s = embeddings.astype(np.float64) @ embeddings.astype(np.float64).T
    losses = []
    for a in range(len(labels)):
        pos = [s[a, j] for j in range(len(labels)) if labels[j] == labels[a] and j != a]
        neg = [s[a, j] for j in range(len(labels)) if labels[j] != labels[a]]
        if not pos or not neg:
            continue
        kept_neg = [x for x in neg if x + epsilon > min(pos)]
        kept_pos = [x for x in pos if x - epsilon < max(neg)]
        term = math.log1p(sum(math.exp(-alpha * (x - base)) for x in kept_pos)) / alpha
        term += math.log1p(sum(math.exp(beta * (x - base)) for x in kept_neg)) / beta
        losses.append(term)
    return float(np.mean(losses))


def test_multi_similarity_loss_by_hand():
    # cosine similarities (angles 0, 60 | 40, 130); alpha 2, beta 50, base 0.5, epsilon 0.1
    # anchor 0: pos cos60 = 0.5; negs cos40 = 0.766, cos130 = -0.643
    #   mined negs: s + 0.1 > 0.5 -> cos40 only; mined pos: s - 0.1 < 0.766 -> cos60
    # anchor 1: pos cos60; negs cos20 = 0.940, cos70 = 0.342 -> mined negs: cos20 only (0.442 < 0.5); pos kept
    # anchor 2: pos cos90 = 0; negs cos40, cos20 -> both mined (> -0.1); pos kept (-0.1 < 0.940)
    # anchor 3: pos cos90 = 0; negs cos130, cos70 -> mined: cos70 only; pos kept (-0.1 < 0.342)
    # term = log(1 + sum_pos exp(-2 (s - 0.5))) / 2 + log(1 + sum_neg exp(50 (s - 0.5))) / 50
    def c(degrees):
        return math.cos(math.radians(degrees))

    def term(positives, negatives):
        return (math.log1p(sum(math.exp(-2 * (s - 0.5)) for s in positives)) / 2
                + math.log1p(sum(math.exp(50 * (s - 0.5)) for s in negatives)) / 50)

    expected = np.mean([term([c(60)], [c(40)]), term([c(60)], [c(20)]),
                        term([c(90)], [c(40), c(20)]), term([c(90)], [c(70)])])
    loss = multi_similarity_loss(tf.constant(EMBEDDINGS), tf.constant(LABELS))
    assert value(loss) == pytest.approx(expected, rel=1e-5)


def test_multi_similarity_mining_drops_easy_pairs():
    # two tight clusters 90 degrees apart: every positive (s = cos5 = 0.996) is far more similar than every
    # negative (s <= cos85 = 0.087), so mining keeps no pair and the loss is exactly 0
    embeddings = unit_vectors([0, 5, 90, 95])
    loss = multi_similarity_loss(tf.constant(embeddings), tf.constant(np.array([0, 0, 1, 1])))
    assert value(loss) == 0.0


def test_multi_similarity_loss_matches_reference_on_a_random_batch():
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(12, 4)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = np.repeat(np.arange(3), 4)
    loss = multi_similarity_loss(tf.constant(embeddings), tf.constant(labels))
    assert value(loss) == pytest.approx(multi_similarity_reference(embeddings, labels), rel=1e-4)


# ---------------------------------------------------------------- proxy softmax


def test_proxy_softmax_loss_by_hand():
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    proxies = np.array([[3.0, 0.0], [0.0, 2.0]], dtype=np.float32)  # normalised inside: (1, 0), (0, 1)
    labels = np.array([0, 1])
    # cosines to the proxies: (1, 0) for both rows
    # row 0, label 0: logits 16 (1 - 0.1) = 14.4 and 0    -> CE = log(1 + exp(-14.4))
    # row 1, label 1: logits 16 and 16 (0 - 0.1) = -1.6   -> CE = log(exp(16) + exp(-1.6)) + 1.6
    row0 = math.log1p(math.exp(-14.4))
    row1 = 16 + math.log1p(math.exp(-17.6)) + 1.6
    loss = proxy_softmax_loss(tf.constant(embeddings), tf.constant(labels), tf.constant(proxies), 16.0, 0.1)
    assert value(loss) == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_proxy_softmax_loss_matches_numpy_on_a_random_batch():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(6, 5)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    proxies = rng.normal(size=(3, 5)).astype(np.float32)
    labels = np.array([0, 1, 2, 2, 1, 0])
    cosine = embeddings.astype(np.float64) @ (proxies / np.linalg.norm(proxies, axis=1, keepdims=True)).T
    logits = 8.0 * (cosine - 0.25 * np.eye(3)[labels])
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(6), labels].mean()
    loss = proxy_softmax_loss(tf.constant(embeddings), tf.constant(labels), tf.constant(proxies), 8.0, 0.25)
    assert value(loss) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- InfoNCE (the instance sub-space)


def test_info_nce_loss_by_hand():
    # rows 0 and 1 are two views of one photo (same point), row 2 another photo 90 degrees away, temperature 0.5
    # anchor 0: positive 1 at cos 1, the others 1 (cos 1) and 2 (cos 0) -> -(2 - log(e^2 + e^0)) = log(1 + e^-2)
    # anchor 1: the same; anchor 2 has no positive and does not count
    embeddings = unit_vectors([0, 0, 90])
    loss = info_nce_loss(tf.constant(embeddings), tf.constant(np.array([7, 7, 8])), 0.5)
    assert value(loss) == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-5)


def test_info_nce_loss_by_hand_with_two_positives():
    # angles 0, 60 | 40, 130 (two photos, two views each) and a third view of photo 0 at 20; temperature 1
    # anchor 0 (photo 0): positives cos60 and cos20, denominator over cos60, cos40, cos130, cos20 (not itself)
    def c(degrees):
        return math.cos(math.radians(degrees))

    def term(positives, others):
        log_sum = math.log(sum(math.exp(s) for s in others))
        return -np.mean([s - log_sum for s in positives])

    expected = np.mean([
        term([c(60), c(20)], [c(60), c(40), c(130), c(20)]),  # anchor 0 at 0
        term([c(60), c(40)], [c(60), c(20), c(70), c(40)]),  # anchor 1 at 60
        term([c(90)], [c(40), c(20), c(90), c(20)]),  # anchor 2 at 40
        term([c(90)], [c(130), c(70), c(90), c(110)]),  # anchor 3 at 130
        term([c(20), c(40)], [c(20), c(40), c(20), c(110)]),  # anchor 4 at 20
    ])
    embeddings = unit_vectors([0, 60, 40, 130, 20])
    loss = info_nce_loss(tf.constant(embeddings), tf.constant(np.array([0, 0, 1, 1, 0])), 1.0)
    assert value(loss) == pytest.approx(expected, rel=1e-5)


def test_info_nce_loss_falls_as_views_of_a_photo_gather_and_metric_loss_dispatches_to_it():
    labels = tf.constant(np.array([0, 0, 1, 1]))
    apart = value(info_nce_loss(tf.constant(unit_vectors([0, 90, 45, 135])), labels, 0.1))
    together = value(info_nce_loss(tf.constant(unit_vectors([0, 1, 90, 91])), labels, 0.1))
    assert together < 0.01 < apart
    dispatched = metric_loss(tf.constant(unit_vectors([0, 90, 45, 135])), labels, "info_nce", "semihard", MARGIN,
                             None, temperature=0.1)
    assert value(dispatched) == pytest.approx(apart, rel=1e-6)


# ---------------------------------------------------------------- dispatch


NOISE = np.random.default_rng(2).uniform(size=(4, 4)).astype(np.float32)


def hinge(gap: float, margin: float, soft: bool) -> float:
    """The triplet hinge: relu(gap + margin), or softplus(gap) for the soft-margin variant."""
    return softplus(gap) if soft else relu(gap + margin)


def triplet_reference(embeddings: np.ndarray, labels: np.ndarray, mining: str, margin: float, noise: np.ndarray,
                      soft: bool) -> float:
    """Mean hinge over anchors (random, batch_hard) or (anchor, positive) pairs (semihard), in plain Python."""
    d = np_distances(embeddings)
    terms = []
    for a in range(len(labels)):
        pos = [j for j in range(len(labels)) if labels[j] == labels[a] and j != a]
        neg = [j for j in range(len(labels)) if labels[j] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "random":
            p, n = max(pos, key=lambda j: noise[a, j]), max(neg, key=lambda j: noise[a, j])
            terms.append(hinge(d[a, p] - d[a, n], margin, soft))
        elif mining == "batch_hard":
            terms.append(hinge(max(d[a, pos]) - min(d[a, neg]), margin, soft))
        else:  # semihard: the closest negative farther than the positive, else the farthest negative
            for p in pos:
                farther = [d[a, n] for n in neg if d[a, n] > d[a, p]]
                terms.append(hinge(d[a, p] - (min(farther) if farther else max(d[a, neg])), margin, soft))
    return float(np.mean(terms))


def proxy_softmax_reference(embeddings, labels, proxies, scale: float, margin: float) -> float:
    cosine = embeddings.astype(np.float64) @ (proxies / np.linalg.norm(proxies, axis=1, keepdims=True)).T
    logits = scale * (cosine - margin * np.eye(len(proxies))[labels])
    return float(np.mean([np.log(np.exp(row).sum()) - row[label] for row, label in zip(logits, labels, strict=True)]))


# Nine points, three labels of three (so hardest and easiest positives differ), every mining picks
# differently; the dispatch test checks that the eight references differ. No two pairs are the same
# distance apart (gaps >= 8e-4), so no mining choice hangs on float rounding.
DISPATCH_EMBEDDINGS = unit_vectors([3.8, 45.6, 118.2, 25.1, 95.9, 189.5, 206.6, 254.4, 331.3])
DISPATCH_LABELS = np.repeat(np.arange(3), 3)
DISPATCH_NOISE = np.random.default_rng(2).uniform(size=(9, 9)).astype(np.float32)
DISPATCH_PROXIES = np.array([[1.0, 0.2], [-0.3, 1.0], [-1.0, -0.5]], dtype=np.float32)
DISPATCH_CASES = {
    ("triplet", "random"): lambda e, y: triplet_reference(e, y, "random", MARGIN, DISPATCH_NOISE, soft=False),
    ("triplet_soft", "random"): lambda e, y: triplet_reference(e, y, "random", MARGIN, DISPATCH_NOISE, soft=True),
    ("triplet", "semihard"): lambda e, y: triplet_reference(e, y, "semihard", MARGIN, DISPATCH_NOISE, soft=False),
    ("triplet_soft", "semihard"): lambda e, y: triplet_reference(e, y, "semihard", MARGIN, DISPATCH_NOISE, soft=True),
    ("triplet", "batch_hard"): lambda e, y: triplet_reference(e, y, "batch_hard", MARGIN, DISPATCH_NOISE, soft=False),
    ("triplet_soft", "batch_hard"): lambda e, y: triplet_reference(e, y, "batch_hard", MARGIN, DISPATCH_NOISE,
                                                                   soft=True),
    ("multi_similarity", "semihard"): lambda e, y: multi_similarity_reference(e, y),
    ("proxy_softmax", "semihard"): lambda e, y: proxy_softmax_reference(e, y, DISPATCH_PROXIES, 16.0, MARGIN),
}


@pytest.mark.parametrize(("loss", "mining"), sorted(DISPATCH_CASES))
def test_metric_loss_matches_an_independent_reference_for_each_loss_and_mining(loss, mining):
    """metric_loss against plain-Python references (not the functions it calls), on a batch where the
    eight references all differ, so a wrong dispatch, margin, soft flag or scale cannot pass."""
    expected = DISPATCH_CASES[(loss, mining)](DISPATCH_EMBEDDINGS, DISPATCH_LABELS)
    others = [ref(DISPATCH_EMBEDDINGS, DISPATCH_LABELS) for case, ref in DISPATCH_CASES.items()
              if case != (loss, mining)]
    assert expected > 0 and min(abs(expected - other) for other in others) > 1e-3
    got = metric_loss(tf.constant(DISPATCH_EMBEDDINGS), tf.constant(DISPATCH_LABELS), loss, mining, MARGIN,
                      tf.constant(DISPATCH_NOISE), proxies=tf.constant(DISPATCH_PROXIES), scale=16.0)
    assert value(got) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_metric_loss_unknown_loss_raises():
    with pytest.raises(ValueError, match="unknown loss 'arcface'"):
        metric_loss(tf.constant(EMBEDDINGS), tf.constant(LABELS), "arcface", "semihard", MARGIN, NOISE)


def test_metric_loss_unknown_mining_raises():
    with pytest.raises(ValueError, match="unknown mining 'hardest'"):
        metric_loss(tf.constant(EMBEDDINGS), tf.constant(LABELS), "triplet", "hardest", MARGIN, NOISE)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("loss_name", ["triplet/random", "triplet/semihard", "triplet/batch_hard",
                                       "triplet_soft/batch_hard", "multi_similarity/-", "proxy_softmax/-",
                                       "info_nce/-"])
def test_one_sgd_step_lowers_the_loss(loss_name):
    loss, mining = loss_name.split("/")
    rng = np.random.default_rng(0)
    raw = tf.Variable(rng.normal(size=(8, 4)).astype(np.float32))
    proxies = tf.Variable(rng.normal(size=(2, 4)).astype(np.float32))
    labels = tf.constant(np.array([0, 1] * 4))
    noise = tf.constant(rng.uniform(size=(8, 8)).astype(np.float32))

    def compute() -> tf.Tensor:
        return metric_loss(tf.math.l2_normalize(raw, axis=1), labels, loss, mining, 0.5, noise, proxies, 16.0)

    with tf.GradientTape() as tape:
        before = compute()
    gradients = tape.gradient(before, [raw, proxies])
    for variable, gradient in zip([raw, proxies], gradients, strict=False):
        if gradient is not None:
            assert np.isfinite(gradient.numpy()).all()
            variable.assign_sub(0.01 * gradient)
    assert value(before) > 0
    assert value(compute()) < value(before)


def test_gradients_are_finite_for_identical_embeddings():
    # distance 0 between different rows: sqrt at 0 must not give NaN gradients
    embeddings = tf.Variable(unit_vectors([0, 0, 0, 0]))
    with tf.GradientTape() as tape:
        loss = batch_hard_triplet_loss(embeddings, tf.constant(LABELS), MARGIN)
    assert value(loss) == pytest.approx(MARGIN, abs=1e-5)
    assert np.isfinite(tape.gradient(loss, embeddings).numpy()).all()
