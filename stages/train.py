"""Stage train: cached backbone features -> artifacts/model.keras (image -> unit 256-d embedding).

The head trains on the cached features of the train split; the val split picks
the step to keep. The saved model is the full network, backbone included, so
search needs nothing else.
"""

from __future__ import annotations

import numpy as np

from lookalike.artifacts import write_bytes, write_json, write_with
from lookalike.catalogue import read_table
from lookalike.model import build_embedding_model, new_backbone
from lookalike.params import PROJECT_ROOT, load_params
from lookalike.training import finetune_backbone, train_head


def main() -> None:
    params = load_params()
    label = params["data"]["label_column"]
    subset = read_table(PROJECT_ROOT / "data/subset.csv")
    features = np.load(PROJECT_ROOT / "artifacts/features.npy", mmap_mode="r")
    if features.shape[1] != len(subset):
        raise SystemExit(f"artifacts/features.npy has {features.shape[1]} rows but data/subset.csv has "
                         f"{len(subset)}: rerun the features stage (dvc repro)")
    labels = subset[label].to_numpy()
    split = subset["split"].to_numpy()
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    result = train_head(np.asarray(features), labels, train_rows, val_rows, params["model"], params["train"])
    print(f"trained head in {result.seconds:.1f} s; kept step {result.best_step} "
          f"(val MAP@R {result.best_validation.get('map_at_r', float('nan')):.4f})")
    backbone = params["backbone"]
    model = build_embedding_model(new_backbone(backbone["name"], backbone["image_size"], backbone["weights"]),
                                  result.head)
    summary = {"head_seconds": round(result.seconds, 1), "best_step": result.best_step,
               **{f"val_{k}": v for k, v in result.best_validation.items()}}
    if params["train"]["finetune_blocks"] > 0:
        summary.update(finetune_backbone(model, subset["image_path"].tolist(), labels, train_rows, params, result))
    write_with(PROJECT_ROOT / "artifacts/model.keras", model.save)
    write_bytes(PROJECT_ROOT / "metrics/train_loss.csv", result.history[["step", "loss"]].to_csv(index=False).encode())
    write_json(PROJECT_ROOT / "metrics/train.json", summary)


if __name__ == "__main__":
    main()
