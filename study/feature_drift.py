"""How much the default run's metrics move when the head trains on features that differ by about 1e-6.

The move to LiteRT moved the features stage's backbone pass from TensorFlow to LiteRT: the cached features differ
from TensorFlow's by about 1e-6 (max abs), the pretrained metrics are equal to 6 digits, and yet the
trained metrics of the default run moved by a few thousandths. This trains the head (train.py's
``train_head``, the project's params, head alone) on: the features of each given file, and the first
file's features plus Gaussian noise of ``--noise`` (relative to each feature's magnitude) under a few
seeds, then scores each trained head's embeddings like stages/evaluate.py (test split against all).
The spread among the noisy rows is the training's own sensitivity to inputs perturbed at that level.

    python -m study.feature_drift --project /tmp/before --features /tmp/before/artifacts/features.npy \
        /tmp/after/artifacts/features.npy          # about 25 s per row on 2 cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lookalike.catalogue.reading import read_table
from lookalike.evaluation.metrics import evaluate_retrieval
from lookalike.model.training import embed_features, train_head
from study import project_catalogue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", required=True, help="a project after dvc repro (data/subset.csv, params.yaml)")
    parser.add_argument("--features", nargs="+", required=True, help="features.npy files of the same subset")
    parser.add_argument("--noise", type=float, default=1e-6)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    project = Path(args.project)
    params, description = project_catalogue(project)
    subset = read_table(project / "data/subset.csv")
    labels = subset[description.label].to_numpy()
    split = subset["split"].to_numpy()
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    queries = np.flatnonzero(split == "test")
    runs = {Path(f).parent.parent.name + ":" + Path(f).name: np.load(f) for f in args.features}
    first = next(iter(runs.values()))
    for seed in range(args.seeds):
        noise = np.random.default_rng(seed).standard_normal(first.shape).astype(np.float32)
        runs[f"first + {args.noise:g} relative noise, seed {seed}"] = first + first * args.noise * noise
    reference = None
    print("| features | max abs diff to the first | P@1 | P@5 | R@5 | mAP@5 | top-5 acc | MAP@R |")
    print("|---|---|---|---|---|---|---|---|")
    for name, features in runs.items():
        result = train_head(features, labels, train_rows, val_rows, params["model"], params["train"],
                            log=lambda *_: None)
        metrics = evaluate_retrieval(embed_features(result.head, features[0]), labels, queries)[0]
        reference = reference or metrics
        print(f"| {name} | {np.abs(features - first).max():.2g} | "
              + " | ".join(f"{v:.4f}" for v in metrics.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
