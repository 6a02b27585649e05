"""Near-duplicate listings: catalogue items whose photos are (almost) the same picture.

Two items are near-duplicates when the cosine of their embeddings is at least a threshold;
groups are the connected components of that relation (union-find), so a chain a~b~c is one
group. :func:`duplicate_groups` lists every group of a build (``lookalike duplicates``);
:func:`near_duplicates` answers "which existing items look almost identical to this one"
for a single new embedding (the service's add-item response).

The ground truth the threshold was chosen on is pixel identity: :func:`pixel_thumbnails`
and :func:`pixel_duplicate_pairs` find photos whose decoded pixels are identical or nearly
so, independently of any model (``study/duplicate_threshold.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from PIL import Image

from lookalike.artifacts import ArtifactMismatchError, verify_manifest
from lookalike.catalogue import read_table
from lookalike.params import PROJECT_ROOT
from lookalike.preprocessing import ImageSource, load_image

# Cosine (trained embeddings of the default build) at or above which two items are near-duplicates.
# Chosen by `python -m study.duplicate_threshold` on fashion-5k: midway between the lowest cosine of a
# pixel-duplicate pair (0.99716) and the highest of any other pair (0.99607); precision and recall 1.0
# on the 24 duplicate pairs (README, "Near-duplicate listings"). Rerun it after retraining the model.
NEAR_DUPLICATE_COSINE = 0.9966

OUTPUT_COLUMNS = ("group", "group_size", "id", "closest_id", "max_cosine",
                  "productDisplayName", "articleType", "baseColour", "gender")
# Results one range-search call may return at most (query chunk x catalogue size), bounding memory.
_MAX_RESULTS_PER_CALL = 1 << 24


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the cosine threshold must be in (0, 1], got {threshold}")
    return threshold


def near_duplicates(embeddings: np.ndarray, query: np.ndarray, threshold: float = NEAR_DUPLICATE_COSINE,
                    exclude: Iterable[int] = (), chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``embeddings`` whose cosine with ``query`` is >= ``threshold``, best first.

    ``embeddings``: (n, dim) unit rows (the build's, or any array, e.g. memory-mapped);
    ``query``: (dim,) unit vector; ``exclude``: rows never returned (the item itself).
    Exact; scans ``chunk`` rows at a time. Returns (rows int64, scores float32), ties by row.
    """
    threshold = _check_threshold(threshold)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if embeddings.ndim != 2 or embeddings.shape[1] != query.shape[0]:
        raise ValueError(f"query has dimension {query.shape[0]}, embeddings are {embeddings.shape}")
    rows, scores = [], []
    for start in range(0, len(embeddings), chunk):
        block = np.asarray(embeddings[start:start + chunk], dtype=np.float32) @ query
        hits = np.flatnonzero(block >= threshold)
        rows.append(hits + start)
        scores.append(block[hits])
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    scores = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    excluded = np.fromiter((int(r) for r in exclude), dtype=np.int64)
    if len(excluded):
        keep = ~np.isin(rows, excluded)
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))
    return rows[order].astype(np.int64), np.minimum(scores[order], 1.0).astype(np.float32)  # float noise above 1


def similar_pairs(embeddings: np.ndarray, threshold: float) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All pairs (i < j) with cosine >= threshold, as chunks of (i, j, score) arrays.

    Exact FAISS range search over the unit rows, a bounded number of queries per call,
    so memory stays O(catalogue) plus one chunk of results whatever the catalogue size.
    """
    threshold = _check_threshold(threshold)
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = vectors.shape
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    chunk = max(1, min(4096, _MAX_RESULTS_PER_CALL // max(n, 1)))
    radius = np.nextafter(np.float32(threshold), np.float32(-np.inf))  # FAISS keeps scores > radius
    for start in range(0, n, chunk):
        limits, scores, neighbours = index.range_search(vectors[start:start + chunk], float(radius))
        queries = start + np.repeat(np.arange(len(limits) - 1), np.diff(limits.astype(np.int64)))
        keep = (neighbours > queries) & (scores >= threshold)  # each pair once, never an item with itself
        yield queries[keep].astype(np.int64), neighbours[keep].astype(np.int64), scores[keep].astype(np.float32)


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def duplicate_groups(embeddings: np.ndarray, items: pd.DataFrame, threshold: float = NEAR_DUPLICATE_COSINE
                     ) -> pd.DataFrame:
    """Every near-duplicate group: one row per member, columns :data:`OUTPUT_COLUMNS`.

    ``items`` holds one row per embedding (same order) with at least ``id``. ``max_cosine`` is a
    member's highest cosine with another member and ``closest_id`` that member. Groups are
    numbered from 1, largest first, then by their highest cosine, then by smallest id; members
    in id order. No groups: an empty table with the same columns.
    """
    n = len(embeddings)
    if len(items) != n:
        raise ValueError(f"{len(items)} items for {n} embeddings")
    parent = np.arange(n)
    best = np.full(n, -np.inf, dtype=np.float32)
    closest = np.full(n, -1, dtype=np.int64)
    for left, right, scores in similar_pairs(embeddings, threshold):
        for i, j, score in zip(left.tolist(), right.tolist(), scores.tolist(), strict=True):
            a, b = _find(parent, i), _find(parent, j)
            if a != b:
                parent[max(a, b)] = min(a, b)
            for u, v in ((i, j), (j, i)):
                if score > best[u] or (score == best[u] and v < closest[u]):
                    best[u], closest[u] = score, v
    members = np.flatnonzero(closest >= 0)
    if len(members) == 0:
        return pd.DataFrame(columns=list(OUTPUT_COLUMNS))
    roots = np.array([_find(parent, int(i)) for i in members])
    ids = items["id"].to_numpy()
    table = pd.DataFrame({"root": roots, "row": members, "id": ids[members], "closest_id": ids[closest[members]],
                          "max_cosine": np.round(np.minimum(best[members].astype(np.float64), 1.0), 6)})
    for column in OUTPUT_COLUMNS[5:]:
        table[column] = items[column].to_numpy()[members] if column in items else ""
    stats = table.groupby("root").agg(size=("row", "size"), top=("max_cosine", "max"), first=("id", "min"))
    stats = stats.sort_values(["size", "top", "first"], ascending=[False, False, True])
    stats["group"] = np.arange(1, len(stats) + 1)
    table["group"] = table["root"].map(stats["group"])
    table["group_size"] = table["root"].map(stats["size"])
    table = table.sort_values(["group", "id"]).reset_index(drop=True)
    return table[list(OUTPUT_COLUMNS)]


def load_build(artifacts_dir: str | Path | None = None, root: str | Path = PROJECT_ROOT
               ) -> tuple[np.ndarray, pd.DataFrame]:
    """The embeddings and items of a pinned build, checked against its manifest (no model loaded)."""
    directory = Path(artifacts_dir) if artifacts_dir else Path(root) / "artifacts"
    manifest = verify_manifest(directory)
    files = {name: directory / entry["path"] for name, entry in manifest["files"].items()}
    embeddings = np.load(files["embeddings"])
    items = read_table(files["items"])
    count = int(manifest["count"])
    if embeddings.ndim != 2 or embeddings.shape[0] != count or len(items) != count:
        raise ArtifactMismatchError(f"embeddings {embeddings.shape} and {len(items)} items disagree with the "
                                    f"manifest's count {count}: rebuild with dvc repro")
    return embeddings, items


# ------------------------------------------------------------------ ground truth: pixel identity


def pixel_digest(source: ImageSource) -> str:
    """md5 of the decoded RGB pixels and their size: equal digests = identical pictures (any file format)."""
    image = load_image(source)
    return hashlib.md5(np.asarray(image).tobytes() + repr(image.size).encode()).hexdigest()


def pixel_thumbnail(source: ImageSource, size: int = 32) -> np.ndarray:
    """uint8 (size, size, 3): the decoded photo stretched to a square by area averaging."""
    return np.asarray(load_image(source).resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def pixel_duplicate_pairs(thumbnails: np.ndarray, max_mean_abs_diff: float, chunk: int = 1024
                          ) -> list[tuple[int, int, float]]:
    """Pairs (i < j, mean absolute difference) of thumbnails differing by at most ``max_mean_abs_diff``.

    The difference is on the 0-255 scale, averaged over pixels and channels. All pairs are
    screened with one matrix product: since |d| <= 255, mean(d^2) <= 255 * mean|d|, so a pair
    within the bound has a mean squared difference of at most 255 * bound, and only those
    candidates get the exact mean absolute difference.
    """
    flat = thumbnails.reshape(len(thumbnails), -1)
    values = flat.astype(np.float32)
    norms = (values ** 2).sum(axis=1)
    limit = 255.0 * max_mean_abs_diff * flat.shape[1]
    pairs = []
    for start in range(0, len(flat), chunk):
        total = norms[start:start + chunk, None] + norms[None, :]
        squared = total - 2.0 * values[start:start + chunk] @ values.T
        # float32 rounding of the expansion is relative to the norms: widen the screen by that much
        left, right = np.nonzero(squared <= limit + 1e-4 * total + 1.0)
        left += start
        keep = right > left
        left, right = left[keep], right[keep]
        for begin in range(0, len(left), 4096):  # exact differences of the candidates, a bounded batch at a time
            i, j = left[begin:begin + 4096], right[begin:begin + 4096]
            mad = np.abs(flat[i].astype(np.int16) - flat[j].astype(np.int16)).mean(axis=1)
            pairs.extend((int(a), int(b), float(m)) for a, b, m in zip(i, j, mad, strict=True)
                         if m <= max_mean_abs_diff)
    return pairs
