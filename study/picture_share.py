"""How much of the stored mix the picture sub-space should be: its weight in a query, from none to all of it.

The picture sub-space (``model.subspaces``, column ``@features``) is the head's input on fixed principal axes: not
trained, there for words (``text.target``) and for the "picture" mode. Its stored weight also puts it in every
"overall" photo query. A query-side weight v for it and the stored weights for the rest rank exactly as a build that
stored it at weight v would (:mod:`lookalike.search.similarity`), so one build measures every share without
retraining. Each row scores val queries and test queries against the whole catalogue, as the evaluate stage asks
its test queries; a weight is chosen on val.

    python -m study.picture_share                          # the pinned fashion-5k build: metrics/picture_share.csv
    python -m study.picture_share --project /tmp/lookalike-fashion-19k --out metrics/fashion-19k/picture_share.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.catalogue.reading import read_table
from lookalike.evaluation.metrics import evaluate_retrieval, look_metrics
from lookalike.params import FEATURES_COLUMN, features_subspace
from lookalike.search.similarity import OVERALL, Similarity
from study import project_catalogue

WEIGHTS = (0.0, 0.03, 0.1, 0.3, 0.6, 1.4, 2.8)  # the trained sub-spaces' stored weights add up to 2.8 (fashion)
REPORTED = ("precision_at_1", "precision_at_5", "top5_accuracy", "map_at_r")
LOOKS = ("type_colour_precision_at_5", "type_colour_family_precision_at_5", "colour_family_precision_at_5")


def picture_name(params: dict) -> str:
    name = features_subspace(params["model"])
    if name is None:
        raise SystemExit(f"this build has no {FEATURES_COLUMN} sub-space (model.subspaces)")
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="a project whose pipeline has run")
    parser.add_argument("--out", type=Path, default=Path("metrics/picture_share.csv"))
    args = parser.parse_args()
    params, description = project_catalogue(args.project)
    artifacts = args.project / "artifacts"
    items = read_table(artifacts / "items.csv")
    embeddings = np.load(artifacts / "embeddings.npy")
    layout = Similarity.from_manifest(json.loads((artifacts / "manifest.json").read_text()))
    picture, label = picture_name(params), description.label
    stored = layout.describe()[OVERALL]
    labels = items[label].to_numpy()
    split = items["split"].to_numpy()
    families = description.families_of(description.colour)
    rows = []
    for weight in WEIGHTS:
        weights = {**stored, picture: weight}
        share = weight / sum(weights.values())
        asked = np.stack([layout.query_vector(v, weights) for v in embeddings])
        row = {"picture_weight": weight, "share": round(share, 4)}
        for part in ("val", "test"):
            queries = np.flatnonzero((split == part) & (items[label].astype(str).str.strip() != "").to_numpy())
            found, _ = evaluate_retrieval(embeddings, labels, queries, queries=asked[queries])
            looks = look_metrics(embeddings, items, queries, label, description.colour, description.look,
                                 asked[queries], colour_families=families)
            row.update({f"{part}_{k}": round(found[k], 4) for k in REPORTED})
            row.update({f"{part}_{k}": round(looks[k], 4) for k in LOOKS if k in looks})
        rows.append(row)
        print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
