"""Choose the near-duplicate cosine threshold from the catalogue's real duplicate photos.

Run after `dvc repro`:  python -m study.duplicate_threshold [--artifacts artifacts] [--pixel-bound 1.0]

Ground truth, independent of any model: two catalogue photos are duplicates when their decoded
pixels are identical (md5 of the RGB pixels) or nearly so (mean absolute difference at most
``--pixel-bound`` on the 0-255 scale, both stretched to 32x32 by area averaging). The printout
shows the pixel pairs just past the bound, so the bound can be judged against the data.

Then every pair of the build's embeddings with cosine >= 0.99 is ranked; for each cut, precision
(share of the pairs at or above it that are duplicates) and recall (share of the duplicates at or
above it). The chosen threshold is the cut with the best F1 (ties: the higher cut), placed
midway between the last pair kept and the first pair left out, rounded to 4 decimals. That is
the value of ``lookalike.search.duplicates.NEAR_DUPLICATE_COSINE``; rerun this after retraining.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from lookalike.search.duplicates import (
    NEAR_DUPLICATE_COSINE,
    load_build,
    pixel_digest,
    pixel_duplicate_pairs,
    pixel_thumbnail,
    similar_pairs,
)

REPORTED = (0.99, 0.995, 0.996, 0.997, 0.998, 0.9999)


def ground_truth(paths: list[Path], bound: float) -> tuple[set[tuple[int, int]], set[tuple[int, int]], list]:
    """(identical pairs, near-identical pairs, the pixel pairs just past the bound)."""
    by_digest = defaultdict(list)
    for row, path in enumerate(paths):
        by_digest[pixel_digest(path)].append(row)
    identical = {(a, b) for rows in by_digest.values() for k, a in enumerate(rows) for b in rows[k + 1:]}
    thumbnails = np.stack([pixel_thumbnail(path) for path in paths])
    close = pixel_duplicate_pairs(thumbnails, 2 * bound)
    near = {(i, j) for i, j, mad in close if mad <= bound} - identical
    past = sorted((mad, i, j) for i, j, mad in close if mad > bound)[:3]
    return identical, near, past


def sweep(scored: list[tuple[float, int, int]], truth: set[tuple[int, int]]) -> list[dict]:
    """Precision and recall at each cut of the pairs sorted by cosine, best first."""
    rows, hits = [], 0
    for kept, (score, i, j) in enumerate(scored, start=1):
        hits += (i, j) in truth
        rows.append({"cosine": score, "kept": kept, "hits": hits, "precision": hits / kept,
                     "recall": hits / len(truth)})
    return rows


def at(scored: list[tuple[float, int, int]], truth: set[tuple[int, int]], threshold: float) -> dict:
    kept = [(i, j) for score, i, j in scored if score >= threshold]
    hits = sum(pair in truth for pair in kept)
    return {"threshold": threshold, "pairs": len(kept), "duplicates_found": hits,
            "precision": hits / len(kept) if kept else float("nan"), "recall": hits / len(truth)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--pixel-bound", type=float, default=1.0, help="mean absolute difference, 0-255 scale")
    parser.add_argument("--out", help="also write the result as JSON")
    args = parser.parse_args(argv)
    directory = Path(args.artifacts)
    embeddings, items = load_build(directory)
    root = directory.resolve().parent
    paths = [p if p.is_absolute() else root / p for p in map(Path, np.load(directory / "image_paths.npy"))]
    ids = items["id"].to_numpy()

    identical, near, past = ground_truth(paths, args.pixel_bound)
    truth = identical | near
    scored = sorted(((float(s), int(i), int(j)) for left, right, scores in similar_pairs(embeddings, 0.99)
                     for i, j, s in zip(left, right, scores, strict=True)), key=lambda t: (-t[0], t[1], t[2]))
    cosine = {(i, j): s for s, i, j in scored}
    curve = sweep(scored, truth)
    best = max(range(len(curve)), key=lambda k: (2 * curve[k]["precision"] * curve[k]["recall"]
                                                 / max(curve[k]["precision"] + curve[k]["recall"], 1e-12), -k))
    below = scored[best + 1][0] if best + 1 < len(scored) else 0.99
    chosen = round((scored[best][0] + below) / 2, 4)

    print(f"images: {len(paths)}; duplicate pairs by pixels: {len(truth)} "
          f"({len(identical)} identical, {len(near)} within mean |diff| <= {args.pixel_bound})")
    for mad, i, j in past:
        print(f"  next pixel pair past the bound: {ids[i]} / {ids[j]}, mean |diff| {mad:.2f}, "
              f"cosine {float(embeddings[i] @ embeddings[j]):.5f}")
    missed = sorted((cosine.get(pair, float(embeddings[pair[0]] @ embeddings[pair[1]])), pair) for pair in truth)
    print(f"lowest cosine of a pixel duplicate: {missed[0][0]:.5f} ({ids[missed[0][1][0]]} / {ids[missed[0][1][1]]})")
    first_other = next(((s, i, j) for s, i, j in scored if (i, j) not in truth), None)
    if first_other:
        print(f"highest cosine of a pair that is not: {first_other[0]:.5f} ({ids[first_other[1]]} / "
              f"{ids[first_other[2]]})")
    print(f"chosen threshold (best F1, midway between {scored[best][0]:.5f} and {below:.5f}): {chosen}"
          f"  [lookalike.search.duplicates.NEAR_DUPLICATE_COSINE = {NEAR_DUPLICATE_COSINE}]")
    print()
    print("| cosine >= | pairs | pixel duplicates among them | precision | recall |")
    print("|---|---|---|---|---|")
    table = [at(scored, truth, t) for t in sorted({*REPORTED, chosen})]
    for row in table:
        mark = " (chosen)" if row["threshold"] == chosen else ""
        print(f"| {row['threshold']}{mark} | {row['pairs']} | {row['duplicates_found']} | "
              f"{row['precision']:.3f} | {row['recall']:.3f} |")
    result = {"images": len(paths), "pixel_bound": args.pixel_bound, "identical_pairs": len(identical),
              "near_identical_pairs": len(near), "chosen": chosen, "table": table,
              "truth": sorted([int(ids[i]), int(ids[j])] for i, j in truth)}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
