"""Stage evaluate: test-split queries against the whole index, self excluded.

Writes metrics/metrics.json (the trained model and, beside it, the pretrained backbone features without the
head) and metrics/per_label.csv, and logs the run to MLflow. Relevance is the catalogue's main label (for a
catalogue trained without one, its first attribute: read only to score): P@1 ... MAP@R, the look metrics
(label+colour, label+each ``look`` column, colour; by colour family too where the description declares
families for its colour column), relevance by each label and attribute column on its own
(``by_column``), and each similarity mode of the build asked of the same queries. A catalogue with neither
label nor attribute is scored by the instance protocol (lookalike/evaluation/instance.py). Items of the
``gallery`` split (a rare or missing label) are searched but never queries.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lookalike.artifacts import publish_build, verify_manifest, write_bytes, write_json
from lookalike.catalogue.reading import read_table
from lookalike.catalogue.subset import GALLERY_SPLIT
from lookalike.evaluation.instance import altered_queries, instance_metrics, instance_ranks
from lookalike.evaluation.metrics import (
    MorePhotos,
    column_metrics,
    evaluate_retrieval,
    gallery_index,
    look_metrics,
    unit_rows,
)
from lookalike.model.colour import backbone_part
from lookalike.model.preprocessing import PreprocessSpec
from lookalike.model.runtime import EmbeddingRuntime, predict_paths
from lookalike.params import PROJECT_ROOT, catalogue_description, load_params, preprocess_spec
from lookalike.search.expansion import QueryExpansion, expanded_rows
from lookalike.search.index import load_index
from lookalike.search.photos import MORE_PHOTOS_FILE, PhotoRows, load_more_photos, search_items
from lookalike.search.similarity import Similarity


def log_to_mlflow(params: dict, metrics: dict) -> None:
    """One MLflow run per evaluation: flattened params, both metric sets, the model file."""
    import mlflow

    mlflow.set_tracking_uri(params["mlflow"]["tracking_uri"])
    mlflow.set_experiment(params["mlflow"]["experiment"])
    with mlflow.start_run():
        mlflow.log_params({f"{section}.{key}": value for section, values in params.items()
                           if section != "mlflow" for key, value in values.items()})
        mlflow.log_metrics({f"{model}_{name}": value for model in ("trained", "pretrained")
                            for name, value in metrics[model].items()})
        mlflow.log_artifact(str(PROJECT_ROOT / "artifacts/model.keras"), artifact_path="model")
        mlflow.log_artifact(str(PROJECT_ROOT / "artifacts/manifest.json"), artifact_path="model")


def labelled_metrics(items, embeddings, features, index, manifest, description, label: str) -> dict:
    """Test queries against the whole index by ``label`` (and the look and per-column relevance), asked as the
    build asks "more like this" (with its query expansion, lookalike/search/expansion.py, if it has one)."""
    colour, pairs, families = description.colour, description.look, description.families_of(description.colour)
    labels = items[label].to_numpy()
    queries = np.flatnonzero((items["split"].to_numpy() == "test") & (items[label].str.strip() != "").to_numpy())
    expansion = QueryExpansion.from_index_params(manifest["params"]["index"])
    more = more_photos_of(manifest)
    galleries = {"trained": (embeddings, index, more["trained"]),
                 "pretrained": (features, gallery_index(features, more["pretrained"]), more["pretrained"])}
    if expansion:  # like for like: the pretrained features with the same expansion, beside the plain ones
        galleries["pretrained_query_expansion"] = galleries["pretrained"]
    scored, per_label, asked_as = {}, None, {}
    for name, (vectors, gallery, other) in galleries.items():
        photos = other[0] if other else PhotoRows.single(len(vectors))
        asked = expanded_rows(expansion if name != "pretrained" else QueryExpansion(), vectors, queries,
                              lambda q, k, gallery=gallery, photos=photos: search_items(gallery, photos, q, k))
        asked_as[name] = asked
        found, table = evaluate_retrieval(vectors, labels, queries, gallery, asked, other)
        found.update(look_metrics(vectors, items, queries, label, colour, pairs, asked, other,
                                  colour_families=families))
        scored[name] = found
        scored[f"{name}_by_column"] = column_metrics(vectors, items, queries, description.relevance_columns,
                                                     asked, more=other)
        per_label = table if name == "trained" else per_label
    similarity = Similarity.from_manifest(manifest)
    modes = {}
    for mode in similarity.modes:  # the same queries asking another question of the same index
        asked = np.stack([similarity.query_vector(v, mode) for v in asked_as["trained"]])
        modes[mode] = {"precision_at_5": evaluate_retrieval(embeddings, labels, queries, index, asked,
                                                            more["trained"])[0]["precision_at_5"],
                       **look_metrics(embeddings, items, queries, label, colour, pairs, asked, more["trained"],
                                      colour_families=families)}
        modes[mode].pop("type_colour_precision_at_5_bound", None)
    trained, pretrained = scored["trained"], scored["pretrained"]
    extra = {"pretrained_query_expansion": scored["pretrained_query_expansion"]} if expansion else {}
    return {"trained": trained, "pretrained": pretrained,
            "gain": {name: trained[name] - pretrained[name] for name in trained}, "modes": modes,
            "by_column": {name: scored[f"{name}_by_column"] for name in ("trained", "pretrained")},
            **extra, "relevance": label, "queries": int(len(queries)), "per_label": per_label}


def more_photos_of(manifest: dict) -> dict[str, MorePhotos | None]:
    """The items' other photos (several per item: lookalike/search/photos.py), as the trained build and the
    pretrained features (the exported backbone over them) see them; None for both with one photo per item."""
    artifacts = PROJECT_ROOT / "artifacts"
    if "more_photos" not in manifest["files"]:
        return {"trained": None, "pretrained": None}
    paths, photos, trained = load_more_photos(artifacts / MORE_PHOTOS_FILE, manifest["count"], manifest["dimension"])
    if not len(paths):
        return {"trained": None, "pretrained": None}
    params = manifest["params"]
    backbone = EmbeddingRuntime(artifacts / "backbone.tflite")
    pretrained = predict_paths(backbone, paths.tolist(), PreprocessSpec(**params["preprocess"]),
                               description="other photos, pretrained")
    return {"trained": (photos, trained),
            "pretrained": (photos, unit_rows(backbone_part(pretrained, params["colour_descriptor"])))}


def unlabelled_metrics(items, embeddings, features, params: dict) -> dict:
    """The instance protocol (lookalike/evaluation/instance.py): altered copies of the test photos as queries."""
    test = np.flatnonzero(items["split"].to_numpy() == "test")
    paths = np.load(PROJECT_ROOT / "artifacts/image_paths.npy")[test].tolist()
    spec, seed = preprocess_spec(params), int(params["subset"]["seed"])
    found = {}
    for name, file, gallery in (("trained", "model.tflite", embeddings), ("pretrained", "backbone.tflite", features)):
        asked = altered_queries(EmbeddingRuntime(PROJECT_ROOT / "artifacts" / file), paths, spec, seed,
                                params["features"]["batch_size"])
        if name == "pretrained":
            asked = unit_rows(backbone_part(asked, params["model"]["colour_descriptor"]))
        found[name] = instance_metrics(instance_ranks(gallery, asked, test))
    return {**found, "gain": {k: found["trained"][k] - found["pretrained"][k] for k in found["trained"]},
            "relevance": "instance", "queries": int(len(test))}


def main() -> None:
    params = load_params()
    description = catalogue_description(params)
    artifacts = PROJECT_ROOT / "artifacts"
    manifest = verify_manifest(artifacts)  # the build the index stage just wrote, never a mix of two
    publish_build(artifacts)
    items = read_table(artifacts / "items.csv")
    embeddings = np.load(artifacts / "embeddings.npy")
    index = load_index(artifacts / "faiss.index", params["index"])
    if not (len(items) == len(embeddings) == manifest["count"]) or index.ntotal != manifest.get("photos", len(items)):
        raise SystemExit("items, embeddings and index disagree in size: rerun the pipeline (dvc repro)")
    features = unit_rows(backbone_part(np.load(artifacts / "features.npy", mmap_mode="r")[0],
                                       params["model"]["colour_descriptor"]))
    # relevance: the training label, else the first attribute (labels read only for scoring), else the instance
    scoring = description.label or next(iter(description.attributes), None)
    if scoring is not None:
        metrics = labelled_metrics(items, embeddings, features, index, manifest, description, scoring)
    else:
        metrics = unlabelled_metrics(items, embeddings, features, params)
    per_label = metrics.pop("per_label", None)
    metrics.update({"gallery": int(len(items)), "index": params["index"]["type"],
                    # a rare or missing label: indexed and found, neither trained on nor a query
                    "not_trained_nor_queried": int((items["split"] == GALLERY_SPLIT).sum())})
    for name in ("trained", "pretrained"):
        print(f"{name:>10}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics[name].items()))
    write_json(PROJECT_ROOT / "metrics/metrics.json", metrics)
    if per_label is None:
        per_label = pd.DataFrame(columns=["label", "queries"])
    write_bytes(PROJECT_ROOT / "metrics/per_label.csv", per_label.round(4).to_csv(index=False).encode())
    log_to_mlflow(params, metrics)


if __name__ == "__main__":
    main()
