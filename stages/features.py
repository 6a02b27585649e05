"""Stage features: pretrained-backbone features of every subset image, computed once.

artifacts/features.npy: float32 (1 + augmented_views, n_images, feature_dim) pooled
features in data/subset.csv row order, followed by the colour descriptor (lookalike/model/colour.py)
with ``model.colour_descriptor``; view 0 is the plain image, the others are augmented views of
train and val images (copies of view 0 elsewhere, never sampled; an instance sub-space, column ``@instance``,
asks val images' view 1 as its validation queries): flip, crop, jitter and, with
``features.shopper_alterations``, with probability ``features.alteration_rate``, one of the alterations a
shopper's photo brings (blur, a coloured background, phone JPEG: lookalike/model/alterations.py).

artifacts/feature_maps.npy: with ``train.finetune_blocks: N > 0``, float16
(1 + augmented_views, n_images, h*w*c [+ colour descriptor]): per view, the maps entering the last N backbone
blocks, flattened, and with ``model.colour_descriptor`` the view's descriptor after them
(lookalike.model.network.build_bottom_model), so fine-tuning those blocks never re-runs the frozen ones and the
head still sees the photo's colours; an empty array otherwise.
artifacts/feature_maps.json says which blocks they feed: maps of two cuts can share a shape.

artifacts/backbone.tflite: the pretrained backbone with its pooling (image -> pooled features),
exported for the inference runtime and checked against Keras on real photos. The photos run
through it (through the exported blocks below the cut when fine-tuning), never through TensorFlow;
the build pins it for the pretrained baseline of ``evaluate-folder``.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from lookalike.artifacts import write_json, write_npy
from lookalike.catalogue.reading import images_set_aside, read_table
from lookalike.model.backbones import split_backbone
from lookalike.model.colour import COLOUR_FEATURES
from lookalike.model.network import (
    CompiledModel,
    build_bottom_model,
    build_feature_model,
    build_pooled_top,
    export_runtime_model,
    new_backbone,
)
from lookalike.model.runtime import EmbeddingRuntime, check_images, predict_paths
from lookalike.model.training import augmented_rows, embed_features, maps_description
from lookalike.params import PROJECT_ROOT, load_params, preprocess_spec


def run_views(model: EmbeddingRuntime, pool_maps: CompiledModel | None, paths: list[str],
              rows_with_views: np.ndarray, spec, features: dict) -> tuple[list[np.ndarray], np.ndarray]:
    """Pooled features of every view (and, with ``pool_maps``, the flat map rows ``model`` gives, turned into
    pooled features by it); views after the first are computed for ``rows_with_views`` only."""
    views = features["augmented_views"] + 1
    pooled_views = []
    maps = np.zeros((0,), np.float16)  # filled in place: one copy of every view's maps in memory, no stacking
    for view in range(views):
        rows = np.arange(len(paths)) if view == 0 else rows_with_views
        outputs = predict_paths(model, [paths[i] for i in rows], spec, features["batch_size"],
                                augment_seed=None if view == 0 else features["seed"] * 1000 + view,
                                description="backbone features" if view == 0 else f"augmented view {view}",
                                alterations=tuple(features.get("shopper_alterations", ())),
                                alteration_rate=float(features.get("alteration_rate", 0.5)))
        if pool_maps is not None:
            if view == 0:
                maps = np.empty((views, len(paths), *outputs.shape[1:]), np.float16)
            else:
                maps[view] = maps[0]  # rows without augmented views keep the plain view (never sampled)
            maps[view, rows] = outputs
            outputs = embed_features(pool_maps, outputs, 256)  # pooled from float32 maps, as the full model does
        pooled = pooled_views[0].copy() if view else np.empty((len(paths), outputs.shape[1]), np.float32)
        pooled[rows] = outputs
        pooled_views.append(pooled)
    return pooled_views, maps


def main() -> None:
    params = load_params()
    backbone_params, features = params["backbone"], params["features"]
    finetune_blocks = params["train"]["finetune_blocks"]
    subset = read_table(PROJECT_ROOT / "data/subset.csv")
    spec = preprocess_spec(params)
    paths = subset["image_path"].tolist()
    augmented = augmented_rows(subset["split"].to_numpy())
    backbone = new_backbone(backbone_params["name"], spec.image_size, backbone_params["weights"])
    exported = time.perf_counter()
    photos = check_images(paths, spec)
    backbone_file = PROJECT_ROOT / "artifacts/backbone.tflite"
    colour = spec.normalisation if params["model"]["colour_descriptor"] else None
    export_runtime_model(build_feature_model(backbone, colour), backbone_file, photos, "backbone")
    with ExitStack() as stack:
        pool_maps = None
        if finetune_blocks:
            bottom, top = split_backbone(backbone, backbone_params["name"], finetune_blocks)
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lookalike-bottom-")))
            export_runtime_model(build_bottom_model(bottom, colour), folder / "bottom.tflite", photos,
                                 f"backbone below its last {finetune_blocks} blocks")
            pooled_top = build_pooled_top(top, COLOUR_FEATURES if colour else 0)
            model, pool_maps = EmbeddingRuntime(folder / "bottom.tflite"), CompiledModel(pooled_top)
        else:
            model = EmbeddingRuntime(backbone_file)
        print(f"backbone exported and checked against Keras in {time.perf_counter() - exported:.1f} s")
        started = time.perf_counter()
        pooled_views, maps = run_views(model, pool_maps, paths, augmented, spec, features)
        seconds = time.perf_counter() - started
    images = len(paths) + len(augmented) * features["augmented_views"]
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
