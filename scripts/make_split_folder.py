"""Write one split of data/subset.csv as a catalogue folder of its own (the catalogue's layout), for evaluate-folder.

    python -m scripts.make_split_folder --split test --out /tmp/test-split
    lookalike evaluate-folder /tmp/test-split

The table (styles.csv for fashion) keeps the catalogue's original lines (quirks included), so the project's
catalogue description (``data.catalogue``) reads the folder; it must describe one CSV table with a header whose
first column is the id (the Kaggle layout). Photos are hard links to the catalogue's files at the same places
(copies where the folders are on different file systems, or with ``--copy``): not symbolic links, which the
catalogue reader refuses when they point out of the folder. Never point --out inside the repository.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from lookalike.catalogue.reading import read_table
from lookalike.params import PROJECT_ROOT, catalogue_description, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--copy", action="store_true", help="copy the images instead of hard-linking them")
    args = parser.parse_args()
    params = load_params()
    description = catalogue_description(params)
    if (description.layout != "table" or len(description.tables) != 1 or description.joins or not description.header
            or Path(description.tables[0].path).suffix.lower() != ".csv" or description.id is None):
        raise SystemExit(f"{description.source}: this script copies the lines of one CSV table with a header and an "
                         "id column (the Kaggle layout); the project's catalogue is described otherwise")
    name = description.tables[0].path
    catalogue = PROJECT_ROOT / params["data"]["catalogue_dir"]
    subset = read_table(PROJECT_ROOT / "data/subset.csv")
    chosen = subset[subset["split"] == args.split]
    wanted = set(chosen["id"].tolist())
    lines = (catalogue / name).read_text(encoding="utf-8").splitlines()
    if lines[0].split(",", 1)[0].strip() != description.id:
        raise SystemExit(f"{catalogue / name}: the first column is not the id column {description.id!r}")
    kept = [lines[0]] + [line for line in lines[1:] if line.split(",", 1)[0].isdigit()
                         and int(line.split(",", 1)[0]) in wanted]
    args.out.mkdir(parents=True, exist_ok=False)
    (args.out / name).parent.mkdir(parents=True, exist_ok=True)
    (args.out / name).write_text("\n".join(kept) + "\n", encoding="utf-8")
    for path in chosen["image_path"]:
        source = (PROJECT_ROOT / path).resolve()
        target = args.out / os.path.relpath(PROJECT_ROOT / path, catalogue)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if args.copy:
                raise OSError("copies asked for")
            os.link(source, target)
        except OSError:  # another file system (or --copy): a copy
            shutil.copy(source, target)
    print(f"wrote {len(chosen)} {args.split} images and {len(kept) - 1} {name} rows to {args.out}")


if __name__ == "__main__":
    main()
