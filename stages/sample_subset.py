"""Stage sample_subset: the catalogue (read through its description) -> data/subset.csv (with the split) and
a data report.

Every item with a decodable photo is in the subset (up to ``subset.size``) and so in the index; the split says
which of them training and evaluation use (lookalike/catalogue/subset.py), and the report says how many are
left out of those and why. With a live delta (``lookalike fold`` wrote data/live_delta/fold.json), its removed
and replaced ids leave the catalogue before sampling and its items join the subset after it, split "live"
(see lookalike/live/fold.py). Without one the subset is exactly what it was.
"""

from __future__ import annotations

import os

import pandas as pd

from lookalike.artifacts import write_bytes, write_json
from lookalike.catalogue.reading import (
    LIVE_DELTA_DIR,
    LIVE_SPLIT,
    CatalogueError,
    check_images,
    load_catalogue,
    read_live_delta,
    write_table,
)
from lookalike.catalogue.subset import GALLERY_SPLIT, SPLITS, split_train_val_test, stratified_subset
from lookalike.params import PROJECT_ROOT, ParamsError, catalogue_description, load_params


def main() -> None:
    params = load_params()
    data, subset = params["data"], params["subset"]
    description = catalogue_description(params)
    label = description.label
    table, report = load_catalogue(data["catalogue_dir"], description)
    print(f"catalogue {data['catalogue_dir']} ({data['catalogue']}): {report.summary()}", flush=True)
    # relative to the working directory (the project root under dvc), so image paths stay relative like the catalogue's
    delta = read_live_delta(os.path.relpath(PROJECT_ROOT / LIVE_DELTA_DIR))
    if delta is not None:
        live_items, dropped, marker = delta
        table = table[~table["id"].isin(dropped | set(live_items["id"].astype("int64")))].reset_index(drop=True)
        print(f"live delta {marker['fold_id']}: {len(live_items)} items added or replaced, {len(dropped)} ids dropped")
    if subset["size"] > len(table):
        print(f"subset.size = {subset['size']} but the catalogue has {len(table)} usable images: using all")
    chosen = stratified_subset(table, label, subset["size"], subset["seed"])
    print(f"decoding {len(chosen)} photos to set aside any that are broken...", flush=True)
    chosen = check_images(chosen, report)  # decoded once here: a corrupt file is set aside before the split
    chosen["split"], split_report = split_train_val_test(chosen, label, subset["test_fraction"],
                                                         subset["val_fraction"], subset["seed"],
                                                         subset["min_per_class"])
    if delta is not None and len(live_items):
        chosen = pd.concat([chosen, live_items.assign(split=LIVE_SPLIT)], ignore_index=True).fillna("")
    names = (*SPLITS, GALLERY_SPLIT, *((LIVE_SPLIT,) if delta is not None else ()))
    counts = chosen["split"].value_counts().reindex(names, fill_value=0)
    labels = chosen[label].nunique() if label else 0
    print(f"subset: {len(chosen)} images, all indexed; {labels} labels; " + ", ".join(f"{k} {v}" for k, v in
                                                                                      counts.items())
          + f" (gallery: {split_report['rows_rare_label']} with a label of < {subset['min_per_class']} items, "
          f"{split_report['rows_without_label']} without a label: found, never trained on nor queries)")
    write_bytes(PROJECT_ROOT / "data/subset.csv", write_table(chosen.drop(columns=["split_given"], errors="ignore")))
    write_json(PROJECT_ROOT / "data/subset_report.json", {
        "catalogue": report.to_dict(),
        "subset": {**split_report, "rows": int(len(chosen)), "labels": int(labels),
                   "splits": {k: int(v) for k, v in counts.items()}},
        **({"live_fold": {k: marker[k] for k in ("fold_id", "store_id", "through_seq")}} if delta is not None else {}),
    })


if __name__ == "__main__":
    try:
        main()
    except (CatalogueError, ParamsError) as error:  # a bad catalogue or description: one line, nothing written
        raise SystemExit(f"error: {error}") from None
