"""Does training the backbone's last blocks with the look losses tell colours (and types) apart better?

On a project whose pipeline has run, the maps that enter the last N blocks are computed for every view the
features stage cached (same rows, same seeds) and the descriptor it cached for those views is put after them:
the rows the pipeline's own fine-tuning trains on (``train.finetune_blocks``; stages/features.py). The picture
sub-space (fitted, not trained) is left out of every row, the baseline included, so the rows differ only in what
trains.

    python -m study.finetune_looks --project . --blocks 1 --out metrics/finetune_looks.csv

Rows: ``head`` (the default head without the picture sub-space, on the cached features) and ``finetune_N``
(the same head with the last N blocks training at ``train.finetune_learning_rate``, for ``--steps`` steps).
Scored like study/looks.py: test queries against the whole catalogue, the "colour" mode too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from lookalike.catalogue.reading import read_table
from lookalike.model.backbones import split_backbone
from lookalike.model.colour import COLOUR_FEATURES
from lookalike.model.network import (
    CompiledModel,
    build_bottom_model,
    build_pooled_top,
    export_runtime_model,
    new_backbone,
)
from lookalike.model.runtime import EmbeddingRuntime, check_images
from lookalike.model.training import (
    attribute_labels,
    augmented_rows,
    embed_features,
    freeze_for_finetuning,
    train_head,
)
from lookalike.params import FEATURES_COLUMN, preprocess_spec
from lookalike.search.similarity import Similarity
from stages.features import run_views
from study import project_catalogue
from study.looks import score


def cached_maps(project: Path, params: dict, blocks: int, cache: Path | None) -> tuple[np.ndarray, keras.Model]:
    """float16 (views, n, h*w*c): the flat maps entering the last ``blocks`` blocks for every view the features
    stage computed (read from, or saved to, ``cache`` when given); and the top blocks, the only trainable layers."""
    backbone_params, features = params["backbone"], params["features"]
    backbone = new_backbone(backbone_params["name"], backbone_params["image_size"], backbone_params["weights"])
    bottom, top = split_backbone(backbone, backbone_params["name"], blocks)
    freeze_for_finetuning(backbone, top)
    if cache is not None and cache.is_file():
        return np.load(cache, mmap_mode="r"), top
    subset = read_table(project / "data/subset.csv")
    spec = preprocess_spec(params)
    paths = subset["image_path"].tolist()
    with tempfile.TemporaryDirectory(prefix="lookalike-bottom-") as folder:
        export_runtime_model(build_bottom_model(bottom), Path(folder) / "bottom.tflite", check_images(paths, spec),
                             "bottom")
        _, maps = run_views(EmbeddingRuntime(Path(folder) / "bottom.tflite"), CompiledModel(build_pooled_top(top)),
                            paths, augmented_rows(subset["split"].to_numpy()), spec, features)
    if cache is not None:
        np.save(cache, maps)
    return maps, top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--blocks", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--skip-head", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--maps-cache", type=Path, help="a folder to keep the maps in between runs (GBs at 19k)")
    args = parser.parse_args()
    project = args.project.resolve()
    params, description = project_catalogue(project)
    items = read_table(project / "artifacts/items.csv")
    features = np.load(project / "artifacts/features.npy", mmap_mode="r")
    if not params["model"].get("colour_descriptor"):
        raise SystemExit("the project's features hold no colour descriptor")
    label, colour = description.label, description.colour
    subspaces = {name: spec for name, spec in params["model"]["subspaces"].items()
                 if spec["column"] != FEATURES_COLUMN}
    model_params = {**params["model"], "subspaces": subspaces,
                    "embedding_dim": sum(spec["dim"] for spec in subspaces.values())}
    split = items["split"].to_numpy()
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    queries = np.flatnonzero(split == "test")
    labels = attribute_labels(items, label)
    attributes = {name: attribute_labels(items, spec["column"]) for name, spec in subspaces.items()}
    look = attribute_labels(items, f"{label}+{colour}")
    similarity = Similarity.from_params(model_params)
    records = []

    def record(name: str, embeddings: np.ndarray, seconds: float, steps: int) -> None:
        asked = np.stack([similarity.query_vector(v, {"colour": 1.0}) for v in embeddings[queries]])
        colour_mode = score(embeddings, items, queries, description, asked)
        scores = score(embeddings, items, queries, description)
        records.append({"row": name, **{k: round(v, 4) for k, v in scores.items()},
                        **{f"colour_mode_{k}": round(colour_mode[k], 4)
                           for k in ("colour_precision_at_5", "colour_family_precision_at_5") if k in colour_mode},
                        "train_seconds": round(seconds, 1), "steps": steps})
        print(name, {k: v for k, v in records[-1].items() if "precision_at_5" in k or k in ("top5_accuracy",
                                                                                          "train_seconds")},
              flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(records).to_csv(args.out, index=False)

    if not args.skip_head:
        result = train_head(np.asarray(features), labels, train_rows, val_rows, model_params, params["train"],
                            attributes=attributes, look_labels=look)
        record("head", embed_features(result.head, features[0]), result.seconds, len(result.history))
    descriptor = np.asarray(features[..., -COLOUR_FEATURES:], np.float16)
    for blocks in args.blocks:
        started = time.perf_counter()
        cache = args.maps_cache / f"maps_{blocks}.npy" if args.maps_cache else None
        maps, top = cached_maps(project, params, blocks, cache)
        # the rows the features stage writes when fine-tuning: flat maps, then the view's descriptor
        rows = np.concatenate([np.asarray(maps).reshape(*maps.shape[:2], -1), descriptor], axis=-1)
        print(f"finetune_{blocks}: maps {maps.shape} in {time.perf_counter() - started:.0f} s", flush=True)
        del maps
        pooled_top = build_pooled_top(top, COLOUR_FEATURES)
        result = train_head(rows, labels, train_rows, val_rows, model_params,
                            {**params["train"], "finetune_steps": args.steps}, backbone_top=pooled_top,
                            attributes=attributes, look_labels=look)
        model = keras.Model(pooled_top.input, result.head(pooled_top.output)[0])
        record(f"finetune_{blocks}", embed_features(model, rows[0], 256), result.seconds, len(result.history))


if __name__ == "__main__":
    main()
