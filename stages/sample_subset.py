"""Stage sample_subset: catalogue folder -> data/subset.csv (with the split) and a data report."""

from __future__ import annotations

from lookalike.artifacts import write_bytes, write_json
from lookalike.catalogue import check_images, load_catalogue, write_table
from lookalike.params import PROJECT_ROOT, load_params
from lookalike.subset import SPLITS, split_train_val_test, stratified_subset


def main() -> None:
    params = load_params()
    data, subset = params["data"], params["subset"]
    label = data["label_column"]
    table, report = load_catalogue(data["catalogue_dir"], label)
    print(f"catalogue {data['catalogue_dir']}: {report.summary()}")
    if subset["size"] > len(table):
        print(f"subset.size = {subset['size']} but the catalogue has {len(table)} usable images: using all")
    chosen, subset_report = stratified_subset(table, label, subset["size"], subset["min_per_class"], subset["seed"])
    chosen = check_images(chosen, report)  # decoded once here: a corrupt file is set aside before the split
    subset_report["rows"] = len(chosen)
    print(f"images: {len(report.empty_images)} empty files and {len(report.unreadable_images)} unreadable images "
          "set aside (data/subset_report.json lists them)")
    chosen["split"] = split_train_val_test(chosen, label, subset["test_fraction"], subset["val_fraction"],
                                           subset["seed"])
    counts = chosen["split"].value_counts().reindex(SPLITS, fill_value=0)
    print(f"subset: {len(chosen)} images, {chosen[label].nunique()} labels "
          f"({len(subset_report['labels_left_out'])} left out with < {subset['min_per_class']} images); "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    write_bytes(PROJECT_ROOT / "data/subset.csv", write_table(chosen))
    write_json(PROJECT_ROOT / "data/subset_report.json", {
        "catalogue": report.to_dict(),
        "subset": {**subset_report, "labels": int(chosen[label].nunique()),
                   "splits": {k: int(v) for k, v in counts.items()}},
    })


if __name__ == "__main__":
    main()
