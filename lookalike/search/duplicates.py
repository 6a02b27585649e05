"""Near-duplicate listings: catalogue items whose photos are (almost) the same picture. One implementation.

Two items are near-duplicates when

1. the cosine of their embeddings is at least the build's threshold (an exact scan: every item, build and
   live, is scored; :func:`near_duplicates` for one new item, :func:`similar_pairs` for the whole catalogue,
   both through :func:`_scan`), and
2. their photos agree pixel for pixel up to re-encoding and resizing: the mean absolute difference of their
   16x16 thumbnails is at most the build's bound (:func:`same_picture`). The embedding is trained to find the same
   *kind* of product, so it scores a product's colourways as near-copies; pixels do not.

The add-item answer of the service (:meth:`lookalike.live.LiveCatalogue.near_duplicates`) and the report
(``lookalike duplicates``, :func:`duplicate_groups`) both apply these two steps. Groups are the connected
components of the relation (union-find), so a chain a~b~c is one group.

The threshold belongs to a build: the index stage calibrates it from the build's own embeddings
(:func:`calibrate`: re-encoded and resized copies of a sample of its photos, scored by the build's model
against the originals, and the byte-identical photos it holds) and records it in the manifest
(``near_duplicates``). :data:`NEAR_DUPLICATE_COSINE` is only the fallback for a build made before that.

The model-free ground truth used by ``study/duplicate_threshold.py``: :func:`pixel_thumbnails` and
:func:`pixel_duplicate_pairs` find photos whose decoded pixels are identical or nearly so.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lookalike.artifacts import ArtifactMismatchError, resolve_build
from lookalike.catalogue.description import CatalogueRoles
from lookalike.catalogue.reading import read_table
from lookalike.model.preprocessing import ImageSource, InvalidImageError, load_image
from lookalike.params import PROJECT_ROOT

# Fallback cosine for a build whose manifest carries no calibration (made before builds calibrated their
# own): chosen by `python -m study.duplicate_threshold` on one fashion-5k model.
NEAR_DUPLICATE_COSINE = 0.9966
# Mean absolute difference (0-255 scale) of two 16x16 thumbnails at most which two photos are one picture,
# for a build without a calibrated bound. Calibration sets it to the largest difference a re-encoded or
# resized copy of one of the build's photos showed (about 2-5 on fashion photos of 60x80 pixels); a colourway
# of the same product shot moves the product's pixels by tens, the thumbnail by 10-25.
MAX_PIXEL_DIFFERENCE = 5.0
THUMBNAIL_SIDE = 16  # small enough that resampling barely moves it, large enough to keep colours and layout
MIN_PIXEL_DIFFERENCE = 2.0  # a calibrated bound is never tighter than this (JPEG noise alone reaches 2)
CALIBRATION_SAMPLE = 200  # photos copied and re-embedded per build
CALIBRATION_QUANTILE = 0.01  # the threshold keeps 99% of the copies ...
DISTINCT_QUANTILE = 0.999  # ... unless that would flag more than 0.1% of photos beside their nearest other photo
DISTINCT_SAMPLE = 5000  # photos whose nearest other photo that quantile is taken over (no re-embedding: cheap)

GROUP_COLUMNS = ("group", "group_size", "id", "closest_id", "max_cosine")  # then the item columns asked for
# Scores one scan step may compute at most (query chunk x catalogue size), bounding memory.
_MAX_RESULTS_PER_CALL = 1 << 24


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the cosine threshold must be in (0, 1], got {threshold}")
    return threshold


def _scan(embeddings: np.ndarray, queries: np.ndarray, threshold: float, rows_per_step: int
          ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every (query, row, score) with score >= threshold, exact: the one scoring both uses go through.

    Scores ``rows_per_step`` rows of ``embeddings`` (any array, e.g. memory-mapped) against all queries at a time.
    """
    for start in range(0, len(embeddings), rows_per_step):
        block = np.asarray(embeddings[start:start + rows_per_step], dtype=np.float32) @ queries.T
        rows, which = np.nonzero(block >= threshold)
        yield which.astype(np.int64), (rows + start).astype(np.int64), block[rows, which]


def near_duplicates(embeddings: np.ndarray, query: np.ndarray, threshold: float = NEAR_DUPLICATE_COSINE,
                    exclude: Iterable[int] = (), chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``embeddings`` whose cosine with ``query`` is >= ``threshold``, best first.

    ``embeddings``: (n, dim) unit rows; ``query``: (dim,) unit vector; ``exclude``: rows never returned (the
    item itself, removed ones). Exact; scans ``chunk`` rows at a time. Returns (rows int64, scores float32),
    ties by row.
    """
    threshold = _check_threshold(threshold)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if embeddings.ndim != 2 or embeddings.shape[1] != query.shape[0]:
        raise ValueError(f"query has dimension {query.shape[0]}, embeddings are {embeddings.shape}")
    found = list(_scan(embeddings, query[None], threshold, chunk))
    rows = np.concatenate([f[1] for f in found]) if found else np.zeros(0, np.int64)
    scores = np.concatenate([f[2] for f in found]) if found else np.zeros(0, np.float32)
    excluded = np.fromiter((int(r) for r in exclude), dtype=np.int64)
    if len(excluded):
        keep = ~np.isin(rows, excluded)
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))
    return rows[order].astype(np.int64), np.minimum(scores[order], 1.0).astype(np.float32)  # float noise above 1


def similar_pairs(embeddings: np.ndarray, threshold: float) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All pairs (i < j) with cosine >= threshold, as chunks of (i, j, score) arrays.

    The same exact scan as :func:`near_duplicates`, a bounded block of queries at a time, so memory stays
    O(catalogue) plus one block of scores whatever the catalogue size.
    """
    threshold = _check_threshold(threshold)
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(vectors)
    chunk = max(1, min(4096, _MAX_RESULTS_PER_CALL // max(n, 1)))
    for start in range(0, n, chunk):
        for which, rows, scores in _scan(vectors, vectors[start:start + chunk], threshold, n or 1):
            queries = which + start
            keep = rows > queries  # each pair once, never an item with itself
            yield queries[keep], rows[keep], scores[keep].astype(np.float32)


# ------------------------------------------------------------------ the pixel check


def photo_thumbnail(source: ImageSource | Image.Image) -> np.ndarray | None:
    """The thumbnail :func:`same_picture` compares; None for a photo that cannot be read."""
    try:
        return pixel_thumbnail(source, THUMBNAIL_SIDE)
    except (InvalidImageError, OSError):
        return None


def pixel_difference(first: np.ndarray, second: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, 0-255 scale."""
    return float(np.abs(first.astype(np.int16) - second.astype(np.int16)).mean())


def same_picture(first: np.ndarray | None, second: np.ndarray | None,
                 max_difference: float = MAX_PIXEL_DIFFERENCE) -> bool:
    """Whether two thumbnails are one picture (re-encoded or resized at most); unreadable: no."""
    return first is not None and second is not None and pixel_difference(first, second) <= max_difference


def rule_of(manifest: dict) -> dict:
    """The build's near-duplicate rule: ``cosine``, ``max_pixel_difference`` and where the cosine came from."""
    calibrated = manifest.get("near_duplicates") or {}
    if "cosine" in calibrated:
        return {"cosine": float(calibrated["cosine"]),
                "max_pixel_difference": float(calibrated.get("max_pixel_difference", MAX_PIXEL_DIFFERENCE)),
                "source": "calibrated on this build"}
    return {"cosine": NEAR_DUPLICATE_COSINE, "max_pixel_difference": MAX_PIXEL_DIFFERENCE,
            "source": "default (the build carries no calibration)"}


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def confirmed_pairs(embeddings: np.ndarray, threshold: float,
                    photos: Sequence[ImageSource | None] | None = None,
                    max_pixel_difference: float = MAX_PIXEL_DIFFERENCE
                    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`similar_pairs`, then, given ``photos`` (one per row), only the pairs :func:`same_picture` confirms.

    Thumbnails are made once per photo, only for rows in a pair above the threshold."""
    thumbnails: dict[int, np.ndarray | None] = {}

    def thumbnail(row: int) -> np.ndarray | None:
        if row not in thumbnails:
            source = photos[row] if photos is not None else None
            thumbnails[row] = None if source is None else photo_thumbnail(source)
        return thumbnails[row]

    for left, right, scores in similar_pairs(embeddings, threshold):
        if photos is None:
            yield left, right, scores
            continue
        keep = np.array([same_picture(thumbnail(i), thumbnail(j), max_pixel_difference)
                         for i, j in zip(left.tolist(), right.tolist(), strict=True)], dtype=bool)
        yield left[keep], right[keep], scores[keep]


def report_columns(roles: CatalogueRoles) -> tuple[str, ...]:
    """The item columns a report shows after :data:`GROUP_COLUMNS`: the build's title and card columns (what a
    person checks a group by) and its colour column (:func:`colour_differences` reads it), each once."""
    return tuple(dict.fromkeys(c for c in (roles.title, *roles.card, roles.colour) if c))


def duplicate_groups(embeddings: np.ndarray, items: pd.DataFrame, threshold: float = NEAR_DUPLICATE_COSINE,
                     photos: Sequence[ImageSource | None] | None = None,
                     max_pixel_difference: float = MAX_PIXEL_DIFFERENCE,
                     columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Every near-duplicate group: one row per member, columns :data:`GROUP_COLUMNS` then ``columns``.

    ``items`` holds one row per embedding (same order) with at least ``id``; ``columns``: which of its other
    columns the report carries (a missing one is empty; None: all of them, in its order; a build's are
    :func:`report_columns`). ``photos`` (one per row, optional) turns on the pixel check. ``max_cosine`` is a
    member's highest cosine with another member and ``closest_id`` that member. Groups are numbered from 1,
    largest first, then by their highest cosine, then by smallest id; members in id order. No groups: an empty
    table with the same columns.
    """
    n = len(embeddings)
    if len(items) != n:
        raise ValueError(f"{len(items)} items for {n} embeddings")
    extra = [c for c in dict.fromkeys(items.columns if columns is None else columns) if c not in GROUP_COLUMNS]
    parent = np.arange(n)
    best = np.full(n, -np.inf, dtype=np.float32)
    closest = np.full(n, -1, dtype=np.int64)
    for left, right, scores in confirmed_pairs(embeddings, threshold, photos, max_pixel_difference):
        for i, j, score in zip(left.tolist(), right.tolist(), scores.tolist(), strict=True):
            a, b = _find(parent, i), _find(parent, j)
            if a != b:
                parent[max(a, b)] = min(a, b)
            for u, v in ((i, j), (j, i)):
                if score > best[u] or (score == best[u] and v < closest[u]):
                    best[u], closest[u] = score, v
    members = np.flatnonzero(closest >= 0)
    if len(members) == 0:
        return pd.DataFrame(columns=[*GROUP_COLUMNS, *extra])
    roots = np.array([_find(parent, int(i)) for i in members])
    ids = items["id"].to_numpy()
    table = pd.DataFrame({"root": roots, "row": members, "id": ids[members], "closest_id": ids[closest[members]],
                          "max_cosine": np.round(np.minimum(best[members].astype(np.float64), 1.0), 6)})
    stats = table.groupby("root").agg(size=("row", "size"), top=("max_cosine", "max"), first=("id", "min"))
    stats = stats.sort_values(["size", "top", "first"], ascending=[False, False, True])
    stats["group"] = np.arange(1, len(stats) + 1)
    table["group"] = table["root"].map(stats["group"])
    table["group_size"] = table["root"].map(stats["size"])
    for column in extra:  # after the grouping: a catalogue column may be called anything, "root" too
        table[column] = items[column].to_numpy()[members] if column in items else ""
    order = table.sort_values(["group", "id"]).index
    out = pd.DataFrame({c: table[c].to_numpy()[order] for c in GROUP_COLUMNS})
    for column in extra:
        out[column] = table[column].to_numpy()[order]
    return out


def colour_differences(table: pd.DataFrame, colour_column: str | None) -> int:
    """Members of a group whose colour (the build's colour column, ``roles.colour``) differs from their closest
    member's: colourways the report flagged. 0 without a colour column."""
    if not len(table) or not colour_column or colour_column not in table:
        return 0
    colour = dict(zip(table["id"], table[colour_column], strict=True))
    return int(sum(colour[i] != colour.get(c, colour[i]) for i, c in zip(table["id"], table["closest_id"],
                                                                          strict=True)))


def load_build(artifacts_dir: str | Path | None = None, root: str | Path = PROJECT_ROOT
               ) -> tuple[np.ndarray, pd.DataFrame]:
    """The embeddings and items of the published build an artifacts folder serves, checked against its manifest
    (no model loaded): the build the service serves, never a half-written artifacts folder."""
    embeddings, items, _, _ = load_published(artifacts_dir, root)
    return embeddings, items


def load_published(artifacts_dir: str | Path | None = None, root: str | Path = PROJECT_ROOT
                   ) -> tuple[np.ndarray, pd.DataFrame, list[Path], dict]:
    """:func:`load_build` plus each item's photo path and the build's manifest."""
    directory = Path(artifacts_dir) if artifacts_dir else Path(root) / "artifacts"
    folder, manifest = resolve_build(directory)
    files = {name: folder / entry["path"] for name, entry in manifest["files"].items()}
    embeddings = np.load(files["embeddings"])
    items = read_table(files["items"])
    count = int(manifest["count"])
    if embeddings.ndim != 2 or embeddings.shape[0] != count or len(items) != count:
        raise ArtifactMismatchError(f"embeddings {embeddings.shape} and {len(items)} items disagree with the "
                                    f"manifest's count {count}: rebuild with dvc repro")
    project = directory.resolve().parent
    photos = [p if p.is_absolute() else project / p for p in map(Path, np.load(files["image_paths"]).tolist())]
    return embeddings, items, photos, manifest


# ------------------------------------------------------------------ calibration per build


def _copies(image: Image.Image) -> list[bytes]:
    """What a shop re-listing a photo sends: the photo re-encoded as JPEG, and resized to 3/4 and re-encoded."""
    copies = []
    for scale, quality in ((1.0, 75), (0.75, 90)):
        copy = image if scale == 1.0 else image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        copy.convert("RGB").save(buffer, "JPEG", quality=quality)
        copies.append(buffer.getvalue())
    return copies


def nearest_other_cosines(embeddings: np.ndarray, by_digest: dict[str, list[int]], rng: np.random.Generator,
                          sample: int = DISTINCT_SAMPLE, chunk: int = 512) -> np.ndarray:
    """float64 (min(sample, n),): for that many photos (seeded), the cosine with their nearest *other* photo (the
    photo itself and byte-identical copies of it are not other). Enough photos that a 0.999 quantile of it is not
    simply its maximum; exact, ``chunk`` rows at a time."""
    vectors = np.asarray(embeddings, np.float32)
    if len(vectors) < 2:
        return np.array([-1.0])
    digest_of = {row: digest for digest, members in by_digest.items() for row in members}
    rows = np.sort(rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False))
    found = np.empty(len(rows))
    for start in range(0, len(rows), chunk):
        block = rows[start:start + chunk]
        scores = vectors[block] @ vectors.T
        for i, row in enumerate(block.tolist()):
            scores[i, [row, *by_digest.get(digest_of.get(row, ""), [])]] = -1.0
        found[start:start + len(block)] = scores.max(axis=1)
    return found


def calibrate(embeddings: np.ndarray, photos: Sequence[Path], embed: Callable[[bytes], np.ndarray],
              sample: int = CALIBRATION_SAMPLE, seed: int = 0, distinct_sample: int = DISTINCT_SAMPLE) -> dict:
    """The build's near-duplicate threshold, from its own embeddings and model, with what it was chosen from.

    Positives are pictures that must be flagged: JPEG-re-encoded and resized copies of ``sample`` photos
    (seeded), embedded with ``embed`` (the build's model) and scored against the build's embedding of the
    original, and the pairs of byte-identical photos the build holds. The cosine threshold is the copies'
    cosine that keeps all but :data:`CALIBRATION_QUANTILE` of them, raised where needed to the
    :data:`DISTINCT_QUANTILE` quantile of the sampled photos' cosine with their nearest *other* photo (a model
    that packs same-type, same-colour products closer than a re-encoded copy to its original cannot tell copies
    from colourways by the cosine: then precision wins and only near-exact pictures are flagged), never above
    the lowest byte-identical pair, floored to 4 decimals; the pixel bound is the largest thumbnail
    difference of a copy (at least :data:`MIN_PIXEL_DIFFERENCE`), rounded up to 0.1. The pixel check then
    keeps look-alike products apart. The nearest-other quantile is taken over ``distinct_sample`` photos (all,
    in a smaller catalogue), far more than are copied: over 200 a 0.999 quantile would be their maximum.
    """
    if len(photos) != len(embeddings):
        raise ValueError(f"{len(photos)} photos for {len(embeddings)} embeddings")
    by_digest: dict[str, list[int]] = defaultdict(list)
    for row, path in enumerate(photos):
        try:
            by_digest[hashlib.sha256(Path(path).read_bytes()).hexdigest()].append(row)
        except OSError:
            continue
    identical = [float(embeddings[a] @ embeddings[b]) for rows in by_digest.values() if len(rows) > 1
                 for k, a in enumerate(rows) for b in rows[k + 1:]]
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(photos), size=min(sample, len(photos)), replace=False)
    cosines, differences = [], []
    for row in sorted(rows.tolist()):
        try:
            original = load_image(photos[row])
        except (InvalidImageError, OSError):
            continue
        before = photo_thumbnail(original)
        for copy in _copies(original):
            cosines.append(float(np.asarray(embed(copy), np.float32) @ embeddings[row]))
            differences.append(pixel_difference(before, photo_thumbnail(copy)))
    if not cosines:
        raise ValueError("no readable photo to calibrate the near-duplicate threshold on")
    copies = np.sort(np.array(cosines))
    from_copies = float(copies[int(CALIBRATION_QUANTILE * len(copies))])
    distinct = nearest_other_cosines(embeddings, by_digest, np.random.default_rng(seed + 1), distinct_sample)
    from_distinct = float(np.quantile(distinct, DISTINCT_QUANTILE))
    cosine = max(from_copies, from_distinct)
    if identical:
        cosine = min(cosine, min(identical))
    cosine = min(1.0, math.floor(cosine * 1e4) / 1e4)
    bound = max(MIN_PIXEL_DIFFERENCE, math.ceil(max(differences) * 10) / 10)
    return {
        "cosine": cosine,
        "max_pixel_difference": bound,
        "method": f"{CALIBRATION_QUANTILE:g} quantile of the cosines of re-encoded and resized copies of the "
                  f"build's photos with their originals, at least the {DISTINCT_QUANTILE:g} quantile of their "
                  f"cosine with their nearest other photo, at most the lowest byte-identical pair",
        "from_copies": round(from_copies, 6),
        "from_nearest_other_photo": round(from_distinct, 6),
        "copies": len(cosines),
        "nearest_other_photos": len(distinct),
        "copies_flagged": round(float((copies >= cosine).mean()), 4),
        "lowest_copy_cosine": round(float(copies.min()), 6),
        "median_copy_cosine": round(float(np.median(copies)), 6),
        "largest_copy_pixel_difference": round(max(differences), 3),
        "thumbnail_side": THUMBNAIL_SIDE,
        "byte_identical_pairs": len(identical),
        "lowest_byte_identical_cosine": round(min(identical), 6) if identical else None,
        "sample_seed": int(seed),
    }


# ------------------------------------------------------------------ ground truth: pixel identity


def pixel_digest(source: ImageSource) -> str:
    """md5 of the decoded RGB pixels and their size: equal digests = identical pictures (any file format)."""
    image = load_image(source)
    return hashlib.md5(np.asarray(image).tobytes() + repr(image.size).encode()).hexdigest()


def pixel_thumbnail(source: ImageSource | Image.Image, size: int = 32) -> np.ndarray:
    """uint8 (size, size, 3): the decoded photo (or an image already decoded) stretched to a square by area
    averaging."""
    image = source.convert("RGB") if isinstance(source, Image.Image) else load_image(source)
    return np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


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


def calibrate_build(embeddings: np.ndarray, image_paths: Sequence[str], model_file: Path, spec: object,
                    root: Path = PROJECT_ROOT, seed: int = 0) -> dict:
    """:func:`calibrate` with the build's exported model (the index stage records the result in the manifest)."""
    from lookalike.model.preprocessing import preprocess
    from lookalike.model.runtime import EmbeddingRuntime

    model = EmbeddingRuntime(model_file)
    photos = [p if p.is_absolute() else root / p for p in map(Path, image_paths)]
    return calibrate(embeddings, photos, lambda data: model(preprocess(data, spec)[None])[0], seed=seed)
