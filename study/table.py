"""Print the study's results table (markdown) from `dvc exp show --json`: one row per experiment."""

from __future__ import annotations

import json
import subprocess

METRICS = ("precision_at_1", "precision_at_5", "recall_at_5", "map_at_5", "top5_accuracy", "map_at_r")
HEADER = ("P@1", "P@5", "R@5", "mAP@5", "top-5 acc", "MAP@R")


def experiments() -> list[dict]:
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], check=True, capture_output=True,
                                      text=True).stdout)
    rows = []
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs", []):
                data = revision.get("data") or {}
                metrics = data.get("metrics", {}).get("metrics/metrics.json", {}).get("data")
                train = data.get("metrics", {}).get("metrics/train.json", {}).get("data", {})
                if metrics:
                    rows.append({"name": revision.get("name") or revision["rev"][:7], "metrics": metrics,
                                 "train": train, "params": data.get("params", {})})
    return sorted(rows, key=lambda row: row["name"])


def main() -> None:
    rows = experiments()
    print("| configuration | " + " | ".join(HEADER) + " | head train s |")
    print("|---|" + "---|" * (len(HEADER) + 1))
    if rows:
        base = rows[0]["metrics"]["pretrained"]
        print("| pretrained Lite0 features, no head | " + " | ".join(f"{base[m]:.3f}" for m in METRICS) + " | - |")
    for row in rows:
        trained = row["metrics"]["trained"]
        seconds = row["train"].get("head_seconds", "-")
        finetune = row["train"].get("finetune_seconds_per_step")
        extra = f" (+{finetune} s/step fine-tune)" if finetune else ""
        print(f"| {row['name']} | " + " | ".join(f"{trained[m]:.3f}" for m in METRICS) + f" | {seconds}{extra} |")


if __name__ == "__main__":
    main()
