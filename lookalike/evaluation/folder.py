"""The pinned model on another catalogue folder, without retraining.

Lives apart from :mod:`lookalike.evaluation.metrics` (pure ranking arithmetic on arrays) because it reads
a catalogue, decodes images and runs the model (the build's exported models, through
:mod:`lookalike.model.runtime`: no TensorFlow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.catalogue.description import CatalogueDescription
from lookalike.catalogue.reading import CatalogueError, load_catalogue
from lookalike.evaluation.metrics import evaluate_retrieval, look_metrics, unit_rows
from lookalike.model.colour import backbone_part
from lookalike.model.runtime import EmbeddingRuntime, predict_paths
from lookalike.search.engine import Searcher


def evaluate_folder(searcher: Searcher, folder: str | Path, description: CatalogueDescription,
                    batch_size: int = 32, with_baseline: bool = False) -> dict:
    """The pinned model on another catalogue folder (read through ``description``): every image a query
    against all the others, relevant = the same label.

    No retraining. Queries whose label has no other image in the folder cannot
    score and are left out (counted in the result). ``with_baseline`` also scores
    the pinned model's pretrained backbone features without the head. Where the description names a colour
    (and look columns), the look metrics (type+colour, type+<look>; by colour family too where it declares
    families) are reported beside the type ones.
    """
    label_column = description.label or next(iter(description.attributes), None)
    if label_column is None:
        raise CatalogueError(f"{description.source}: names no label or attribute to score relevance by")
    table, report = load_catalogue(folder, description)
    paths = table["image_path"].tolist()
    labels = table[label_column].to_numpy()
    counts = pd.Series(labels).value_counts()
    queries = np.flatnonzero(pd.Series(labels).map(counts).to_numpy() >= 2)
    embeddings = predict_paths(searcher.model, paths, searcher.spec, batch_size, description="folder embeddings")
    result = {"folder": str(folder), "images": len(table), "queries": len(queries),
              "queries_without_relevant": int(len(table) - len(queries)), "catalogue": report.summary(),
              "trained": evaluate_retrieval(embeddings, labels, queries)[0]}
    families = description.families_of(description.colour)
    result["trained"].update(look_metrics(embeddings, table, queries, label_column, description.colour,
                                          description.look, colour_families=families))
    if with_baseline:
        backbone = EmbeddingRuntime(searcher.folder / searcher.manifest["files"]["runtime_backbone"]["path"],
                                    searcher.model.threads)
        features = predict_paths(backbone, paths, searcher.spec, batch_size, description="backbone features")
        features = unit_rows(backbone_part(features, bool(searcher.manifest["params"].get("colour_descriptor"))))
        result["pretrained"] = evaluate_retrieval(features, labels, queries)[0]
        result["pretrained"].update(look_metrics(features, table, queries, label_column, description.colour,
                                                 description.look, colour_families=families))
    return result
