"""Agreement of the exported model with Keras on the whole catalogue, and the retrieval metrics of each.

Every photo of the build goes through (a) the Keras model, model.keras, in TensorFlow, (b) the exported
model.tflite through lookalike.model.runtime (what a query runs), and the build's own embeddings.npy (c: the
head on the features the runtime's backbone computed, what the index holds) are read. Reported: max abs
diff and min cosine of (b) and (c) against (a), and the default run's retrieval metrics (test-split
queries against the whole gallery, self excluded, as stages/evaluate.py) from each, with the largest
difference per metric (within 0.002).

    python -m bench.agreement            # the published build of artifacts/ (fashion-5k: about 1.5 min on 2 cores)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import print_table, write_results
from lookalike.artifacts import resolve_build
from lookalike.catalogue.description import CatalogueRoles
from lookalike.catalogue.reading import read_table
from lookalike.evaluation.metrics import evaluate_retrieval
from lookalike.model.preprocessing import PreprocessSpec
from lookalike.model.runtime import EmbeddingRuntime, agreement, predict_paths
from lookalike.params import PROJECT_ROOT

TOLERANCE = 0.002


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", default=str(PROJECT_ROOT / "artifacts"))
    args = parser.parse_args()
    started = time.perf_counter()
    folder, manifest = resolve_build(args.artifacts)
    label = CatalogueRoles.from_manifest(manifest).label
    if label is None:
        raise SystemExit(f"{folder}: the build's catalogue has no label to score the retrieval metrics by")
    file = {name: folder / entry["path"] for name, entry in manifest["files"].items()}
    spec = PreprocessSpec(**manifest["params"]["preprocess"])
    items = read_table(file["items"])
    paths = [str(PROJECT_ROOT / p) for p in np.load(file["image_paths"])]
    labels = items[label].to_numpy()
    queries = np.flatnonzero(items["split"].to_numpy() == "test")

    from lookalike.model.network import CompiledModel, load_embedding_model

    keras_embeddings = predict_paths(CompiledModel(load_embedding_model(file["model"])), paths, spec,
                                     description="Keras (TensorFlow)")
    runtime_embeddings = predict_paths(EmbeddingRuntime(file["runtime_model"]), paths, spec,
                                       description="model.tflite (LiteRT)")
    sources = {"Keras model.keras (TensorFlow)": keras_embeddings,
               "model.tflite through lookalike.model.runtime (queries)": runtime_embeddings,
               "build embeddings.npy (head on runtime backbone features)": np.load(file["embeddings"])}
    metrics = {name: evaluate_retrieval(vectors, labels, queries)[0] for name, vectors in sources.items()}
    reference = metrics["Keras model.keras (TensorFlow)"]
    rows = []
    for name, vectors in sources.items():
        found = agreement(keras_embeddings, vectors)
        rows.append({"embeddings": name, "max_abs_diff": f"{found['max_abs_diff']:.2g}",
                     "min_cosine": f"{found['min_cosine']:.7f}",
                     **{metric: f"{value:.4f}" for metric, value in metrics[name].items()},
                     "max_metric_diff": f"{max(abs(v - reference[m]) for m, v in metrics[name].items()):.4f}"})
    print_table(rows)
    worst = max(float(r["max_metric_diff"]) for r in rows)
    least = min(float(r["min_cosine"]) for r in rows)
    verdict = "met" if worst <= TOLERANCE and least >= 0.9999 else "MISSED"
    print(f"\n{len(paths)} photos, {len(queries)} test queries; min cosine {least:.7f} (>= 0.9999), largest metric "
          f"difference {worst:.4f} (<= {TOLERANCE}): {verdict}")
    write_results("agreement", {"build": manifest["build_id"], "photos": len(paths), "queries": int(len(queries)),
                                "rows": rows, "metrics": metrics, "verdict": verdict,
                                "seconds": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
