"""Generalisation to photos a build never saw: the build's model on a folder of catalogue photos outside its
subset, against the same evaluation on a folder of its own test-split photos of the same size and type mix.

    python -m study.unseen_folder --project . --catalogue ../shared/data/fashion-19k --out /tmp/unseen-5k

It writes two folders in the catalogue's own layout (hard links to its photos, copies across file systems;
the table keeps the catalogue's original lines): ``<out>/own-test`` (the build's test split) and ``<out>/unseen``
(for each type, as many photos as the test split has, drawn seeded from the catalogue's photos outside the
build's subset), then scores both as ``lookalike evaluate-folder --baseline`` does: every photo a query against
the rest of its folder, queries whose type has no other photo there left out, the trained model and the
pretrained features. Both the catalogue and the folders are read through the project's catalogue description
(``data.catalogue``), which must be one CSV table with a header whose first column is the id (the Kaggle
layout: styles.csv).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.catalogue.description import CatalogueDescription
from lookalike.catalogue.reading import load_catalogue, read_table
from lookalike.evaluation.metrics import evaluate_retrieval, look_metrics, unit_rows
from lookalike.model.colour import backbone_part
from lookalike.model.views import iter_input_batches
from lookalike.params import preprocess_spec
from study import project_catalogue


def table_file(description: CatalogueDescription) -> str:
    """The catalogue's one CSV table, whose lines :func:`write_folder` copies by the id in their first field."""
    if (description.layout != "table" or len(description.tables) != 1 or description.joins or not description.header
            or Path(description.tables[0].path).suffix.lower() != ".csv" or description.id is None):
        raise SystemExit(f"{description.source}: this study copies the lines of one CSV table with a header and an "
                         "id column (the Kaggle layout); this catalogue is described otherwise")
    return description.tables[0].path


def write_folder(out: Path, catalogue: Path, table: pd.DataFrame, description: CatalogueDescription) -> None:
    """The rows of ``table`` as a catalogue folder ``description`` reads: the table's original lines, the
    photos hard-linked (copied across file systems) at the same places: the catalogue reader refuses a symbolic
    link pointing out of the folder."""
    name = table_file(description)
    wanted = set(table["id"].tolist())
    lines = (catalogue / name).read_text(encoding="utf-8").splitlines()
    if lines[0].split(",", 1)[0].strip() != description.id:
        raise SystemExit(f"{catalogue / name}: the first column is not the id column {description.id!r}")
    kept = [lines[0]] + [line for line in lines[1:] if line.split(",", 1)[0].isdigit()
                         and int(line.split(",", 1)[0]) in wanted]
    out.mkdir(parents=True, exist_ok=False)
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text("\n".join(kept) + "\n", encoding="utf-8")
    for path in table["image_path"]:
        link = out / os.path.relpath(path, catalogue)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(Path(path).resolve(), link)
        except OSError:  # another file system
            shutil.copy(path, link)


def unseen_like(pool: pd.DataFrame, counts: pd.Series, label: str, seed: int) -> pd.DataFrame:
    """For each label of ``counts``, that many rows of ``pool`` (all it has if fewer), seeded."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, count in counts.sort_index().items():
        group = pool[pool[label] == name]
        parts.append(group.iloc[np.sort(rng.choice(len(group), size=min(count, len(group)), replace=False))])
    return pd.concat(parts).sort_values("id").reset_index(drop=True)


def score(folder: Path, description: CatalogueDescription, spec, backbone, head, with_colour: bool = False) -> dict:
    from lookalike.model.training import embed_features

    label, colour, look = description.label, description.colour, description.look
    families = description.families_of(colour)
    table, _ = load_catalogue(folder, description)
    labels = table[label].to_numpy()
    counts = pd.Series(labels).value_counts()
    queries = np.flatnonzero(pd.Series(labels).map(counts).to_numpy() >= 2)
    features = np.concatenate([backbone(batch) for batch in iter_input_batches(table["image_path"].tolist(), spec,
                                                                               32)])
    trained, pretrained = embed_features(head, features), unit_rows(backbone_part(features, with_colour))
    return {"images": len(table), "queries": len(queries),
            "trained": {**evaluate_retrieval(trained, labels, queries)[0],
                        **look_metrics(trained, table, queries, label, colour, look, colour_families=families)},
            "pretrained": {**evaluate_retrieval(pretrained, labels, queries)[0],
                           **look_metrics(pretrained, table, queries, label, colour, look,
                                          colour_families=families)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--catalogue", type=Path, required=True, help="a larger catalogue holding the project's")
    parser.add_argument("--out", type=Path, required=True, help="a new folder outside the repository")
    parser.add_argument("--json", type=Path, help="write the metrics here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from lookalike.model.network import CompiledModel, build_feature_model, load_embedding_model, new_backbone

    params, description = project_catalogue(args.project)
    label = description.label
    table_file(description)  # before any work: the folders are written in the catalogue's own layout
    items = read_table(args.project / "artifacts/items.csv")
    test = items[items["split"] == "test"]
    catalogue, _ = load_catalogue(args.catalogue, description)
    test_table = catalogue[catalogue["id"].isin(set(test["id"]))]
    pool = catalogue[~catalogue["id"].isin(set(items["id"]))]
    unseen = unseen_like(pool, test[label].value_counts(), label, args.seed)
    write_folder(args.out / "own-test", args.catalogue, test_table, description)
    write_folder(args.out / "unseen", args.catalogue, unseen, description)
    spec = preprocess_spec(params)
    with_colour = bool(params["model"].get("colour_descriptor"))
    backbone = CompiledModel(build_feature_model(new_backbone(params["backbone"]["name"], spec.image_size,
                                                              params["backbone"]["weights"]),
                                                 spec.normalisation if with_colour else None))
    head = load_embedding_model(args.project / "artifacts/model.keras").get_layer("head")
    result = {name: score(args.out / name, description, spec, backbone, head, with_colour)
              for name in ("own-test", "unseen")}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
