"""Print the README's results table (markdown) from metrics files written by the evaluate stage.

    python scripts/results_table.py                                   # metrics/metrics.json (fashion-5k default)
    python scripts/results_table.py metrics/metrics.json metrics/fashion-19k/metrics.json   # both runs, one table

With several files each row names its file's folder and gallery size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("precision_at_1", "precision_at_5", "top5_accuracy", "map_at_r", "type_colour_precision_at_5",
           "type_colour_map_at_r", "type_gender_precision_at_5", "colour_precision_at_5")
HEADER = ("P@1", "P@5", "top-5 acc", "MAP@R", "type+colour P@5", "type+colour MAP@R", "type+gender P@5",
          "colour P@5")
MODELS = (("pretrained", "pretrained backbone features, no head"), ("trained", "trained (default)"))


def rows(path: str, prefix: str = "") -> list[str]:
    metrics = json.loads(Path(path).read_text())
    def cell(values: dict, name: str, sign: str = "") -> str:
        return f"{values[name]:{sign}.3f}" if name in values else "-"  # a run from before the look metrics

    lines = [f"| {prefix}{key if prefix else name} | " + " | ".join(cell(metrics[key], m) for m in METRICS)
             + " |" for key, name in MODELS]
    lines.append(f"| {prefix}gain | " + " | ".join(cell(metrics["gain"], m, "+") for m in METRICS) + " |")
    for mode, values in metrics.get("modes", {}).items():  # the same queries asking another similarity
        lines.append(f"| {prefix}trained, asked \"{mode}\" | " + " | ".join(cell(values, m) for m in METRICS) + " |")
    bound = metrics["trained"].get("type_colour_precision_at_5_bound")
    if bound is not None:
        lines.append(f"| {prefix}best possible type+colour P@5 (the gallery's bound) | " + " | ".join(
            f"{bound:.3f}" if m == "type_colour_precision_at_5" else "" for m in METRICS) + " |")
    return lines


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
