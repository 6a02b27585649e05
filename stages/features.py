"""Stage features: pretrained-backbone features of every subset image, computed once.

artifacts/features.npy: float32 (1 + augmented_views, n_images, feature_dim) pooled
features in data/subset.csv row order; view 0 is the plain image, the others are
augmented views of train images (copies of view 0 elsewhere, never sampled).

artifacts/feature_maps.npy: with ``train.finetune_blocks: N > 0``, float16
(1 + augmented_views, n_images, h, w, c), the maps entering the last N backbone
blocks, so fine-tuning those blocks never re-runs the frozen ones; an empty array otherwise.
artifacts/feature_maps.json says which blocks they feed: maps of two cuts can share a shape.
"""

from __future__ import annotations

import time

import numpy as np

from lookalike.artifacts import write_json, write_npy
from lookalike.backbones import split_backbone
from lookalike.catalogue import images_set_aside, read_table
from lookalike.model import CompiledModel, build_feature_model, new_backbone, predict_paths
from lookalike.params import PROJECT_ROOT, load_params, preprocess_spec
from lookalike.training import embed_features, maps_description


def main() -> None:
    params = load_params()
    backbone_params, features = params["backbone"], params["features"]
    finetune_blocks = params["train"]["finetune_blocks"]
    subset = read_table(PROJECT_ROOT / "data/subset.csv")
    spec = preprocess_spec(params)
    backbone = new_backbone(backbone_params["name"], spec.image_size, backbone_params["weights"])
    if finetune_blocks:
        bottom, top = split_backbone(backbone, backbone_params["name"], finetune_blocks)
        model, pool_maps = CompiledModel(bottom), CompiledModel(build_feature_model(top))
    else:
        model = CompiledModel(build_feature_model(backbone))
    paths = subset["image_path"].tolist()
    train_rows = np.flatnonzero(subset["split"].to_numpy() == "train")
    started = time.perf_counter()
    views = features["augmented_views"] + 1
    pooled_views = []
    maps = np.zeros((0,), np.float16)  # filled in place: one copy of every view's maps in memory, no stacking
    for view in range(views):
        rows = np.arange(len(paths)) if view == 0 else train_rows
        outputs = predict_paths(model, [paths[i] for i in rows], spec, features["batch_size"],
                                augment_seed=None if view == 0 else features["seed"] * 1000 + view,
                                description="backbone features" if view == 0 else f"augmented view {view}")
        if finetune_blocks:
            if view == 0:
                maps = np.empty((views, len(paths), *outputs.shape[1:]), np.float16)
            else:
                maps[view] = maps[0]  # rows outside train keep the plain view (never sampled)
            maps[view, rows] = outputs
            outputs = embed_features(pool_maps, outputs)  # pooled from the float32 maps, as the full model does
        pooled = pooled_views[0].copy() if view else np.empty((len(paths), outputs.shape[1]), np.float32)
        pooled[rows] = outputs
        pooled_views.append(pooled)
    seconds = time.perf_counter() - started
    images = len(paths) + len(train_rows) * features["augmented_views"]
    print(f"features: {images} images in {seconds:.1f} s ({images / seconds:.1f} images/s)")
    set_aside, line = images_set_aside(PROJECT_ROOT / "data/subset_report.json")
    print(f"features: {line}")
    write_npy(PROJECT_ROOT / "artifacts/features.npy", np.stack(pooled_views))
    write_npy(PROJECT_ROOT / "artifacts/feature_maps.npy", maps)
    write_json(PROJECT_ROOT / "artifacts/feature_maps.json", maps_description(params, maps.shape))
    write_json(PROJECT_ROOT / "metrics/features.json", {
        "images": images, "seconds": round(seconds, 1), "images_per_second": round(images / seconds, 1),
        "skipped": set_aside,
    })


if __name__ == "__main__":
    main()
