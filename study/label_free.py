"""Label-free changes to the pretrained features and the trained build, without training: how far a
catalogue's class retrieval moves when each stored vector is replaced by the mean of its k nearest neighbours
(database-side augmentation), the features are PCA-whitened on the train and val photos, or each query is
expanded by its nearest items (the build option index.query_expansion: lookalike/search/expansion.py). Scored
like the evaluate stage (test photos against every photo, own excluded) by the catalogue's first label or
attribute.

    python -m study.label_free --project /tmp/lookalike-grocery-store-unlabelled
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lookalike.catalogue.reading import read_table
from lookalike.evaluation.metrics import evaluate_retrieval, unit_rows
from lookalike.model.colour import backbone_part
from lookalike.params import catalogue_description, load_params
from lookalike.search.expansion import QueryExpansion, expanded_rows
from lookalike.search.index import build_index, search

SHOWN = ("precision_at_1", "precision_at_5", "top5_accuracy", "map_at_r")


def neighbour_average(vectors: np.ndarray, k: int) -> np.ndarray:
    """Each unit row replaced by the unit mean of its k nearest rows (itself among them), exact."""
    similarity = vectors @ vectors.T
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return unit_rows(vectors[nearest].mean(axis=1))


def whitened(vectors: np.ndarray, fit_rows: np.ndarray, dim: int, power: float) -> np.ndarray:
    """PCA whitening fitted on ``fit_rows``: the top ``dim`` components, each scaled by its spread ** power."""
    mean = vectors[fit_rows].mean(axis=0)
    _, spread, components = np.linalg.svd(vectors[fit_rows] - mean, full_matrices=False)
    scale = (spread[:dim] / np.sqrt(len(fit_rows))) ** power
    return unit_rows((vectors - mean) @ (components[:dim].T * scale))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="a project that ran the pipeline")
    args = parser.parse_args()
    params = load_params(args.project / "params.yaml", root=args.project)
    description = catalogue_description(params, args.project)
    label = description.label or description.attributes[0]
    items = read_table(args.project / "artifacts/items.csv")
    cached = np.asarray(np.load(args.project / "artifacts/features.npy", mmap_mode="r")[0], np.float32)
    features = unit_rows(backbone_part(cached, params["model"]["colour_descriptor"]))  # as the evaluate stage
    split = items["split"].to_numpy()
    queries, fit = np.flatnonzero(split == "test"), np.flatnonzero(np.isin(split, ["train", "val"]))
    rows = {"pretrained features": features}
    rows.update({f"mean of {k} nearest": neighbour_average(features, k) for k in (2, 3, 5, 10)})
    rows.update({f"whitened, {dim} dims, power {power}": whitened(features, fit, dim, power)
                 for dim in (128, 256, 512) for power in (-0.5, -0.25)})
    trained = np.load(args.project / "artifacts/embeddings.npy")
    asked = {name: None for name in rows}
    rows["trained build"], asked["trained build"] = trained, None
    for source, vectors in (("pretrained features", features), ("trained build", trained)):
        index = build_index(vectors, {"type": "flat"})
        for neighbours, power in ((2, 0), (4, 3), (9, 3)):
            name = f"{source}, query + {neighbours} nearest, cosine ** {power}"
            rows[name] = vectors
            asked[name] = expanded_rows(QueryExpansion(neighbours, power), vectors, queries,
                                        lambda q, k, index=index: search(index, q, k))
    print("| features | " + " | ".join(SHOWN) + " |\n|---|" + "---|" * len(SHOWN))
    for name, vectors in rows.items():
        scores = evaluate_retrieval(vectors, items[label].to_numpy(), queries, queries=asked[name])[0]
        print(f"| {name} | " + " | ".join(f"{scores[m]:.3f}" for m in SHOWN) + " |")


if __name__ == "__main__":
    main()
