"""Stage sample_subset: catalogue folder -> data/subset.csv (with the split) and a data report.

With a live delta (``lookalike fold`` wrote data/live_delta/fold.json), its removed and replaced ids
leave the catalogue before sampling and its items join the subset after it, split "live" (see
lookalike/live/fold.py). Without one the subset is exactly what it was.
"""

from __future__ import annotations

import os

import pandas as pd

from lookalike.artifacts import write_bytes, write_json
from lookalike.catalogue.reading import EXTERNAL_ID_COLUMN as EXTERNAL_ID
from lookalike.catalogue.reading import (
    LIVE_DELTA_DIR,
    LIVE_SPLIT,
    check_images,
    load_catalogue,
    read_live_delta,
    write_table,
)
from lookalike.catalogue.subset import SPLITS, split_train_val_test, stratified_subset
from lookalike.params import PROJECT_ROOT, load_params


def main() -> None:
    params = load_params()
    data, subset = params["data"], params["subset"]
    label = data["label_column"]
    table, report = load_catalogue(data["catalogue_dir"], label)
    print(f"catalogue {data['catalogue_dir']}: {report.summary()}")
    # relative to the working directory (the project root under dvc), so image paths stay relative like the catalogue's
    delta = read_live_delta(os.path.relpath(PROJECT_ROOT / LIVE_DELTA_DIR), label)
    if delta is not None:
        live_items, dropped, marker = delta
        table = table[~table["id"].isin(dropped | set(live_items["id"].astype("int64")))].reset_index(drop=True)
        print(f"live delta {marker['fold_id']}: {len(live_items)} items added or replaced, {len(dropped)} ids dropped")
    if subset["size"] > len(table):
        print(f"subset.size = {subset['size']} but the catalogue has {len(table)} usable images: using all")
    chosen, subset_report = stratified_subset(table, label, subset["size"], subset["min_per_class"], subset["seed"])
    chosen = check_images(chosen, report)  # decoded once here: a corrupt file is set aside before the split
    subset_report["rows"] = len(chosen)
    print(f"images: {len(report.empty_images)} empty files and {len(report.unreadable_images)} unreadable images "
          "set aside (data/subset_report.json lists them)")
    chosen["split"] = split_train_val_test(chosen, label, subset["test_fraction"], subset["val_fraction"],
                                           subset["seed"])
    if delta is not None and len(live_items):
        chosen = pd.concat([chosen, live_items.assign(split=LIVE_SPLIT)], ignore_index=True)
        chosen[EXTERNAL_ID] = chosen[EXTERNAL_ID].fillna("")
    counts = chosen["split"].value_counts().reindex((*SPLITS, LIVE_SPLIT) if delta is not None else SPLITS,
                                                    fill_value=0)
    print(f"subset: {len(chosen)} images, {chosen[label].nunique()} labels "
          f"({len(subset_report['labels_left_out'])} left out with < {subset['min_per_class']} images); "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    write_bytes(PROJECT_ROOT / "data/subset.csv", write_table(chosen))
    write_json(PROJECT_ROOT / "data/subset_report.json", {
        "catalogue": report.to_dict(),
        "subset": {**subset_report, "labels": int(chosen[label].nunique()),
                   "splits": {k: int(v) for k, v in counts.items()}},
        **({"live_fold": {k: marker[k] for k in ("fold_id", "store_id", "through_seq")}} if delta is not None else {}),
    })


if __name__ == "__main__":
    main()
