"""Which approach makes "alike" include the look: one row per approach, trained and scored the same way.

On a project whose pipeline has run (its cached features hold the colour descriptor after the pooled
backbone features, ``model.colour_descriptor: true``), each row trains a head with lookalike.model.training
(the pipeline's own loop, early stopping on the val split) and scores the test queries against the whole
catalogue: the type metrics, type+colour P@5 and MAP@R, type+gender P@5, colour P@5 (colour alone), and
the same queries asked "same colour" (the colour sub-space alone) where the row has one; by colour family too
where the description declares families for its colour column. The label, the colour
and the look columns (gender for fashion) are the roles the project's catalogue description gives them.

    python -m study.looks --project /tmp/lookalike-fashion-19k --out metrics/fashion-19k/looks.csv
    python -m study.looks --project /tmp/lookalike-fashion-19k --table metrics/fashion-19k/looks.csv
    python -m study.looks --project . --confusions 20    # the build's "same colour" misses, by colour pair

Rows (the project's params.yaml gives everything not named):
  pretrained            the backbone features, no head
  type_head             one 256-d sub-space on the type label (the previous default)
  type_head_colour_in   the same head with the colour descriptor as extra input
  subspaces_no_colour   type/colour/look/gender/usage sub-spaces on the backbone features alone
  subspaces_global      the sub-spaces with the whole-photo colour histogram only (no grid)
  subspaces             the default: sub-spaces, descriptor with its 3x3 grid (the project's own embeddings, as its
                        pipeline trained them: the same loop and seed give the same vectors)
  mix_*                 the default model asked other stored mixes (query-side weights: no retraining)
Training rows (the default model with one train setting changed; the second pass's sweep):
  proxy_16_p16          the previous defaults: proxy scale 16, 16 classes a batch
  proxy_8_p16           proxy scale 8 alone
  proxy_16_p64          64 classes a batch alone
  batch_by_look         batches of types in one colour (train.batch_by: look)
  select_look_only      the kept step chosen on val type+colour MAP@R alone (train.selection: look_map_at_r)
  instance_subspace     a 64-d instance sub-space (weight 0.5) beside the others
  steps_6000            twice the steps
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lookalike.catalogue.description import CatalogueDescription
from lookalike.catalogue.reading import read_table
from lookalike.evaluation.metrics import evaluate_retrieval, look_metrics, unit_rows
from lookalike.model.colour import COLOUR_BINS, COLOUR_FEATURES
from lookalike.params import INSTANCE_COLUMN
from lookalike.search.similarity import Similarity
from study import project_catalogue


def type_only(label: str) -> dict:
    """One 256-d sub-space on the catalogue's label (the previous default head)."""
    return {"type": {"column": label, "dim": 256, "weight": 1.0}}


TRAINING_ROWS = {"proxy_16_p16": {"proxy_scale": 16.0, "classes_per_batch": 16},
                 "proxy_8_p16": {"proxy_scale": 8.0, "classes_per_batch": 16},
                 "proxy_16_p64": {"proxy_scale": 16.0, "classes_per_batch": 64},
                 "batch_by_look": {"batch_by": "look"},
                 "select_look_only": {"selection": "look_map_at_r"},
                 "instance_subspace": {},
                 "steps_6000": {"steps": 6000}}
INSTANCE_SUBSPACE = {"instance": {"column": INSTANCE_COLUMN, "dim": 64, "weight": 0.5}}

MIXES = {"mix_type_only": {"type": 1.0}, "mix_light_colour": {"type": 1.0, "colour": 0.2, "look": 0.5},
         "mix_heavy_colour": {"type": 1.0, "colour": 1.0, "look": 2.0, "gender": 0.2, "usage": 0.1}}


def score(embeddings: np.ndarray, items: pd.DataFrame, queries: np.ndarray, description: CatalogueDescription,
          asked: np.ndarray | None = None) -> dict[str, float]:
    """The type metrics and the look metrics of ``queries`` (rows of ``embeddings``; ``asked``: their query
    vectors when a mode re-weights them) against the whole catalogue, own row excluded."""
    label = description.label
    scores = evaluate_retrieval(embeddings, items[label].to_numpy(), queries, queries=asked)[0]
    return {**scores, **look_metrics(embeddings, items, queries, label, description.colour, description.look,
                                     queries=asked, colour_families=description.families_of(description.colour))}


def train_row(features: np.ndarray, items: pd.DataFrame, params: dict, description: CatalogueDescription,
              subspaces: dict) -> tuple[np.ndarray, float, Similarity]:
    """Train one head on ``features`` (views, n, dim) with ``subspaces``: the catalogue's embeddings, the
    training seconds and the row's sub-space layout."""
    from lookalike.model.training import attribute_labels, embed_features, train_head

    label, colour = description.label, description.colour
    model = {**params["model"], "subspaces": subspaces, "embedding_dim": sum(s["dim"] for s in subspaces.values())}
    split = items["split"].to_numpy()
    result = train_head(features, attribute_labels(items, label), np.flatnonzero(split == "train"),
                        np.flatnonzero(split == "val"), model, params["train"], log=lambda _: None,
                        attributes={name: attribute_labels(items, spec["column"]) for name, spec in subspaces.items()},
                        look_labels=attribute_labels(items, f"{label}+{colour}") if colour else None)
    return embed_features(result.head, features[0]), result.seconds, Similarity.from_params(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--table", type=Path, help="print a results CSV as a Markdown table and exit")
    parser.add_argument("--rows", nargs="*", help="only these rows")
    parser.add_argument("--confusions", type=int, help="print the N commonest colour pairs of the build's misses "
                                                         "when its test queries ask \"colour\", and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown(pd.read_csv(args.table)))
        return
    if args.confusions:
        print(colour_confusions(args.project, args.confusions).to_string())
        return
    params, description = project_catalogue(args.project)
    if not params["model"].get("colour_descriptor"):
        raise SystemExit("the project's features hold no colour descriptor: set model.colour_descriptor: true")
    if description.colour is None:
        raise SystemExit(f"{description.source} names no colour column: the look metrics need one")
    items = read_table(args.project / "artifacts/items.csv")
    features = np.load(args.project / "artifacts/features.npy")
    queries = np.flatnonzero(items["split"].to_numpy() == "test")
    backbone = features[..., : features.shape[-1] - COLOUR_FEATURES]
    global_only = features[..., : features.shape[-1] - COLOUR_FEATURES + COLOUR_BINS]
    default = params["model"]["subspaces"]
    rows = {
        "type_head": (backbone, type_only(description.label)),
        "type_head_colour_in": (features, type_only(description.label)),
        "subspaces_no_colour": (backbone, default),
        "subspaces_global": (global_only, default),
        "subspaces": (features, default),
    }
    rows.update({name: (features, {**default, **INSTANCE_SUBSPACE} if name == "instance_subspace" else default)
                 for name in TRAINING_ROWS})
    records = []

    def record(name: str, scores: dict, seconds: float = 0.0, **extra) -> None:
        records.append({"row": name, **{k: round(v, 4) for k, v in scores.items()}, "train_seconds": round(seconds, 1),
                        **extra})
        if args.out:  # after every row: a run stopped halfway keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(records).to_csv(args.out, index=False)
        print(name, {k: round(v, 3) for k, v in scores.items() if "precision_at_5" in k or k == "map_at_r"},
              flush=True)

    if not args.rows or "pretrained" in args.rows:
        record("pretrained", score(unit_rows(backbone[0]), items, queries, description))
    for name, (inputs, subspaces) in rows.items():
        if args.rows and name not in args.rows and not (name == "subspaces" and any(
                r.startswith("mix_") for r in args.rows)):
            continue
        started = time.perf_counter()
        if name == "subspaces" and subspaces == default:  # what the project's pipeline trained
            embeddings = np.load(args.project / "artifacts/embeddings.npy")
            similarity = Similarity.from_params(params["model"], params.get("similarity"))
            seconds = float(yaml.safe_load((args.project / "metrics/train.json").read_text())["train_seconds"])
        else:
            row_params = {**params, "train": {**params["train"], **TRAINING_ROWS.get(name, {})}}
            embeddings, seconds, similarity = train_row(inputs, items, row_params, description, subspaces)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        colour_mode = {}
        if "colour" in similarity.names:
            asked = np.stack([similarity.query_vector(v, {"colour": 1.0}) for v in embeddings[queries]])
            asked_colour = score(embeddings, items, queries, description, asked)
            colour_mode = {f"colour_mode_{key}": round(asked_colour[key], 4)
                           for key in ("colour_precision_at_5", "colour_family_precision_at_5") if key in asked_colour}
        record(name, score(embeddings, items, queries, description), seconds, **colour_mode)
        if name == "subspaces":
            for mix, weights in MIXES.items():
                asked = np.stack([similarity.query_vector(v, weights) for v in embeddings[queries]])
                record(mix, score(embeddings, items, queries, description, asked))
    if args.out:
        print(f"wrote {args.out}")


def colour_confusions(project: Path, top: int) -> pd.Series:
    """(query colour -> result colour) counts over the top 5 of each test query asked "colour" of the project's
    published build, where the two colours differ: which colour names the model mixes up."""
    from lookalike.search.engine import Searcher

    searcher = Searcher.load(project / "artifacts", root=project)
    items = searcher.items
    queries = np.flatnonzero(items["split"].to_numpy() == "test")
    asked = np.stack([searcher.query_vector(v, "colour") for v in searcher.embeddings[queries]])
    scores = asked @ searcher.embeddings.T
    scores[np.arange(len(queries)), queries] = -np.inf
    top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    colour = searcher.roles.colour
    if colour is None:
        raise SystemExit("the build's catalogue names no colour column")
    colours = items[colour].astype(str).to_numpy()
    pairs = pd.Series([f"{colours[q]} -> {colours[r]}" for q, row in zip(queries, top5, strict=True) for r in row
                       if colours[q] != colours[r]])
    print(f"{len(pairs)} of {top5.size} results have another colour name than their query")
    return pairs.value_counts().head(top)


def markdown(table: pd.DataFrame) -> str:
    pairs = [c for c in table if c.startswith("type_") and c.endswith("_precision_at_5")  # type+<look column>
             and c not in ("type_colour_precision_at_5", "type_colour_family_precision_at_5")]
    columns = ["row", "precision_at_1", "precision_at_5", "top5_accuracy", "map_at_r", "type_colour_precision_at_5",
               "type_colour_map_at_r", *pairs, "colour_precision_at_5", "colour_mode_colour_precision_at_5",
               "type_colour_family_precision_at_5", "colour_family_precision_at_5",
               "colour_mode_colour_family_precision_at_5"]  # raw first: the catalogue's own names stay the headline
    columns = [c for c in columns if c in table]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(row[c]) else (f"{row[c]:.3f}" if c != "row" else str(row[c]))
                                       for c in columns) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
