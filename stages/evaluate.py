"""Stage evaluate: test-split queries against the whole index, self excluded.

Writes metrics/metrics.json (the trained model and, beside it, the pretrained
backbone features without the head: the type metrics and the look metrics, type+colour and type+gender;
and each similarity mode of the build asked of the same queries) and metrics/per_label.csv, and logs the
run to MLflow.
"""

from __future__ import annotations

import numpy as np

from lookalike.artifacts import publish_build, verify_manifest, write_bytes, write_json
from lookalike.catalogue.reading import read_table
from lookalike.evaluation.metrics import evaluate_retrieval, look_metrics, unit_rows
from lookalike.model.colour import backbone_part
from lookalike.params import PROJECT_ROOT, load_params
from lookalike.search.index import load_index
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


def main() -> None:
    params = load_params()
    label = params["data"]["label_column"]
    artifacts = PROJECT_ROOT / "artifacts"
    manifest = verify_manifest(artifacts)  # the build the index stage just wrote, never a mix of two
    # Outputs DVC restored from its run cache skip the index stage and so its publication: publish here
    # (this stage always runs after them), so a later killed run falls back to this build and not an older one.
    publish_build(artifacts)
    items = read_table(artifacts / "items.csv")
    embeddings = np.load(artifacts / "embeddings.npy")
    index = load_index(artifacts / "faiss.index", params["index"])
    if not (len(items) == len(embeddings) == index.ntotal == manifest["count"]):
        raise SystemExit("items, embeddings and index disagree in size: rerun the pipeline (dvc repro)")
    labels = items[label].to_numpy()
    queries = np.flatnonzero(items["split"].to_numpy() == "test")
    trained, per_label = evaluate_retrieval(embeddings, labels, queries, index)
    trained.update(look_metrics(embeddings, items, queries, label))
    features = unit_rows(backbone_part(np.load(artifacts / "features.npy", mmap_mode="r")[0],
                                       params["model"]["colour_descriptor"]))
    pretrained, _ = evaluate_retrieval(features, labels, queries)
    pretrained.update(look_metrics(features, items, queries, label))
    similarity = Similarity.from_manifest(manifest)
    modes = {}
    for mode in similarity.modes:  # the same queries asking another question of the same index
        asked = np.stack([similarity.query_vector(v, mode) for v in embeddings[queries]])
        modes[mode] = {"precision_at_5": evaluate_retrieval(embeddings, labels, queries, queries=asked)[0][
            "precision_at_5"], **look_metrics(embeddings, items, queries, label, queries=asked)}
        modes[mode].pop("type_colour_precision_at_5_bound")
    metrics = {
        "trained": trained,
        "pretrained": pretrained,
        "gain": {name: trained[name] - pretrained[name] for name in trained},
        "modes": modes,
        "queries": int(len(queries)),
        "gallery": int(len(items)),
        "index": params["index"]["type"],
    }
    for name in ("trained", "pretrained"):
        print(f"{name:>10}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics[name].items()))
    write_json(PROJECT_ROOT / "metrics/metrics.json", metrics)
    write_bytes(PROJECT_ROOT / "metrics/per_label.csv", per_label.round(4).to_csv(index=False).encode())
    log_to_mlflow(params, metrics)


if __name__ == "__main__":
    main()
