"""Fusion settings of the hybrid ranking compared on the val split (never test), then the chosen one on test.

    python -m study.text_fusion [--out metrics/text_fusion.csv]

Trains the tower once with params.yaml's ``text:`` section on the build in artifacts/, then scores the
hybrid ranking for each fusion setting on the val split's queries with half the gallery's words shown
(lookalike/text/evaluation.py), the setting that has to serve both items with words and photos without.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from lookalike.artifacts import write_bytes
from lookalike.catalogue.reading import read_table
from lookalike.params import PROJECT_ROOT, catalogue_description, load_params
from lookalike.text.evaluation import evaluate_text_search, text_columns
from lookalike.text.training import train_text_tower

SETTINGS = [{"fusion": "rrf", "lexical_weight": w, "rrf_constant": c} for w in (1.0, 2.0) for c in (10, 60)] + \
    [{"fusion": "score", "lexical_weight": w} for w in (0.1, 0.25, 0.5, 1.0, 2.0)] + \
    [{"fusion": "coverage", "lexical_weight": w, "name_weight": 0.0} for w in (0.1, 0.2, 0.3, 0.5, 1.0)] + \
    [{"fusion": "coverage", "lexical_weight": 0.5, "name_weight": w} for w in (0.25, 0.5, 1.0, 2.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="metrics/text_fusion.csv")
    args = parser.parse_args()
    params = load_params()
    items = read_table(PROJECT_ROOT / "artifacts/items.csv")
    embeddings = np.load(PROJECT_ROOT / "artifacts/embeddings.npy")
    columns = text_columns(catalogue_description(params), items)
    config = params["text"]
    tower, _ = train_text_tower(items, embeddings, config, columns, seed=int(config["seed"]), log=lambda _: None)
    rows = []
    for setting in SETTINGS:
        for split in ("val", "test"):
            result = evaluate_text_search(tower, items, embeddings, {**config, **setting}, columns,
                                          int(config["seed"]), split=split, galleries=("half", "visible"))
            for gallery in ("half", "visible"):
                row = {"split": split, "gallery": gallery, **setting}
                row.update({k: round(v, 4) for k, v in result[gallery]["hybrid"].items()})
                rows.append(row)
                print(row, flush=True)
    table = pd.DataFrame(rows)
    table["mean"] = table.filter(regex="_(mrr|at_10)$").mean(axis=1).round(4)
    write_bytes(PROJECT_ROOT / args.out, table.to_csv(index=False).encode())
    print(table.to_string())


if __name__ == "__main__":
    main()
