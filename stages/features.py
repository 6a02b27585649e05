"""Stage features: pooled pretrained-backbone features of every subset image, computed once.

artifacts/features.npy: float32 (1 + augmented_views, n_images, feature_dim) in
data/subset.csv row order; view 0 is the plain image, the others are augmented
views of train images (copies of view 0 elsewhere, never sampled).
"""

from __future__ import annotations

import time

import numpy as np

from lookalike.artifacts import write_json, write_npy
from lookalike.catalogue import read_table
from lookalike.model import CompiledModel, build_feature_model, new_backbone, predict_paths
from lookalike.params import PROJECT_ROOT, load_params, preprocess_spec


def main() -> None:
    params = load_params()
    backbone, features = params["backbone"], params["features"]
    subset = read_table(PROJECT_ROOT / "data/subset.csv")
    spec = preprocess_spec(params)
    model = CompiledModel(build_feature_model(new_backbone(backbone["name"], spec.image_size, backbone["weights"])))
    paths = subset["image_path"].tolist()
    started = time.perf_counter()
    plain = predict_paths(model, paths, spec, features["batch_size"], description="backbone features")
    views = [plain]
    train_rows = np.flatnonzero(subset["split"].to_numpy() == "train")
    for view in range(1, features["augmented_views"] + 1):
        augmented = plain.copy()
        augmented[train_rows] = predict_paths(
            model, [paths[i] for i in train_rows], spec, features["batch_size"],
            augment_seed=features["seed"] * 1000 + view, description=f"augmented view {view}",
        )
        views.append(augmented)
    seconds = time.perf_counter() - started
    images = len(paths) + len(train_rows) * features["augmented_views"]
    print(f"features: {images} images in {seconds:.1f} s ({images / seconds:.1f} images/s)")
    write_npy(PROJECT_ROOT / "artifacts/features.npy", np.stack(views))
    write_json(PROJECT_ROOT / "metrics/features.json", {
        "images": images, "seconds": round(seconds, 1), "images_per_second": round(images / seconds, 1),
    })


if __name__ == "__main__":
    main()
