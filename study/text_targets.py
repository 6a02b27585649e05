"""What the text tower should land on: the space it is trained into and searched in, taken from the build's stored
vectors (as the text stage does) or from the pretrained backbone's features, which keep the product identity that
the label-trained head removes.

    python -m study.text_targets [--project .] [--out metrics/text_targets.csv] [--only NAME ...] [--set k=v ...]
    python -m study.text_targets --project /tmp/lookalike-fashion-19k --out metrics/fashion-19k/text_targets.csv

Reads a finished build (artifacts/items.csv, embeddings.npy, features.npy view 0) and its params.yaml's ``text:``
section. Each row trains the tower with the stage's settings and seed onto one target space, then scores it by the
stage's protocol (lookalike/text/evaluation.py) with that space as the gallery: the learned ranking with words
hidden (title -> photo, attribute queries) and the hybrid with half the words shown. A principal-component
projection is fitted on the train split only; every target row is a unit vector. The "learned projection" rows
train a linear map of the locked features with the tower (as LiT does) and search the features through it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.catalogue.reading import read_table
from lookalike.evaluation.metrics import unit_rows
from lookalike.model.colour import backbone_part
from lookalike.text.evaluation import evaluate_text_search, text_columns
from lookalike.text.training import train_text_tower
from study import project_catalogue
from study.text_variants import scored_row, text_overrides


def principal_components(x: np.ndarray, fit_rows: np.ndarray, dim: int, whiten: float = 0.0) -> np.ndarray:
    """float32 (n, dim): ``x`` centred and projected on the top ``dim`` principal axes of ``x[fit_rows]``, each axis
    divided by its singular value to the power ``whiten`` (1: whitened, every axis the same variance)."""
    x = np.asarray(x, np.float64)
    centred = x - x[fit_rows].mean(0)
    _, values, axes = np.linalg.svd(centred[fit_rows], full_matrices=False)
    return (centred @ axes[:dim].T / values[:dim] ** whiten).astype(np.float32)


# rows whose image side trains with the tower: name -> the projection's dimension
LEARNED_PROJECTION = {"backbone + colour, learned projection to 256": 256,
                      "backbone + colour, learned projection to 512": 512}

Target = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (stored, backbone, colour) -> (n, d)


def targets(fit_rows: np.ndarray) -> dict[str, Target]:
    """Name -> the target space from the stored vectors, the backbone's pooled features and the colour
    descriptor (both view 0, each unit-normalised before they are joined)."""
    def joined(backbone: np.ndarray, colour: np.ndarray, colour_weight: float = 1.0) -> np.ndarray:
        if not colour.size:
            return unit_rows(backbone)
        return np.concatenate([unit_rows(backbone), colour_weight * unit_rows(colour)], axis=1)

    return {
        "stored vectors": lambda s, b, c: s,
        "backbone, 256 principal components": lambda s, b, c: principal_components(unit_rows(b), fit_rows, 256),
        "backbone + colour, 256 principal components": lambda s, b, c: principal_components(joined(b, c), fit_rows,
                                                                                             256),
        "backbone + colour, 256 principal components, whitened": lambda s, b, c: principal_components(
            joined(b, c), fit_rows, 256, whiten=1.0),
        "backbone + colour, 256 principal components, half whitened": lambda s, b, c: principal_components(
            joined(b, c), fit_rows, 256, whiten=0.5),
        "backbone + colour, 512 principal components": lambda s, b, c: principal_components(joined(b, c), fit_rows,
                                                                                             512),
        "backbone + colour, whole (no projection)": lambda s, b, c: joined(b, c),
        "backbone + colour at half weight, whole": lambda s, b, c: joined(b, c, 0.5),
        "backbone + colour at double weight, whole": lambda s, b, c: joined(b, c, 2.0),
        "stored vectors + backbone + colour (128 components)": lambda s, b, c: np.concatenate(
            [s, unit_rows(principal_components(joined(b, c), fit_rows, 128))], axis=1),
        "stored vectors at half weight + backbone + colour, whole": lambda s, b, c: np.concatenate(
            [0.5 * unit_rows(s), unit_rows(joined(b, c))], axis=1),
        **{name: lambda s, b, c: joined(b, c) for name in LEARNED_PROJECTION},  # the features, projected in training
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="a project whose pipeline has run")
    parser.add_argument("--out", type=Path, default=Path("metrics/text_targets.csv"))
    parser.add_argument("--only", nargs="*", help="target names to run (default: all)")
    parser.add_argument("--set", nargs="*", default=[], help="text.<key>=<value> overrides for every row")
    args = parser.parse_args()
    params, description = project_catalogue(args.project)
    overrides = text_overrides(args.set)
    config = {**params["text"], **overrides}
    artifacts = args.project / "artifacts"
    items = read_table(artifacts / "items.csv")
    stored = np.load(artifacts / "embeddings.npy")
    features = np.load(artifacts / "features.npy", mmap_mode="r")[0]
    if params["train"]["finetune_blocks"]:
        raise SystemExit("a fine-tuned build's cached features are not its backbone's output: run on a frozen one")
    backbone = np.asarray(backbone_part(features, params["model"]["colour_descriptor"]), np.float32)
    colour = np.asarray(features[:, backbone.shape[1]:], np.float32)
    if not (len(items) == len(stored) == len(features)):
        raise SystemExit(f"{len(items)} items, {len(stored)} vectors, {len(features)} features: rerun the build")
    columns = text_columns(description, items)
    fit_rows = np.flatnonzero(items["split"].to_numpy() == "train")
    rows = []
    for name, target in targets(fit_rows).items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        space = unit_rows(target(stored, backbone, colour)).astype(np.float32)
        tower, report = train_text_tower(items, space, config, columns, seed=int(config["seed"]), log=lambda _: None,
                                         image_projection=LEARNED_PROJECTION.get(name, 0))
        if name in LEARNED_PROJECTION:  # the gallery is the locked features through the kept epoch's projection
            space = unit_rows(space @ report["image_projection"]).astype(np.float32)
        result = evaluate_text_search(tower, items, space, config, columns, seed=int(config["seed"]))
        row = {"target": name, **overrides, "dim": space.shape[1], **scored_row(report, result, started)}
        print(row, flush=True)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
