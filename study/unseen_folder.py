"""Generalisation to photos a build never saw: the build's model on a folder of catalogue photos outside its
subset, against the same evaluation on a folder of its own test-split photos of the same size and type mix.

    python -m study.unseen_folder --project . --catalogue ../shared/data/fashion-19k --out /tmp/unseen-5k

It writes two folders in the Kaggle layout (symbolic links; styles.csv keeps the catalogue's original
lines): ``<out>/own-test`` (the build's test split) and ``<out>/unseen`` (for each type, as many photos as the
test split has, drawn seeded from the catalogue's photos outside the build's subset), then scores both as
``lookalike evaluate-folder --baseline`` does: every photo a query against the rest of its folder, queries
whose type has no other photo there left out, the trained model and the pretrained features.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lookalike.catalogue.reading import load_catalogue, read_table
from lookalike.evaluation.metrics import evaluate_retrieval, look_metrics, unit_rows
from lookalike.model.colour import backbone_part
from lookalike.model.views import iter_input_batches
from lookalike.params import preprocess_spec


def write_folder(out: Path, catalogue: Path, table: pd.DataFrame) -> None:
    wanted = set(table["id"].tolist())
    lines = (catalogue / "styles.csv").read_text(encoding="utf-8").splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if line.split(",", 1)[0].isdigit()
                         and int(line.split(",", 1)[0]) in wanted]
    (out / "images").mkdir(parents=True, exist_ok=False)
    (out / "styles.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    for path in table["image_path"]:
        (out / "images" / Path(path).name).symlink_to(Path(path).resolve())


def unseen_like(pool: pd.DataFrame, counts: pd.Series, label: str, seed: int) -> pd.DataFrame:
    """For each label of ``counts``, that many rows of ``pool`` (all it has if fewer), seeded."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, count in counts.sort_index().items():
        group = pool[pool[label] == name]
        parts.append(group.iloc[np.sort(rng.choice(len(group), size=min(count, len(group)), replace=False))])
    return pd.concat(parts).sort_values("id").reset_index(drop=True)


def score(folder: Path, label: str, spec, backbone, head, with_colour: bool = False) -> dict:
    from lookalike.model.training import embed_features

    table, _ = load_catalogue(folder, label)
    labels = table[label].to_numpy()
    counts = pd.Series(labels).value_counts()
    queries = np.flatnonzero(pd.Series(labels).map(counts).to_numpy() >= 2)
    features = np.concatenate([backbone(batch) for batch in iter_input_batches(table["image_path"].tolist(), spec,
                                                                               32)])
    trained, pretrained = embed_features(head, features), unit_rows(backbone_part(features, with_colour))
    return {"images": len(table), "queries": len(queries),
            "trained": {**evaluate_retrieval(trained, labels, queries)[0],
                        **look_metrics(trained, table, queries, label)},
            "pretrained": {**evaluate_retrieval(pretrained, labels, queries)[0],
                           **look_metrics(pretrained, table, queries, label)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--catalogue", type=Path, required=True, help="a larger catalogue holding the project's")
    parser.add_argument("--out", type=Path, required=True, help="a new folder outside the repository")
    parser.add_argument("--json", type=Path, help="write the metrics here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from lookalike.model.network import CompiledModel, build_feature_model, load_embedding_model, new_backbone

    params = yaml.safe_load((args.project / "params.yaml").read_text())
    label = params["data"]["label_column"]
    items = read_table(args.project / "artifacts/items.csv")
    test = items[items["split"] == "test"]
    catalogue, _ = load_catalogue(args.catalogue, label)
    test_table = catalogue[catalogue["id"].isin(set(test["id"]))]
    pool = catalogue[~catalogue["id"].isin(set(items["id"]))]
    unseen = unseen_like(pool, test[label].value_counts(), label, args.seed)
    write_folder(args.out / "own-test", args.catalogue, test_table)
    write_folder(args.out / "unseen", args.catalogue, unseen)
    spec = preprocess_spec(params)
    with_colour = bool(params["model"].get("colour_descriptor"))
    backbone = CompiledModel(build_feature_model(new_backbone(params["backbone"]["name"], spec.image_size,
                                                              params["backbone"]["weights"]),
                                                 spec.normalisation if with_colour else None))
    head = load_embedding_model(args.project / "artifacts/model.keras").get_layer("head")
    result = {name: score(args.out / name, label, spec, backbone, head, with_colour) for name in ("own-test", "unseen")}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
