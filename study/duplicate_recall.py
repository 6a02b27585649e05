"""How a near-duplicate report does against the catalogue's byte-identical photos: recall on every pair of
photos with the same bytes, and what else it flags (pairs that are not byte-identical, and how many of those
carry another colour, the build's colour column (baseColour for fashion): colourways would be among them).

    lookalike duplicates --artifacts /tmp/lookalike-fashion-19k/artifacts --build-only --out /tmp/dups19k.csv
    python -m study.duplicate_recall /tmp/dups19k.csv /tmp/lookalike-fashion-19k
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.catalogue.description import CatalogueRoles
from lookalike.catalogue.reading import read_table


def main(report: str, project: str) -> None:
    root = Path(project)
    items = read_table(root / "artifacts/items.csv")
    paths = [Path(p) if Path(p).is_absolute() else root / p for p in np.load(root / "artifacts/image_paths.npy")]
    digest = {int(i): hashlib.md5(p.read_bytes()).hexdigest() for i, p in zip(items["id"], paths, strict=True)}
    groups = pd.Series(digest).groupby(lambda i: digest[i]).apply(lambda s: list(s.index))
    identical = {tuple(pair) for group in groups if len(group) > 1 for pair in itertools.combinations(sorted(group), 2)}
    found = pd.read_csv(report)
    group_of = dict(zip(found["id"].astype(int), found["group"], strict=True))
    hits = sum(1 for a, b in identical if a in group_of and group_of[a] == group_of.get(b))
    flagged = {tuple(sorted(pair)) for _, g in found.groupby("group")
               for pair in itertools.combinations(g["id"].astype(int), 2)}
    other = flagged - identical
    colour_column = CatalogueRoles.from_manifest(json.loads((root / "artifacts/manifest.json").read_text())).colour
    colour = dict(zip(items["id"].astype(int), items[colour_column].astype(str), strict=True)) if colour_column else {}
    print(json.dumps({"byte_identical_groups": int(sum(len(g) > 1 for g in groups)),
                      "byte_identical_pairs": len(identical), "pairs_found": hits,
                      "recall": round(hits / max(len(identical), 1), 4),
                      "flagged_groups": int(found["group"].nunique()), "flagged_pairs": len(flagged),
                      "flagged_pairs_not_byte_identical": len(other),
                      "of_which_another_colour": sum(colour[a] != colour[b] for a, b in other) if colour else None},
                     indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
