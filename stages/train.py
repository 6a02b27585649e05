"""Stage train: cached backbone features -> artifacts/model.keras (image -> unit embedding, 512-d by default).

The head trains on the cached features (and colour descriptor) of the train split, one sub-space
per attribute of ``model.subspaces``, each on its own label; the val split picks the step to keep. A sub-space of
column ``@features`` (the picture) is fitted on the train split's features first and never trained.
With ``train.finetune_blocks: N`` the last N backbone blocks train with it, on the cached maps that
enter them (artifacts/feature_maps.npy, the colour descriptor of the same view after them).
The saved model is the full network, backbone included, so search needs nothing else.
"""

from __future__ import annotations

import json

import numpy as np

from lookalike.artifacts import write_bytes, write_json, write_with
from lookalike.catalogue.reading import read_table
from lookalike.model.backbones import split_backbone
from lookalike.model.colour import COLOUR_FEATURES
from lookalike.model.network import build_embedding_model, build_pooled_top, new_backbone, save_embedding_model
from lookalike.model.training import (
    MISSING,
    attribute_labels,
    freeze_for_finetuning,
    maps_description,
    neighbour_groups,
    train_head,
)
from lookalike.params import PROJECT_ROOT, catalogue_description, load_params, preprocess_spec


def main() -> None:
    params = load_params()
    description = catalogue_description(params)
    label = description.label
    finetune_blocks = params["train"]["finetune_blocks"]
    subset = read_table(PROJECT_ROOT / "data/subset.csv")
    cached = "feature_maps.npy" if finetune_blocks else "features.npy"
    features = np.load(PROJECT_ROOT / "artifacts" / cached, mmap_mode="r")
    if features.ndim < 3 or features.shape[1] != len(subset):
        raise SystemExit(f"artifacts/{cached} has shape {features.shape}, not (views, {len(subset)}, ...) "
                         "for data/subset.csv: rerun the features stage (dvc repro)")
    labels = attribute_labels(subset, label) if label else np.full(len(subset), MISSING)
    split = subset["split"].to_numpy()
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    if label is None and params["train"].get("transductive"):  # no label to leak: every photo but val's
        train_rows = np.flatnonzero(split != "val")
    backbone_params = params["backbone"]
    backbone = new_backbone(backbone_params["name"], backbone_params["image_size"], backbone_params["weights"])
    top = None
    if finetune_blocks:
        blocks = split_backbone(backbone, backbone_params["name"], finetune_blocks)[1]
        cached_for = json.loads((PROJECT_ROOT / "artifacts/feature_maps.json").read_text())
        if cached_for != maps_description(params, features.shape):
            raise SystemExit(f"artifacts/feature_maps.npy was cut for {cached_for}, not for these params "
                             f"({maps_description(params, features.shape)}): rerun the features stage (dvc repro)")
        freeze_for_finetuning(backbone, blocks)
        top = build_pooled_top(blocks, COLOUR_FEATURES if params["model"]["colour_descriptor"] else 0)
    # Maps stay memory-mapped (hundreds of MB at 5k, gigabytes for the full download); pooled features are small.
    subspaces = params["model"]["subspaces"]
    attributes = {name: attribute_labels(subset, spec["column"]) for name, spec in subspaces.items()}
    look = attribute_labels(subset, f"{label}+{description.colour}") if label and description.colour else None
    groups = int(params["train"].get("neighbour_groups", 0))  # look-alike photos as instance positives: no label
    items = neighbour_groups(features[0], np.sort(np.concatenate([train_rows, val_rows])), groups,
                             int(params["train"]["seed"])) if groups and not finetune_blocks else None
    result = train_head(features if finetune_blocks else np.asarray(features), labels, train_rows, val_rows,
                        params["model"], params["train"], backbone_top=top, attributes=attributes, look_labels=look,
                        items=items)
    print(f"trained in {result.seconds:.1f} s; kept step {result.best_step} "
          f"(val MAP@R {result.best_validation.get('map_at_r', float('nan')):.4f})")
    colour = preprocess_spec(params).normalisation if params["model"]["colour_descriptor"] else None
    model = build_embedding_model(backbone, result.head, colour)
    steps = len(result.history)
    summary = {"train_seconds": round(result.seconds, 1), "seconds_per_step": round(result.seconds / steps, 4),
               "steps_run": steps, "best_step": result.best_step,
               **{f"val_{k}": v for k, v in result.best_validation.items()}}
    write_with(PROJECT_ROOT / "artifacts/model.keras", lambda path: save_embedding_model(model, path))
    write_bytes(PROJECT_ROOT / "metrics/train_loss.csv", result.history[["step", "loss"]].to_csv(index=False).encode())
    write_json(PROJECT_ROOT / "metrics/train.json", summary)


if __name__ == "__main__":
    main()
