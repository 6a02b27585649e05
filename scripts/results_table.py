"""Print the README's results table (markdown) from metrics files written by the evaluate stage.

    python scripts/results_table.py                                   # metrics/metrics.json (fashion-5k default)
    python scripts/results_table.py metrics/metrics.json metrics/fashion-19k/metrics.json   # both runs, one table

With several files each row names its file's folder and gallery size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = {"precision_at_1": "P@1", "precision_at_5": "P@5", "top5_accuracy": "top-5 acc", "map_at_r": "MAP@R",
           "type_colour_precision_at_5": "type+colour P@5", "type_colour_map_at_r": "type+colour MAP@R",
           "type_gender_precision_at_5": "type+gender P@5", "colour_precision_at_5": "colour P@5",
           # by the description's colour families (Navy Blue with Blue), after the raw names, which stay the headline
           "type_colour_family_precision_at_5": "type+colour family P@5",
           "colour_family_precision_at_5": "colour family P@5",
           "iconic_recall_at_1": "iconic R@1", "iconic_recall_at_5": "iconic R@5"}
METRICS = tuple(COLUMNS)  # main() prints those any of its files has (a catalogue without colours: no look metrics)
MODELS = (("pretrained", "pretrained backbone features, no head"), ("trained", "trained (default)"))


def rows(path: str, prefix: str = "", columns: tuple[str, ...] = METRICS) -> list[str]:
    metrics = json.loads(Path(path).read_text())
    def cell(values: dict, name: str, sign: str = "") -> str:
        return f"{values[name]:{sign}.3f}" if name in values else "-"  # a run from before the look metrics

    lines = [f"| {prefix}{key if prefix else name} | " + " | ".join(cell(metrics[key], m) for m in columns)
             + " |" for key, name in MODELS]
    lines.append(f"| {prefix}gain | " + " | ".join(cell(metrics["gain"], m, "+") for m in columns) + " |")
    for mode, values in metrics.get("modes", {}).items():  # the same queries asking another similarity
        lines.append(f"| {prefix}trained, asked \"{mode}\" | " + " | ".join(cell(values, m) for m in columns) + " |")
    bound = metrics["trained"].get("type_colour_precision_at_5_bound")
    if bound is not None:
        lines.append(f"| {prefix}best possible type+colour P@5 (the gallery's bound) | " + " | ".join(
            f"{bound:.3f}" if m == "type_colour_precision_at_5" else "" for m in columns) + " |")
    return lines


def main(*paths: str) -> None:
    paths = paths or ("metrics/metrics.json",)
    found = [json.loads(Path(path).read_text())["trained"] for path in paths]
    columns = tuple(m for m in COLUMNS if any(m in trained for trained in found))
    print("| model | " + " | ".join(COLUMNS[m] for m in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for path in paths:
        if len(paths) == 1:
            prefix = ""
        else:
            metrics = json.loads(Path(path).read_text())
            folder = Path(path).parent.name
            name = folder if folder != "metrics" else "default"
            prefix = f"{name} ({metrics['gallery']:,} photos, {metrics['queries']:,} queries): "
        print("\n".join(rows(path, prefix, columns)))


if __name__ == "__main__":
    main(*sys.argv[1:])
