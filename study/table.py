"""Print the study's results table (markdown) from `dvc exp show --json`: one row per experiment.

Each row gives the test-query metrics of the trained model, the same features without the head
(the pretrained baseline of that row's backbone settings), and the command that reproduces it
from the committed params.yaml.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

METRICS = ("precision_at_1", "precision_at_5", "recall_at_5", "map_at_5", "top5_accuracy", "map_at_r")
HEADER = ("P@1", "P@5", "R@5", "mAP@5", "top-5 acc", "MAP@R")


def _flatten(params: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def experiments() -> list[dict]:
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], check=True, capture_output=True,
                                      text=True).stdout)
    rows = []
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs", []):
                data = revision.get("data") or {}
                metrics = data.get("metrics", {}).get("metrics/metrics.json", {}).get("data")
                if metrics:
                    rows.append({"name": revision.get("name") or revision["rev"][:7], "metrics": metrics,
                                 "train": data.get("metrics", {}).get("metrics/train.json", {}).get("data", {}),
                                 "params": data.get("params", {}).get("params.yaml", {}).get("data", {})})
    return sorted(rows, key=lambda row: row["name"])


def command(params: dict, defaults: dict) -> str:
    changed = {k: v for k, v in _flatten(params).items() if defaults.get(k) != v}
    return "`dvc exp run" + "".join(f" -S {k}={v}" for k, v in sorted(changed.items())) + "`"


def main() -> None:
    defaults = _flatten(yaml.safe_load(Path("params.yaml").read_text()))
    print("| configuration | " + " | ".join(HEADER) + " | same features, no head: P@5 / top-5 | training s (per step) "
          "| command |")
    print("|---|" + "---|" * (len(HEADER) + 3))
    for row in experiments():
        trained, pretrained = row["metrics"]["trained"], row["metrics"]["pretrained"]
        train = row["train"]
        seconds = f"{train['train_seconds']} ({train['seconds_per_step']} s/step)" if "train_seconds" in train \
            else train.get("head_seconds", "-")  # head_seconds: rows run before fine-tuning trained on maps
        print(f"| {row['name']} | " + " | ".join(f"{trained[m]:.3f}" for m in METRICS)
              + f" | {pretrained['precision_at_5']:.3f} / {pretrained['top5_accuracy']:.3f} | {seconds} "
              f"| {command(row['params'], defaults)} |")


if __name__ == "__main__":
    main()
