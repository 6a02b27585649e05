"""Stage embed: the trained model for the inference runtime, then every subset image ->
artifacts/embeddings.npy, image_paths.npy, items.csv (same row order), and more_photos.npz: the items'
other photos when a catalogue has several per item (paths, the item row of each, their embeddings by the
exported model; empty arrays otherwise: lookalike/search/photos.py).

artifacts/model.tflite: artifacts/model.keras exported for the inference runtime (LiteRT), checked
against Keras on real catalogue photos (the stage fails, naming the disagreement, below cosine
0.9999); the build pins it and every query runs through it.

While the backbone is frozen the saved model's head is applied to the cached
backbone features (computed by the runtime in the features stage): the same numbers
as the full exported model (tests/test_pipeline.py checks it) at a fraction of the cost.
Fine-tuned, the photos run through the exported model. With ``embed.engine: ray`` they always do,
on Ray Data (lookalike/model/distributed.py; shards kept in data/embed_shards/, so a killed run resumes).
"""

from __future__ import annotations

import time

import numpy as np

from lookalike.artifacts import write_bytes, write_npy
from lookalike.catalogue.reading import MORE_PHOTOS_COLUMN, read_table, write_table
from lookalike.model.network import export_runtime_model, load_embedding_model
from lookalike.model.runtime import EmbeddingRuntime, check_images, predict_paths
from lookalike.model.training import embed_features
from lookalike.params import PROJECT_ROOT, load_params, preprocess_spec
from lookalike.search.photos import MORE_PHOTOS_FILE, embed_more_photos


def main() -> None:
    params = load_params()
    subset = read_table(PROJECT_ROOT / "data/subset.csv")
    model = load_embedding_model(PROJECT_ROOT / "artifacts/model.keras")
    paths = subset["image_path"].tolist()
    spec = preprocess_spec(params)
    exported = time.perf_counter()
    runtime_file = PROJECT_ROOT / "artifacts/model.tflite"
    found = export_runtime_model(model, runtime_file, check_images(paths, spec), "embedding model")
    print(f"model exported in {time.perf_counter() - exported:.1f} s; against Keras: min cosine "
          f"{found['min_cosine']:.7f}, max abs diff {found['max_abs_diff']:.2g}")
    engine = params.get("embed", {}).get("engine", "local")
    if engine == "ray":  # the exported model over the photos on Ray Data, resumable: lookalike/model/distributed.py
        from lookalike.model.distributed import EMBED_SHARDS_DIR, embed_paths

        embed = params["embed"]
        embeddings = embed_paths(paths, subset["id"].to_numpy(), runtime_file, spec, PROJECT_ROOT / EMBED_SHARDS_DIR,
                                 workers=embed.get("workers") or None, address=embed.get("address") or None,
                                 batch_size=params["features"]["batch_size"])
    elif params["train"]["finetune_blocks"] == 0:
        features = np.load(PROJECT_ROOT / "artifacts/features.npy", mmap_mode="r")[0]
        embeddings = embed_features(model.get_layer("head"), np.asarray(features))
        print(f"embedded {len(paths)} images from cached backbone features")
    else:
        embeddings = predict_paths(EmbeddingRuntime(runtime_file), paths, spec, params["features"]["batch_size"],
                                   description="embeddings")
    norms = np.linalg.norm(embeddings, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-4):
        raise SystemExit(f"embeddings are not unit length (norms {norms.min():.4f}..{norms.max():.4f})")
    write_npy(PROJECT_ROOT / "artifacts/embeddings.npy", embeddings.astype(np.float32))
    write_npy(PROJECT_ROOT / "artifacts/image_paths.npy", np.array(paths, dtype=str))
    more = subset[MORE_PHOTOS_COLUMN].tolist() if MORE_PHOTOS_COLUMN in subset else [""] * len(subset)
    embed_more_photos(more, EmbeddingRuntime(runtime_file), spec, params["features"]["batch_size"],
                      PROJECT_ROOT / "artifacts" / MORE_PHOTOS_FILE)
    write_bytes(PROJECT_ROOT / "artifacts/items.csv",
                write_table(subset.drop(columns=["image_path", MORE_PHOTOS_COLUMN], errors="ignore")))


if __name__ == "__main__":
    main()
