"""The shopper task of a catalogue with one reference photo per class (the grocery store's iconic web-shop
photos): each test photo, taken in a shop, is a query against the reference photos alone; a hit is its own
class's photo. Recall@1 and @5 for the trained model and the pretrained features, added to the run's
metrics.json (``trained``/``pretrained`` ``iconic_recall_at_1``, ``iconic_recall_at_5``).

    python -m study.iconic [--project /tmp/lookalike-grocery-store] [--metrics metrics/grocery-store/metrics.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lookalike.catalogue.reading import read_table
from lookalike.evaluation.metrics import unit_rows
from lookalike.model.colour import backbone_part
from lookalike.model.runtime import EmbeddingRuntime, predict_paths
from lookalike.params import catalogue_description, load_params, preprocess_spec


def recall_at(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray,
              ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Share of queries whose own label's reference is among the top k references by cosine."""
    order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")
    hits = gallery_labels[order] == query_labels[:, None]
    return {f"iconic_recall_at_{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default="/tmp/lookalike-grocery-store", help="the run's scratch project")
    parser.add_argument("--metrics", default="metrics/grocery-store/metrics.json", help="metrics file to extend")
    parser.add_argument("--column", default="iconic", help="the column holding each item's reference photo")
    args = parser.parse_args()
    project = Path(args.project)
    params = load_params(project / "params.yaml", root=project)
    description = catalogue_description(params, project)
    label = description.label or description.attributes[0]
    artifacts = project / "artifacts"
    items = read_table(artifacts / "items.csv")
    references = items[items[args.column].str.strip() != ""].drop_duplicates(label)
    root = Path(params["data"]["catalogue_dir"]) / description.photo_root
    paths = [str(root / p.lstrip("/")) for p in references[args.column]]
    test = np.flatnonzero(items["split"].to_numpy() == "test")
    query_labels, reference_labels = items[label].to_numpy()[test], references[label].to_numpy()
    spec, colour = preprocess_spec(params), bool(params["model"]["colour_descriptor"])
    trained_gallery = predict_paths(EmbeddingRuntime(artifacts / "model.tflite"), paths, spec, description="iconic")
    trained = recall_at(trained_gallery, reference_labels, np.load(artifacts / "embeddings.npy")[test], query_labels)
    features = np.load(artifacts / "features.npy", mmap_mode="r")[0]
    pretrained_gallery = predict_paths(EmbeddingRuntime(artifacts / "backbone.tflite"), paths, spec,
                                       description="iconic (pretrained)")
    pretrained = recall_at(unit_rows(backbone_part(pretrained_gallery, colour)), reference_labels,
                           unit_rows(backbone_part(np.asarray(features)[test], colour)), query_labels)
    metrics = json.loads(Path(args.metrics).read_text())
    for name, found in (("trained", trained), ("pretrained", pretrained)):
        metrics[name].update(found)
        metrics.setdefault("gain", {}).update({k: trained[k] - pretrained[k] for k in found})
    metrics["iconic"] = {"references": len(paths), "queries": int(len(test)), "label": label}
    Path(args.metrics).write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{len(test)} test photos against {len(paths)} reference photos: trained {trained}, pretrained {pretrained}")


if __name__ == "__main__":
    main()
