"""Learning curve on a catalogue run: how retrieval quality grows with the number of training photos.

Test queries and gallery stay fixed (the run's test split against all its photos, the query itself
excluded, as the evaluate stage does); the head trains on growing, seeded, label-stratified parts of
the run's train split with the run's params, early-stopped on the run's whole val split. The pretrained
features do not train, so their row is the same at every size (drawn as a line for reference).

    python -m study.learning_curve --project /tmp/lookalike-fashion-19k
    # after bash study/run_catalogue.sh params-19k.yaml fashion-19k

Writes metrics/fashion-19k/learning_curve.csv (a DVC plot, see dvc.yaml) and docs/learning_curve_19k.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.catalogue.reading import read_table
from lookalike.catalogue.subset import stratified_subset
from lookalike.evaluation.metrics import METRIC_NAMES, evaluate_retrieval, unit_rows
from lookalike.model.training import embed_features, train_head
from study import project_catalogue

PLOTTED = (("precision_at_1", "P@1"), ("precision_at_5", "P@5"), ("top5_accuracy", "top-5 accuracy"),
           ("map_at_r", "MAP@R"))


def train_subsets(subset: pd.DataFrame, label: str, sizes: list[int], seed: int) -> dict[int, np.ndarray]:
    """Rows of ``subset``'s train split for each size: label-stratified (as the catalogue subset is), seeded.
    A size at or above the split's size is the whole split, in the train stage's row order."""
    train = subset[subset["split"] == "train"].assign(row=np.flatnonzero(subset["split"].to_numpy() == "train"))
    chosen = {}
    for size in sizes:
        if size >= len(train):
            chosen[len(train)] = train["row"].to_numpy()
        else:
            part = stratified_subset(train, label, size, seed=seed)
            chosen[size] = np.sort(part["row"].to_numpy())
    return chosen


def plot(table: pd.DataFrame, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(PLOTTED), figsize=(4 * len(PLOTTED), 3.6), sharex=True)
    for axis, (metric, name) in zip(axes, PLOTTED, strict=True):
        axis.plot(table["train_photos"], table[f"trained_{metric}"], "o-", label="trained head")
        axis.plot(table["train_photos"], table[f"pretrained_{metric}"], "--", color="grey",
                  label="pretrained features")
        axis.set_xscale("log")
        axis.set_title(name)
        axis.set_xlabel("training photos")
        axis.grid(True, alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def title(params: dict, queries: int, photos: int) -> str:
    return (f"{Path(params['data']['catalogue_dir']).name}: {queries} test queries against {photos} photos; "
            "head trained on part of the train split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("/tmp/lookalike-fashion-19k"),
                        help="a project that ran the pipeline (the scratch copy of study/run_catalogue.sh "
                             "params-19k.yaml fashion-19k)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 3500, 7000, 10**9],
                        help="training photos per point; at or above the train split: all of it")
    parser.add_argument("--seed", type=int, default=0, help="which photos make each part")
    parser.add_argument("--csv", type=Path, default=Path("metrics/fashion-19k/learning_curve.csv"))
    parser.add_argument("--png", type=Path, default=Path("docs/learning_curve_19k.png"))
    args = parser.parse_args()
    params, description = project_catalogue(args.project)
    label = description.label
    subset = read_table(args.project / "data/subset.csv")
    features = np.load(args.project / "artifacts/features.npy")
    labels = subset[label].to_numpy()
    split = subset["split"].to_numpy()
    val_rows, queries = np.flatnonzero(split == "val"), np.flatnonzero(split == "test")
    pretrained, _ = evaluate_retrieval(unit_rows(features[0]), labels, queries)
    records = []
    for train_rows in train_subsets(subset, label, args.sizes, args.seed).values():
        result = train_head(features, labels, train_rows, val_rows, params["model"], params["train"],
                            log=lambda _line: None)
        started = time.perf_counter()
        trained, _ = evaluate_retrieval(embed_features(result.head, features[0]), labels, queries)
        record = {"train_photos": len(train_rows), "labels_trained": int(pd.Series(labels[train_rows]).nunique()),
                  "best_step": result.best_step, "train_seconds": round(result.seconds, 1),
                  **{f"trained_{m}": round(trained[m], 4) for m in METRIC_NAMES},
                  **{f"pretrained_{m}": round(pretrained[m], 4) for m in METRIC_NAMES}}
        records.append(record)
        print(f"{len(train_rows):>6} photos: " + ", ".join(f"{m} {trained[m]:.4f}" for m in METRIC_NAMES)
              + f" (kept step {result.best_step}, {result.seconds:.0f} s training, "
              f"{time.perf_counter() - started:.0f} s evaluation)", flush=True)
    table = pd.DataFrame(records)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False)
    plot(table, args.png, title(params, len(queries), len(subset)))
    print(f"wrote {args.csv} and {args.png}")


if __name__ == "__main__":
    main()
