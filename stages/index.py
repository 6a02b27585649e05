"""Stage index: embeddings -> artifacts/faiss.index and artifacts/manifest.json, then publish the build.

The manifest pins the model (Keras, and exported for the runtime: model.tflite, backbone.tflite),
embeddings, paths, items and index by sha256, with
the counts and the preprocessing the model expects; every reader checks it.
Publishing copies the finished build to artifacts/builds/<build_id>/ and points
artifacts/current.json at it: DVC deletes and rewrites the stage outputs on the
next run, the published build stays whole for the page meanwhile.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import numpy as np

from lookalike.artifacts import make_manifest, publish_build, write_json, write_with
from lookalike.params import PROJECT_ROOT, catalogue_description, check_k_fits, load_params, query_spec
from lookalike.search.duplicates import calibrate_build
from lookalike.search.index import build_index, save_index
from lookalike.search.photos import MORE_PHOTOS_FILE, load_more_photos
from lookalike.search.similarity import Similarity


def main() -> None:
    params = load_params()
    artifacts = PROJECT_ROOT / "artifacts"
    embeddings = np.load(artifacts / "embeddings.npy")
    paths = np.load(artifacts / "image_paths.npy")
    check_k_fits(params, len(embeddings))
    if len(paths) != len(embeddings):
        raise SystemExit(f"{len(embeddings)} embeddings but {len(paths)} image paths: rerun embed (dvc repro)")
    _, photos, more = load_more_photos(artifacts / MORE_PHOTOS_FILE, len(embeddings), embeddings.shape[1])
    started = time.perf_counter()  # every photo: the items' first ones (rows 0..n-1), then their others
    index = build_index(np.vstack([embeddings, more]), params["index"], seed=params["subset"]["seed"])
    seconds = time.perf_counter() - started
    print(f"{params['index']['type']} index of {index.ntotal} x {index.d} built in {seconds:.2f} s "
          f"({len(embeddings)} items, {len(more)} more photos)")
    write_with(artifacts / "faiss.index", lambda tmp: save_index(index, tmp))
    spec = query_spec(params)
    description = catalogue_description(params)
    report = json.loads((PROJECT_ROOT / "data/subset_report.json").read_text())
    live_fold = {"live_fold": report["live_fold"]} if "live_fold" in report else {}  # see lookalike/live/fold.py
    files = {name: artifacts / file for name, file in (
        ("model", "model.keras"), ("embeddings", "embeddings.npy"), ("image_paths", "image_paths.npy"),
        ("items", "items.csv"), ("index", "faiss.index"), ("more_photos", MORE_PHOTOS_FILE),
        ("runtime_model", "model.tflite"), ("runtime_backbone", "backbone.tflite"))}
    has_words = (artifacts / "text_tower.npz").is_file() and (artifacts / "text_tower.npz").stat().st_size > 0
    for name, file in (("text_tower", "text_tower.npz"), ("text_tokenizer", "text_tokenizer.json")):
        if has_words:  # stage text's outputs (lookalike/text/tower.py); empty: no words, no text search
            files[name] = artifacts / file
    manifest = make_manifest(files, {"count": int(len(embeddings)), "dimension": int(embeddings.shape[1]),
                                     "photos": photos.photos}, {
        "preprocess": asdict(spec),  # read back as PreprocessSpec(**...) by every consumer of the build
        "label_column": description.label,
        "catalogue": description.roles().to_manifest(),  # what each column is for: page, API, text search
        "catalogue_dir": params["data"]["catalogue_dir"],
        "backbone": params["backbone"]["name"],
        "colour_descriptor": params["model"]["colour_descriptor"],  # the last columns of backbone.tflite
        "index": params["index"],
        "similarity": Similarity.from_params(params["model"], params.get("similarity")).to_manifest(),
        **({"text": params["text"]} if "text" in params else {}),
        **live_fold,
    })
    # the build's own near-duplicate threshold (lookalike/search/duplicates.py): its model on copies of its photos
    manifest["near_duplicates"] = calibrate_build(embeddings, paths, artifacts / "model.tflite", spec, PROJECT_ROOT,
                                                  seed=params["subset"]["seed"])
    print(f"near-duplicate cosine {manifest['near_duplicates']['cosine']} "
          f"(from {manifest['near_duplicates']['copies']} copies)")
    write_json(artifacts / "manifest.json", manifest)
    print(f"published build {publish_build(artifacts)}")


if __name__ == "__main__":
    main()
