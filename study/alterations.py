"""What a shopper's photo does to search: P@5 of the test queries when each query photo is altered the way
a phone upload differs from a catalogue photo, beside the clean figure; and P@5 where relevant means the
same label AND the same colour (the description's colour column, baseColour for fashion: "the same thing in
the same colour").

Both are reported under every alteration: type P@5 and type+colour P@5 (over the sampled queries that have
another item of the same label and colour). The gallery stays the build's clean catalogue embeddings (the
query's own row excluded, as in the evaluate
stage); only the query photo changes. Each alteration is seeded per query, so reruns give the same numbers.
The trained model and the pretrained features see the same altered photo (one backbone pass; the head on top).

    python -m study.alterations --project /tmp/lookalike-fashion-19k --out metrics/fashion-19k/alterations.csv
    python -m study.alterations --project /tmp/lookalike-5k  --out metrics/alterations.csv

Alterations (photo = the catalogue's 60x80 JPEG):
  jpeg        re-encoded at JPEG quality 25-40 (a phone app's upload compression)
  blur        Gaussian blur, radius 0.8-1.5 px (camera shake, focus)
  rotate      rotated 4-10 degrees either way, corners filled white
  crop        off-centre crop keeping 70-85% of each side
  background  the photo's near-white background replaced by one random saturated colour (the padding to a
              square stays white, as for any upload)
  lighting    brightness 0.7-1.3 and a white-balance shift (red and blue gains 0.85-1.15)
  downscaled  upscaled 6x (bicubic) and saved as a large JPEG (quality 85), then decoded the way uploads are
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.catalogue.reading import read_table
from lookalike.evaluation.metrics import unit_rows
from lookalike.model.alterations import ALTERATIONS
from lookalike.model.colour import backbone_part
from lookalike.model.preprocessing import load_image, query_input
from lookalike.params import query_spec
from study import project_catalogue


def precision_at_5(queries: np.ndarray, query_rows: np.ndarray, gallery: np.ndarray, relevant_to) -> float:
    """Mean P@5 of unit ``queries`` (one per ``query_rows``) against unit ``gallery``, own row excluded;
    ``relevant_to(query_row, result_rows) -> bool array``."""
    scores = queries @ gallery.T
    scores[np.arange(len(query_rows)), query_rows] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    return float(np.mean([relevant_to(q, rows).mean() for q, rows in zip(query_rows, top, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a project whose pipeline has run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=1000, help="test queries used (a seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from lookalike.model.network import CompiledModel, build_feature_model, load_embedding_model, new_backbone
    from lookalike.model.training import embed_features

    params, description = project_catalogue(args.project)
    if description.colour is None:
        raise SystemExit(f"{description.source} names no colour column: the label-and-colour P@5 needs one")
    items = read_table(args.project / "artifacts/items.csv")
    paths = np.load(args.project / "artifacts/image_paths.npy")
    labels, colours = items[description.label].to_numpy(), items[description.colour].to_numpy()
    rng = np.random.default_rng(args.seed)
    test = np.flatnonzero(items["split"].to_numpy() == "test")
    query_rows = np.sort(rng.choice(test, size=min(args.queries, len(test)), replace=False))
    spec = query_spec(params)  # the query path: blurred photos sharpened as the service does
    with_colour = bool(params["model"].get("colour_descriptor"))
    backbone = CompiledModel(build_feature_model(new_backbone(params["backbone"]["name"], spec.image_size,
                                                              params["backbone"]["weights"]),
                                                 spec.normalisation if with_colour else None))
    head = load_embedding_model(args.project / "artifacts/model.keras").get_layer("head")
    galleries = {"trained": np.load(args.project / "artifacts/embeddings.npy"),
                 "pretrained": unit_rows(backbone_part(np.load(args.project / "artifacts/features.npy",
                                                               mmap_mode="r")[0], with_colour))}

    def same_label(q, rows):
        return labels[rows] == labels[q]

    def same_label_and_colour(q, rows):
        return (labels[rows] == labels[q]) & (colours[rows] == colours[q])

    has_colour_match = np.array([
        (((labels == labels[q]) & (colours == colours[q])).sum() - 1) > 0 for q in query_rows])
    records = []
    for name, alter in [("clean", None), *ALTERATIONS.items()]:
        inputs = []
        for q in query_rows:
            image = load_image(str(paths[q]), max_side=spec.image_size)
            if alter is not None:
                image = alter(image, np.random.default_rng([args.seed, int(items["id"][q]), len(name)]))
            inputs.append(query_input(image, spec))  # as the service sees a shopper's photo
        features = np.concatenate([backbone(np.stack(inputs[i:i + 64])) for i in range(0, len(inputs), 64)])
        vectors = {"trained": embed_features(head, features),
                   "pretrained": unit_rows(backbone_part(features, with_colour))}
        record = {"alteration": name, "queries": len(query_rows)}
        for model, gallery in galleries.items():
            record[f"{model}_p_at_5"] = round(precision_at_5(vectors[model], query_rows, gallery, same_label), 4)
            record[f"{model}_p_at_5_label_and_colour"] = round(precision_at_5(
                    vectors[model][has_colour_match], query_rows[has_colour_match], gallery,
                    same_label_and_colour), 4)
        records.append(record)
        print(record, flush=True)
    table = pd.DataFrame(records)
    table["label_and_colour_queries"] = int(has_colour_match.sum())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"label-and-colour P@5 over the {int(has_colour_match.sum())} sampled queries with another item of the "
          "same label and colour")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
