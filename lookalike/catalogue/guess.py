"""A first description of a catalogue nobody has described yet: ``lookalike describe FOLDER`` looks at the
folder (a table and its photo paths, folders of classes, or loose photos) and writes what it guessed, each
guess said in a comment, for the user to confirm or edit before ``dvc repro`` builds it.

The guesses are rules a person would apply: the id is a column whose values are all different and short;
photos are a column whose values end in an image extension, or files named after the id; the label is a
short-text column named like a type or category, with several items per value; the title is the longest
mostly-unique text; a colour is a column named like one; other short-text columns are attributes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import yaml

from lookalike.catalogue.description import CatalogueDescription, TableFile, description_from_dict
from lookalike.catalogue.reading import (
    IMAGE_EXTENSIONS,
    CatalogueError,
    CatalogueReport,
    photo_files,
    read_table_file,
)

TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson", ".tsv")
LABEL_WORDS = ("type", "class", "label", "category", "kind", "genre", "department", "group")  # most telling first
COLOUR_NAMES = re.compile(r"colou?r", re.I)
ID_NAMES = re.compile(r"^(id|sku|item_?id|product_?id|article(_?number)?|ean|upc|code)$", re.I)
TITLE_NAMES = re.compile(r"(name|title)", re.I)
SAMPLE_ROWS = 20_000  # enough to guess roles; a large table is not read whole twice


def _tables(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)


def _text_columns(table: pd.DataFrame) -> dict[str, pd.Series]:
    return {c: table[c].astype(str).str.strip() for c in table.columns}


def _photo_rule(folder: Path, table: pd.DataFrame, columns: dict[str, pd.Series], id_column: str | None
                ) -> tuple[str | None, str]:
    for name, values in columns.items():
        share = values.str.lower().str.endswith(IMAGE_EXTENSIONS).mean()
        if share > 0.5:
            return name, f"column {name!r}: {share:.0%} of its values end in an image extension"
    if id_column is not None:
        for directory in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
            names = {f.stem: f.suffix for f in directory.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS} \
                if directory.is_dir() else {}
            found = columns[id_column].isin(names.keys()).mean() if names else 0.0
            if found > 0.5:
                suffix = pd.Series([names[i] for i in columns[id_column] if i in names]).mode()[0]
                prefix = "" if directory == folder else f"{directory.name}/"
                return f"{prefix}{{{id_column}}}{suffix}", (f"files named after {id_column!r} in "
                                                             f"{directory.name or '.'}/ ({found:.0%} of rows)")
    return None, "no column of photo paths and no photo files named after an id: set 'photos' by hand"


def guess_table(folder: Path, path: Path) -> tuple[CatalogueDescription, list[str]]:
    """A table layout's description from the table's columns and values, and the reasons, one per guess."""
    probe = CatalogueDescription(tables=(TableFile(path.name),))
    probe_report = CatalogueReport()
    table, _ = read_table_file(path, path.name, probe, probe_report)
    if table.empty:
        raise CatalogueError(f"{path} has no rows to guess from")
    table = table.head(SAMPLE_ROWS)
    columns = _text_columns(table)
    notes, n = [], len(table)
    ids = [c for c, v in columns.items() if v.is_unique and (v != "").all() and v.str.len().max() <= 64]
    id_column = next((c for c in ids if ID_NAMES.match(c)), ids[0] if ids else None)
    notes.append(f"id: {id_column!r} (all values different)" if id_column else
                 "id: none (no column with all values different): items are numbered")
    photo, why = _photo_rule(folder, table, columns, id_column)
    notes.append(f"photos: {why}")
    photo_columns = {photo} if photo in columns else set()
    free = [c for c in columns if c != id_column and c not in photo_columns]
    categorical = [c for c in free if 2 <= columns[c].nunique() <= max(2, min(500, n // 2))
                   and columns[c].str.len().mean() <= 40]
    texts = [c for c in free if c not in categorical and columns[c].str.len().mean() > 10]
    label = next((c for word in LABEL_WORDS for c in categorical if word in c.lower()), None)
    label = label or (min(categorical, key=lambda c: abs(columns[c].nunique() - n ** 0.5)) if categorical else None)
    notes.append(f"labels: [{label}] ({columns[label].nunique()} values, named or sized like a type)" if label else
                 "labels: none (no short-text column with repeated values): trained without labels")
    colour = next((c for c in categorical if COLOUR_NAMES.search(c)), None)
    if colour:
        notes.append(f"colour: {colour!r} (named like a colour)")
    title = next((c for c in texts if TITLE_NAMES.search(c)), texts[0] if texts else None)
    if title:
        notes.append(f"title: {title!r} (the longest mostly-different text)")
    attributes = [c for c in categorical if c != label]
    free_text = None
    if probe_report.malformed_lines and table.columns[-1] in texts:  # Kaggle's unquoted commas in the last column
        free_text = table.columns[-1]
        notes.append(f"free_text_column: {free_text!r} ({len(probe_report.malformed_lines)} lines have more fields "
                     "than the header: the rest of such a line is this last, free-text column)")
    raw = {"layout": "table", "table": path.name, **({"free_text_column": free_text} if free_text else {}),
           "photos": [photo] if photo else [],
           **({"id": id_column} if id_column else {}), "labels": [label] if label else [],
           "attributes": attributes, **({"colour": colour} if colour else {}),
           "filters": [c for c in [label, *attributes] if c][:6],
           "words": [c for c in [title, label, *attributes] if c and not columns[c].str.fullmatch(r"[\d.]*").all()],
           **({"title": title} if title else {}), "card": [c for c in [label, colour] if c]}
    if not photo:
        raw["photos"] = ["PHOTO_COLUMN_OR_TEMPLATE"]
    return description_from_dict(raw, f"guessed from {path}"), notes


def guess_description(folder: str | Path) -> tuple[CatalogueDescription, list[str]]:
    """The description of ``folder`` and a note per guess."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CatalogueError(f"catalogue folder not found: {folder}")
    tables = _tables(folder)
    if tables:
        chosen = max(tables, key=lambda p: p.stat().st_size)
        description, notes = guess_table(folder, chosen)
        if len(tables) > 1:
            notes.insert(0, f"table: {chosen.name}, the largest of {', '.join(p.name for p in tables)}")
        return description, notes
    photos = photo_files(folder)
    if not photos:
        raise CatalogueError(f"{folder} holds no table ({', '.join(TABLE_SUFFIXES)}) and no photo")
    nested = sum(len(p.relative_to(folder).parts) > 1 for p in photos)
    if nested > len(photos) / 2:
        classes = {p.parent.name for p in photos}
        return description_from_dict({"layout": "folders"}, f"guessed from {folder}"), [
            f"layout: folders ({nested} of {len(photos)} photos in sub-folders, {len(classes)} folder names): the "
            "photo's folder is its class, the folder above it the coarser class"]
    return description_from_dict({"layout": "flat"}, f"guessed from {folder}"), [
        f"layout: flat ({len(photos)} photos, no table, no class folders): trained without labels"]


def description_yaml(description: CatalogueDescription, notes: list[str], folder: str | Path) -> str:
    """The YAML a user reviews: what was guessed and why, then the description itself."""
    header = [f"# Catalogue description guessed by `lookalike describe {folder}`: check each guess, then",
              "# `dvc repro` builds it. What each key means: docs/catalogues.md.", "#"]
    header += [f"#   {note}" for note in notes]
    return "\n".join(header) + "\n" + yaml.safe_dump(description.to_dict(), sort_keys=False, allow_unicode=True)


def point_params_at(params_path: str | Path, folder: str, description_path: str) -> None:
    """Set ``data.catalogue_dir`` and ``data.catalogue`` in params.yaml, keeping its comments and layout."""
    path = Path(params_path)
    text = path.read_text()
    for key, value in (("catalogue_dir", folder), ("catalogue", description_path)):
        pattern = re.compile(rf"^(  {key}:\s*)(\S+)(.*)$", re.M)
        if not pattern.search(text):
            raise CatalogueError(f"{path} has no data.{key} line to point at the new catalogue")
        text = pattern.sub(lambda m, v=value: f"{m.group(1)}{v}{m.group(3)}", text, count=1)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
