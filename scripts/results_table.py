"""Print the README's results table (markdown) from metrics files written by the evaluate stage.

    python scripts/results_table.py                                   # metrics/metrics.json (fashion-5k default)
    python scripts/results_table.py metrics/metrics.json metrics/fashion-19k/metrics.json   # both runs, one table

With several files each row names its file's folder and gallery size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("precision_at_1", "precision_at_5", "recall_at_5", "map_at_5", "top5_accuracy", "map_at_r")
HEADER = ("P@1", "P@5", "R@5", "mAP@5", "top-5 acc", "MAP@R")
MODELS = (("pretrained", "pretrained backbone features, no head"), ("trained", "trained (default)"))


def rows(path: str, prefix: str = "") -> list[str]:
    metrics = json.loads(Path(path).read_text())
    lines = [f"| {prefix}{key if prefix else name} | " + " | ".join(f"{metrics[key][m]:.3f}" for m in METRICS)
             + " |" for key, name in MODELS]
    return lines + [f"| {prefix}gain | " + " | ".join(f"{metrics['gain'][m]:+.3f}" for m in METRICS) + " |"]


def main(*paths: str) -> None:
    paths = paths or ("metrics/metrics.json",)
    print("| model | " + " | ".join(HEADER) + " |")
    print("|---|" + "---|" * len(HEADER))
    for path in paths:
        if len(paths) == 1:
            prefix = ""
        else:
            metrics = json.loads(Path(path).read_text())
            folder = Path(path).parent.name
            name = folder if folder != "metrics" else "default"
            prefix = f"{name} ({metrics['gallery']:,} photos, {metrics['queries']:,} queries): "
        print("\n".join(rows(path, prefix)))


if __name__ == "__main__":
    main(*sys.argv[1:])
