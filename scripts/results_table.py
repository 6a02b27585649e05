"""Print the README's results table (markdown) from metrics/metrics.json: python scripts/results_table.py"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("precision_at_1", "precision_at_5", "recall_at_5", "map_at_5", "top5_accuracy", "map_at_r")
HEADER = ("P@1", "P@5", "R@5", "mAP@5", "top-5 acc", "MAP@R")


def main(path: str = "metrics/metrics.json") -> None:
    metrics = json.loads(Path(path).read_text())
    print("| model | " + " | ".join(HEADER) + " |")
    print("|---|" + "---|" * len(HEADER))
    for key, name in (("pretrained", "pretrained backbone features, no head"), ("trained", "trained (default)")):
        print(f"| {name} | " + " | ".join(f"{metrics[key][m]:.3f}" for m in METRICS) + " |")
    print("| gain | " + " | ".join(f"{metrics['gain'][m]:+.3f}" for m in METRICS) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
