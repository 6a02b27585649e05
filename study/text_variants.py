"""The text tower's variants on one build, same seed: pretrained token embeddings or the catalogue's
own words alone (the baseline a pretrained table must beat), in-batch or all-photo negatives.

    python -m study.text_variants [--out metrics/text_variants.csv] [--set key=value ...]

Reads the build in artifacts/ (items.csv, embeddings.npy) and params.yaml's ``text:`` section; each row
is one training with the val-selected epoch, scored on the test split by the stage's protocol
(lookalike/text/evaluation.py): the learned ranking with words hidden, and the hybrid with half the words shown.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import yaml

from lookalike.artifacts import write_bytes
from lookalike.catalogue.reading import read_table
from lookalike.params import PROJECT_ROOT, catalogue_description, load_params
from lookalike.text.evaluation import evaluate_text_search, text_columns
from lookalike.text.training import train_text_tower

VARIANTS = {
    "catalogue words, all-photo negatives": {"pretrained": "none", "negatives": "all"},
    "wordllama + catalogue words, all-photo negatives": {"pretrained": "wordllama", "negatives": "all"},
    "wordllama + catalogue words, in-batch negatives": {"pretrained": "wordllama", "negatives": "batch"},
    "catalogue words, in-batch negatives": {"pretrained": "none", "negatives": "batch"},
}


def text_overrides(settings: list[str]) -> dict:
    """``--set key=value ...`` -> {key: YAML value}: overrides of params.yaml's ``text:`` section."""
    return {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in settings)}


def scored_row(report: dict, result: dict, started: float) -> dict:
    """One study row's columns from a tower's training report and its test scores: the kept epoch and its val
    score, the seconds since ``started``, every learned metric with words hidden and the half-shown hybrid's
    title and P@1 metrics."""
    row = {"best_epoch": report["best_epoch"], "val_score": round(report["best_val_score"], 4),
           "seconds": round(time.perf_counter() - started)}
    row.update({f"learned_{k}": round(v, 4) for k, v in result["hidden"]["learned"].items()})
    row.update({f"hybrid_half_{k}": round(v, 4) for k, v in result["half"]["hybrid"].items()
                if k.startswith("title") or k.endswith("at_1")})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="metrics/text_variants.csv")
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--set", nargs="*", default=[], help="text.<key>=<value> overrides for every variant")
    args = parser.parse_args()
    params = load_params()
    items = read_table(PROJECT_ROOT / "artifacts/items.csv")
    embeddings = np.load(PROJECT_ROOT / "artifacts/embeddings.npy")
    columns = text_columns(catalogue_description(params), items)
    overrides = text_overrides(args.set)
    rows = []
    for name, variant in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        config = {**params["text"], **overrides, **variant}
        started = time.perf_counter()
        tower, report = train_text_tower(items, embeddings, config, columns, seed=int(config["seed"]),
                                         log=lambda _: None)
        result = evaluate_text_search(tower, items, embeddings, config, columns, seed=int(config["seed"]))
        row = {"variant": name, **overrides, **scored_row(report, result, started)}
        print(row, flush=True)
        rows.append(row)
    table = pd.DataFrame(rows)
    write_bytes(PROJECT_ROOT / args.out, table.to_csv(index=False).encode())
    print(table.T.to_string())


if __name__ == "__main__":
    main()
