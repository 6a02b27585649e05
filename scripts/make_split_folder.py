"""Write one split of data/subset.csv as a catalogue folder of its own (Kaggle layout), for evaluate-folder.

    python -m scripts.make_split_folder --split test --out /tmp/test-split
    lookalike evaluate-folder /tmp/test-split

styles.csv keeps the catalogue's original lines (quirks included); images are symbolic links
to the catalogue's files (``--copy`` copies them instead). Never point --out inside the repository.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from lookalike.catalogue.reading import read_table
from lookalike.params import PROJECT_ROOT, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    args = parser.parse_args()
    catalogue = PROJECT_ROOT / load_params()["data"]["catalogue_dir"]
    subset = read_table(PROJECT_ROOT / "data/subset.csv")
    chosen = subset[subset["split"] == args.split]
    wanted = set(chosen["id"].tolist())
    lines = (catalogue / "styles.csv").read_text(encoding="utf-8").splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if line.split(",", 1)[0].isdigit()
                         and int(line.split(",", 1)[0]) in wanted]
    (args.out / "images").mkdir(parents=True, exist_ok=False)
    (args.out / "styles.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    for path in chosen["image_path"]:
        source = (PROJECT_ROOT / path).resolve()
        target = args.out / "images" / source.name
        if args.copy:
            shutil.copy(source, target)
        else:
            target.symlink_to(source)
    print(f"wrote {len(chosen)} {args.split} images and {len(kept) - 1} styles.csv rows to {args.out}")


if __name__ == "__main__":
    main()
