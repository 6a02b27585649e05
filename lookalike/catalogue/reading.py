"""Reading a catalogue through its description (:mod:`lookalike.catalogue.description`): one table of items,
whatever the layout, with every problem repaired, counted or refused by name.

The result has ``id`` (int64: the catalogue's own id when every id is a decimal number, else items numbered in
table order, the catalogue's id kept in ``external_id``), ``image_path`` (``<folder>/<photo>`` as given: relative
stays relative; the item's first photo), ``more_image_paths`` when some item has several photos (a JSON list of
the others, "" for none: :mod:`lookalike.search.photos`), ``split_given`` when the catalogue gives a split, and
the catalogue's own columns as text.

Refused with a :class:`CatalogueError` that names the file, the row and the column (nothing is written then):
a column the description names but the table lacks, duplicate ids, a photo path that leaves the catalogue
folder, an empty table, a joined column named like one the table has, a role reading a table column called id
when another column (or numbering) gives the items' id, a role reading a column named like one the reader
writes (:data:`READER_COLUMNS`). Counted in the :class:`CatalogueReport` and set
aside: rows without a photo file, 0-byte photo files (and, once decoded by :func:`check_images`, files that are
no image). Counted and kept: rows without a label (indexed and found; never trained on nor a query).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from lookalike.catalogue.description import (
    FOLDER_CLASS,
    FOLDER_PARENT,
    PATH_COLUMN,
    SPLIT_NAMES,
    CatalogueDescription,
    TableFile,
    template_fields,
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
SPLIT_GIVEN_COLUMN = "split_given"  # train / val / test as the catalogue gives it; "" where it gives none
# The live catalogue's delta (written by `lookalike fold`, see lookalike/live/fold.py), read by sample_subset
LIVE_DELTA_DIR = "data/live_delta"  # relative to the project root
FOLD_FILE = "fold.json"  # present only once something was folded
REMOVED_FILE = "removed.csv"
DELTA_TABLE = "items.csv"
DELTA_PHOTO_COLUMN = "image"  # the delta's photo file, under images/
EXTERNAL_ID_COLUMN = "external_id"  # an item's own id when it is not a decimal number
LIVE_SPLIT = "live"  # delta items: in the gallery, never trained on, never a query
MORE_PHOTOS_COLUMN = "more_image_paths"  # an item's other photos (JSON list), after its first in image_path
# The columns the reader writes into every table: the meaning of each, and the roles that may read a catalogue
# column of that name (they read it before it is written)
READER_COLUMNS = {
    EXTERNAL_ID_COLUMN: ("the items' own ids where they are not decimal", ("id",)),  # see _reader_columns
    "image_path": ("each item's first photo file", ("photos",)),
    MORE_PHOTOS_COLUMN: ("each item's other photo files", ("photos",)),
    SPLIT_GIVEN_COLUMN: ("the split each table file gives", ()),
}
# A value that is one of these (spaces around and letter case aside: "NA", "N/A", "None") is no value: a label
# with one is no label, for the reader, the split, training, and the words' evaluation alike (:func:`missing`)
MISSING_VALUES = ("", "na", "n/a", "nan", "none", "null")


def missing(values: pd.Series) -> pd.Series:
    """bool per value: no value (NaN / None, or one of :data:`MISSING_VALUES` in any letter case, spaces around)."""
    return values.astype("string").fillna("").str.strip().str.lower().isin(MISSING_VALUES).astype(bool)


class CatalogueError(ValueError):
    """The catalogue cannot be used; the message says which file, row and column, and what to fix."""


@dataclass
class CatalogueReport:
    """What reading the catalogue found, for the console and a JSON report."""

    csv_rows: int = 0  # table rows read (any format)
    # 1-based line numbers; "train.txt, line 3" when the description reads several table files
    repaired_lines: list[int | str] = field(default_factory=list)
    malformed_lines: list[int | str] = field(default_factory=list)
    duplicate_ids: list = field(default_factory=list)
    rows_without_image: list = field(default_factory=list)  # ids
    images_without_row: list[str] = field(default_factory=list)  # file names
    rows_without_label: list = field(default_factory=list)  # ids: indexed, never trained on nor queries
    empty_images: list[str] = field(default_factory=list)  # 0-byte photo files (their rows are set aside)
    unreadable_images: list[dict] = field(default_factory=list)  # {id, file, reason}: see check_images
    extra_columns: list[str] = field(default_factory=list)  # columns the description gives no role
    items: int = 0

    def summary(self) -> str:
        return (
            f"{self.items} items with a photo from {self.csv_rows} rows; "
            f"repaired {len(self.repaired_lines)} lines with unquoted commas, "
            f"skipped {len(self.malformed_lines)} malformed lines, {len(self.duplicate_ids)} duplicate ids, "
            f"{len(self.rows_without_image)} rows without image, {len(self.rows_without_label)} rows without label "
            f"(indexed, not trained on); {len(self.images_without_row)} images without row, "
            f"{len(self.empty_images)} empty image files"
            + (f", {len(self.unreadable_images)} unreadable images" if self.unreadable_images else "")
        )

    def to_dict(self) -> dict:
        counts = {f"n_{k}": len(v) for k, v in asdict(self).items() if isinstance(v, list)}
        return {"csv_rows": self.csv_rows, "items": self.items, **counts, **asdict(self)}


# ------------------------------------------------------------------------------ tables


DELIMITERS = (",", "\t", ";", "|")  # a table's field separator: comma, tab, semicolon (Excel in many locales), bar


def _delimiter(first_line: str, suffix: str, names: tuple[str, ...]) -> str:
    """The field separator of a text table, read from its first line: tab for ``.tsv``; else the one of
    :data:`DELIMITERS` that splits the header into the most fields (for a headerless table with
    ``column_names``, into that many), a comma when none splits it."""
    if suffix == ".tsv":
        return "\t"
    fields = {d: len(next(csv.reader([first_line], delimiter=d))) for d in DELIMITERS}
    if names:
        return next((d for d in DELIMITERS if fields[d] == len(names)), ",")
    best = max(DELIMITERS, key=lambda d: fields[d])  # the first of equals: the comma
    return best if fields[best] > 1 else ","


def _parse_csv(text: str, where: str, header_line: bool, names: tuple[str, ...], free_text: str | None,
               report: CatalogueReport, suffix: str = ".csv") -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows and their 1-based line numbers; fields split by :func:`_delimiter`. ``free_text``: the last
    column may hold unquoted separators (Kaggle's product names, commas): a line with too many fields keeps them
    in it."""
    lines = text.splitlines()
    delimiter = _delimiter(next((line for line in lines if line.strip()), ""), suffix,
                           () if header_line else names)
    if header_line:
        if not lines or not lines[0].strip():
            raise CatalogueError(f"{where} is empty: it needs a header line and at least one row")
        header = [h.strip() for h in next(csv.reader([lines[0]], delimiter=delimiter))]
        first = 1
    else:
        header, first = list(names), 0
    if len(set(header)) != len(header):
        raise CatalogueError(f"{where}: the header names a column twice ({', '.join(header)})")
    n_fields = len(header)
    free_text_last = free_text is not None and header and header[-1] == free_text
    rows, numbers = [], []
    for number, line in enumerate(lines[first:], start=first + 1):
        if not line.strip():
            continue
        fields = next(csv.reader([line], delimiter=delimiter, skipinitialspace=not header_line))
        if len(fields) > n_fields and free_text_last and '"' not in line:
            fields = line.split(delimiter, n_fields - 1)  # the free text keeps its separators
            report.repaired_lines.append(number)
        if len(fields) != n_fields:
            report.malformed_lines.append(number)
            continue
        rows.append([f.strip() if not header_line else f for f in fields])
        numbers.append(number)
    return header, rows, numbers


def read_table_file(path: Path, where: str, description: CatalogueDescription,
                    report: CatalogueReport) -> tuple[pd.DataFrame, list[int]]:
    """One table file as text columns, with each row's line (CSV) or row number, by the file's suffix."""
    if not path.is_file():
        raise CatalogueError(f"catalogue table not found: {where}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":  # nullable types: an int column with a null stays 42, not 42.0
            table = pd.read_parquet(path, dtype_backend="numpy_nullable")
            numbers = list(range(1, len(table) + 1))
        elif suffix in (".jsonl", ".ndjson"):  # parsed here: pandas makes 42 "42.0" next to a null, skips blank lines
            records, numbers = [], []
            for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except ValueError as error:
                        raise CatalogueError(f"{where}, line {number}: not JSON ({error})") from None
                    if not isinstance(records[-1], dict):
                        raise CatalogueError(f"{where}, line {number}: not a JSON object {{\"column\": value}}")
                    numbers.append(number)
            table = pd.DataFrame(records, dtype=object)
        else:  # CSV, and headerless lists such as train.txt ("path, class id, coarse id")
            text = path.read_bytes().decode("utf-8-sig", errors="replace")  # -sig: Excel's byte-order mark
            header, rows, numbers = _parse_csv(text, where, description.header, description.column_names,
                                               description.free_text_column, report, suffix)
            table = pd.DataFrame(rows, columns=header, dtype="string")
    except CatalogueError:
        raise
    except (ValueError, OSError, ImportError) as error:  # pyarrow and pandas say what is wrong with the file
        raise CatalogueError(f"{where} cannot be read as a {suffix or 'CSV'} table: {error}") from None
    table.columns = [str(c) for c in table.columns]
    for column in table.columns:
        table[column] = table[column].astype("string").fillna("").astype(str)
    return table, numbers


def _require_columns(table: pd.DataFrame, columns: dict[str, str], where: str, description: CatalogueDescription
                     ) -> None:
    missing = {column: role for column, role in columns.items() if column not in table.columns}
    if missing:
        named = ", ".join(f"'{c}' ({role})" for c, role in missing.items())
        raise CatalogueError(f"{where} has no column {named} that {description.source or 'the description'} names "
                             f"(its columns: {', '.join(table.columns)})")


def _join(table: pd.DataFrame, folder: Path, description: CatalogueDescription, report: CatalogueReport
          ) -> pd.DataFrame:
    for join in description.joins:
        other_description = CatalogueDescription(header=join.header, column_names=join.column_names)
        before = _line_counts(report)
        other, _ = read_table_file(_inside(folder, join.table, "joins.table", join.table), join.table,
                                   other_description, report)
        _name_file(report, before, join.table)  # its lines are counted with the table's, named by file
        _require_columns(table, {c: "join key" for c in join.on}, description.tables[0].path, description)
        _require_columns(other, {c: "join key" for c in join.on.values()} | {c: "joined column" for c in join.columns},
                         join.table, description)
        for theirs, name in join.columns.items():  # a new column: the description says neither replace nor fill
            if name in table.columns:
                raise CatalogueError(f"{join.table}, column '{theirs}': {description.source or 'the description'} "
                                     f"joins it as '{name}', a column the catalogue already has: give it another "
                                     "name in the join's columns")
        # built by name, not renamed: a key may also be brought in as a column of its own
        picked = pd.DataFrame({**{mine: other[theirs] for mine, theirs in join.on.items()},
                               **{name: other[theirs] for theirs, name in join.columns.items()}})
        picked = picked.drop_duplicates(list(join.on))
        table = table.merge(picked, how="left", on=list(join.on), validate="many_to_one")
        for column in join.columns.values():
            table[column] = table[column].fillna("")
    return table


def _line_counts(report: CatalogueReport) -> tuple[int, int]:
    return len(report.repaired_lines), len(report.malformed_lines)


def _name_file(report: CatalogueReport, before: tuple[int, int], file: str) -> None:
    """The repaired and malformed lines counted since ``before`` as ``"<file>, line <n>"``."""
    for found, start in zip((report.repaired_lines, report.malformed_lines), before, strict=True):
        found[start:] = [f"{file}, line {number}" for number in found[start:]]


def _inside(folder: Path, relative: str, column: str, row: object) -> Path:
    """``folder / relative``, refused when it leaves the folder (``..``, a link pointing out); a leading ``/``
    is read as the catalogue's root (datasets write paths that way), never the machine's."""
    path = folder / relative.lstrip("/\\")
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise CatalogueError(f"row {row}, column '{column}': the path {relative!r} leaves the catalogue folder "
                             f"{folder}: photos and tables must be inside it")
    return path


def _table_layout(folder: Path, description: CatalogueDescription, report: CatalogueReport
                  ) -> tuple[pd.DataFrame, list[tuple[str, int]], str]:
    parts, numbers, written = [], [], set()
    for file in description.tables:
        path = _inside(folder, file.path, "table", file.path)
        before = _line_counts(report)
        table, lines = read_table_file(path, file.path, description, report)
        written |= set(table.columns) & set(READER_COLUMNS)  # before split_given is written over
        if len(description.tables) > 1 or description.joins:  # a line number alone does not say which file
            _name_file(report, before, file.path)
        table[SPLIT_GIVEN_COLUMN] = file.split or ""
        parts.append(table)
        numbers.extend((file.path, line) for line in lines)  # each row's file and line, for messages
    # a column one file lacks (test.csv without labels) is "" there, like any empty value, not NaN
    table = pd.concat(parts, ignore_index=True).fillna("") if len(parts) > 1 else parts[0]
    where = description.tables[0].path
    report.csv_rows = len(table)
    if table.empty:
        raise CatalogueError(f"{where} has no rows: a catalogue needs at least one item")
    named: dict[str, str] = {}
    if description.id:
        named[description.id] = "id"
    if description.split:
        named[description.split] = "split"
    for photo in description.photos:
        for column in template_fields(photo) or [photo]:
            named.setdefault(column, "photos")
    table = _join(table, folder, description, report)
    written |= set().union(*(join.columns.values() for join in description.joins)) & set(READER_COLUMNS)
    for role in ("labels", "attributes", "filters", "words", "card"):
        for column in getattr(description, role):
            named.setdefault(column, role)
    if description.title:
        named.setdefault(description.title, "title")
    _require_columns(table, named, where, description)
    _other_id_column(table, named, where, description)
    table = _reader_columns(table, sorted(written), named, where, description)
    report.extra_columns = [c for c in table.columns if c not in named and c != SPLIT_GIVEN_COLUMN]
    if description.split:
        values = table[description.split].str.strip()
        given = values.map(lambda v: description.split_values.get(v, v if v in SPLIT_NAMES else ""))
        table[SPLIT_GIVEN_COLUMN] = given
    return table, numbers, where


def _other_id_column(table: pd.DataFrame, named: dict[str, str], where: str, description: CatalogueDescription
                     ) -> None:
    """A table column called ``id`` that is not the description's id: the items' id takes that name. Refused
    when a role or photo template reads it (which id it means is ambiguous); else it is replaced, and said."""
    if description.id == "id" or "id" not in table.columns:
        return
    ours = f"names '{description.id}' as the id" if description.id else "numbers the items (it has no 'id' key)"
    source = description.source or "the description"
    if "id" in named:
        raise CatalogueError(f"{where}, column 'id': {source} {ours} but reads this column as {named['id']}: the "
                             "items' id is called id too, so which one is meant is ambiguous; make it the id "
                             "(id: id) or rename the column")
    log.warning("%s, column 'id': %s %s; this column has no role and the items' id replaces it", where, source, ours)


def _reader_columns(table: pd.DataFrame, found: list[str], named: dict[str, str], where: str,
                    description: CatalogueDescription) -> pd.DataFrame:
    """The catalogue's own columns named like one the reader writes (:data:`READER_COLUMNS`). Read by a role
    before the reader writes it (the photos' ``image_path``), it is read; by any other role, refused, as that role
    would read the reader's values; by none, left out, and said. An ``external_id`` is written only beside ids
    that are not decimal: beside decimal ids (or numbered items) it stays the items' own id, as the live delta
    writes it."""
    source = description.source or "the description"
    for column in found:
        role = named.get(column)
        if role in READER_COLUMNS[column][1]:
            continue
        if column == EXTERNAL_ID_COLUMN and (not description.id or _decimal(table[description.id].str.strip())):
            continue
        meaning = READER_COLUMNS[column][0]
        if role:
            raise CatalogueError(f"{where}, column '{column}': {source} reads it as {role}, but the reader writes "
                                 f"{meaning} under that name, so the role would not read the catalogue's values: "
                                 "rename the column")
        log.warning("%s, column '%s': it has no role in %s and the reader writes %s under that name; the "
                    "catalogue's values are left out", where, column, source, meaning)
        if column != SPLIT_GIVEN_COLUMN:  # already written over as each table file was read
            table = table.drop(columns=column)
    return table


def _decimal(ids: pd.Series) -> bool:
    """Whether every id is a decimal number without a leading zero ("007" stays "007": as int64 it would be 7,
    and "007" and "7" one id)."""
    return bool(ids.str.fullmatch(r"0|[1-9][0-9]{0,17}").all())


def _lines_at(places: list[tuple[str, int]]) -> str:
    """Where rows are, file by file: ``items.csv, lines 2, 4`` or ``train.txt, line 3; test.txt, line 2``."""
    by_file: dict[str, list[int]] = {}
    for file, line in places:
        by_file.setdefault(file, []).append(line)
    return "; ".join(f"{file}, line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}"
                     for file, lines in by_file.items())


def _numbered_ids(table: pd.DataFrame, numbers: list[tuple[str, int]], description: CatalogueDescription,
                  where: str, report: CatalogueReport) -> pd.DataFrame:
    """``id`` int64 (and ``external_id`` when the catalogue's ids are not all decimal); duplicates refused."""
    own = table[description.id].str.strip() if description.id else None
    if own is not None:
        empty = own == ""
        if empty.any():
            first = int(empty.to_numpy().nonzero()[0][0])
            raise CatalogueError(f"{_lines_at([numbers[first]])}, column '{description.id}': the id is empty")
        duplicated = own.duplicated(keep=False)
        if duplicated.any():
            rows = duplicated.to_numpy().nonzero()[0]
            value = own.iloc[rows[0]]
            places = [numbers[r] for r in rows if own.iloc[r] == value]
            report.duplicate_ids = sorted(set(own[duplicated].tolist()))
            raise CatalogueError(f"{_lines_at(places[:5])}, column '{description.id}': the id {value!r} is used "
                                 f"{len(places)} times ({len(report.duplicate_ids)} duplicated ids in all): every "
                                 "item needs its own id")
        if _decimal(own):
            table = table.assign(id=own.astype("int64"))
        else:
            table = table.assign(**{EXTERNAL_ID_COLUMN: own}).assign(id=range(1, len(table) + 1))
    else:
        table = table.assign(id=range(1, len(table) + 1))
    table["id"] = table["id"].astype("int64")
    return table


def own_ids(table: pd.DataFrame) -> pd.Series:
    """Each row's id as the catalogue gives it (its ``external_id`` where the ids are not decimal), for reports."""
    return table[EXTERNAL_ID_COLUMN] if EXTERNAL_ID_COLUMN in table else table["id"]


def _photos(table: pd.DataFrame, folder: Path, numbers: list[tuple[str, int]], description: CatalogueDescription,
            where: str, report: CatalogueReport) -> pd.DataFrame:
    """``image_path``: the item's first photo whose file exists; ``more_image_paths``: its other existing photos,
    in the description's order (only when some item has any)."""
    root = folder / description.photo_root
    chosen, more, files_named = [], [], set()
    records = table.to_dict("records")
    if description.id == "id" and EXTERNAL_ID_COLUMN in table:  # photos name the catalogue's id, not its number
        for record in records:
            record["id"] = record[EXTERNAL_ID_COLUMN]
    for position, record in enumerate(records):
        found: list[str] = []
        for photo in description.photos:
            fields = template_fields(photo)
            relative = photo.format(**{f: record[f] for f in fields}) if fields else record[photo]
            if not relative.strip():
                continue
            file, line = numbers[position]
            path = _inside(root, relative.strip(), photo, f"{line} of {file}")
            files_named.add(os.path.normpath(path))
            if path.is_file() and str(path) not in found:
                found.append(str(path))
        chosen.append(found[0] if found else "")
        more.append(found[1:])
    table = table.drop(columns=[MORE_PHOTOS_COLUMN], errors="ignore")  # a photos column of that name, read above
    if any(more):
        table = table.assign(**{MORE_PHOTOS_COLUMN: [json.dumps(m) if m else "" for m in more]})
    table = table.assign(image_path=chosen)
    report.rows_without_image = sorted(own_ids(table)[table["image_path"] == ""].tolist())
    table = table[table["image_path"] != ""]
    # photo files no row names, folder by folder in order (a set's order changes with each process's str hashing)
    for directory in sorted({os.path.dirname(p) for p in files_named}):
        if os.path.isdir(directory):
            for entry in sorted(os.scandir(directory), key=lambda e: e.name):
                if entry.name.lower().endswith(IMAGE_EXTENSIONS) and os.path.normpath(entry.path) not in files_named:
                    report.images_without_row.append(entry.name)
                    if entry.stat().st_size == 0:
                        report.empty_images.append(entry.name)
    return table


def photo_files(folder: Path) -> list[Path]:
    """Every photo under ``folder``, in a stable order (hidden files and folders skipped)."""
    found = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found.extend(Path(directory) / f for f in sorted(files)
                     if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return found


def _folder_layout(folder: Path, description: CatalogueDescription, report: CatalogueReport) -> pd.DataFrame:
    """One row per photo: its path, and for ``folders`` its folder (the class) and that folder's parent.
    Top-level folders named train / val / test give the split and are not classes."""
    rows = []
    for path in photo_files(folder):
        parts = path.relative_to(folder).parts
        split = parts[0] if description.layout == "folders" and len(parts) > 1 and parts[0] in SPLIT_NAMES else ""
        classes = parts[1 if split else 0:-1]
        row = {PATH_COLUMN: str(path.relative_to(folder)), SPLIT_GIVEN_COLUMN: split}
        if description.layout == "folders":
            row[FOLDER_CLASS] = classes[-1] if classes else ""
            row[FOLDER_PARENT] = classes[-2] if len(classes) > 1 else ""
        rows.append(row)
    report.csv_rows = len(rows)
    if not rows:
        raise CatalogueError(f"catalogue folder {folder} holds no photo ({', '.join(IMAGE_EXTENSIONS)})")
    table = pd.DataFrame(rows)
    table[EXTERNAL_ID_COLUMN] = table[PATH_COLUMN]
    table["id"] = range(1, len(table) + 1)
    table["image_path"] = [str(folder / p) for p in table[PATH_COLUMN]]
    return table


def load_catalogue(folder: str | Path, description: CatalogueDescription) -> tuple[pd.DataFrame, CatalogueReport]:
    """Every item with a photo file (see the module docstring for what is refused, set aside or counted).

    Nothing is decoded here (:func:`check_images` decodes); a 0-byte photo is set aside on a stat.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CatalogueError(f"catalogue folder not found: {folder}")
    report = CatalogueReport()
    if description.layout == "table":
        table, numbers, where = _table_layout(folder, description, report)
        table = _numbered_ids(table, numbers, description, where, report)
        table = _photos(table, folder, numbers, description, where, report)
    else:
        table = _folder_layout(folder, description, report)
        where = str(folder)
    if MORE_PHOTOS_COLUMN in table:  # an empty photo of several leaves the item its other photos
        photos, empty_others = [], []
        for first, extra in zip(table["image_path"], table[MORE_PHOTOS_COLUMN], strict=True):
            given = [first, *more_photos(extra)]
            kept = [p for p in given if os.stat(p).st_size]
            empty_others += [Path(p).name for p in given if p not in kept] if kept else []
            photos.append(kept or [first])
        report.empty_images = sorted(set(report.empty_images) | set(empty_others))
        table = table.assign(image_path=[p[0] for p in photos],
                             **{MORE_PHOTOS_COLUMN: [json.dumps(p[1:]) if len(p) > 1 else "" for p in photos]})
    sizes = table["image_path"].map(lambda p: os.stat(p).st_size)
    empty = table["image_path"][sizes == 0].map(lambda p: Path(p).name).tolist()
    report.empty_images = sorted(set(report.empty_images) | set(empty))
    table = table[sizes != 0]
    if table.empty:
        raise CatalogueError(f"no item of {where} has a photo file that exists and is not empty "
                             f"({report.summary()})")
    if description.label:
        has_label = ~missing(table[description.label])
        report.rows_without_label = sorted(own_ids(table)[~has_label].tolist())
    report.items = len(table)
    return table.reset_index(drop=True), report


def more_photos(value: str) -> list[str]:
    """An item's other photos from its ``more_image_paths`` cell ("" or a JSON list)."""
    return json.loads(value) if value else []


def check_images(table: pd.DataFrame, report: CatalogueReport, max_side: int = 224) -> pd.DataFrame:
    """``table`` without the rows whose images cannot be decoded, each listed in ``report.unreadable_images``
    with the decoder's reason; an item with several photos keeps the ones that decode (its next photo becomes
    its first if that one does not) and is set aside only when none does.

    The decode is the one the features stage runs (:func:`lookalike.model.preprocessing.load_image`), so a
    corrupt or truncated file is set aside here, before the split, instead of stopping that stage.
    """
    from lookalike.model.preprocessing import InvalidImageError, load_image

    several = MORE_PHOTOS_COLUMN in table
    unreadable, firsts, others = [], [], []
    for position, (item_id, path, extra) in enumerate(zip(
            table["id"], table["image_path"], table[MORE_PHOTOS_COLUMN] if several else [""] * len(table),
            strict=True)):
        readable = []
        for photo in [path, *more_photos(extra)]:
            try:
                load_image(photo, max_side=max_side)
                readable.append(photo)
            except InvalidImageError as error:
                report.unreadable_images.append({"id": int(item_id), "file": Path(photo).name, "reason": str(error)})
        if not readable:
            unreadable.append(position)
        firsts.append(readable[0] if readable else path)
        others.append(json.dumps(readable[1:]) if len(readable) > 1 else "")
    table = table.assign(image_path=firsts, **({MORE_PHOTOS_COLUMN: others} if several else {}))
    kept = table.drop(index=table.index[unreadable]).reset_index(drop=True)
    if kept.empty:
        raise CatalogueError("no image of the catalogue can be decoded: "
                             + "; ".join(f"{u['file']}: {u['reason']}" for u in report.unreadable_images[:3]))
    return kept


def images_set_aside(subset_report: str | Path) -> tuple[dict[str, int], str]:
    """Counts of the image files sample_subset set aside (from its data/subset_report.json) and a line
    saying so, for the features stage's console and metrics."""
    catalogue = json.loads(Path(subset_report).read_text())["catalogue"]
    counts = {"empty_image_files": len(catalogue.get("empty_images", [])),
              "unreadable_images": len(catalogue.get("unreadable_images", []))}
    return counts, (f"skipped {counts['empty_image_files']} empty image files and {counts['unreadable_images']} "
                    f"unreadable images, set aside by sample_subset ({Path(subset_report).name} lists them)")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table this project wrote (subset, items), keeping text as text."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table["id"] = table["id"].astype("int64")
    return table


def write_table(table: pd.DataFrame) -> bytes:
    """CSV bytes of a table, for atomic writing."""
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8")


def more_photo_column(number: int) -> str:
    """The live delta's column of an item's ``number``-th photo (2, 3, ...: several photos per item)."""
    return f"{DELTA_PHOTO_COLUMN}_{number}"


def _delta_photo_columns(columns: list[str]) -> tuple[str, ...]:
    more = [c for c in columns if c.startswith(f"{DELTA_PHOTO_COLUMN}_") and c[len(DELTA_PHOTO_COLUMN) + 1:].isdigit()]
    return (DELTA_PHOTO_COLUMN, *sorted(more, key=lambda c: int(c[len(DELTA_PHOTO_COLUMN) + 1:])))


def delta_description(columns: list[str]) -> CatalogueDescription:
    """How the live delta written by ``lookalike fold`` is read: its id, its photos under images/, its columns."""
    photos = _delta_photo_columns(columns)
    return CatalogueDescription(tables=(TableFile(DELTA_TABLE),), id="id", photos=photos,
                                photo_root="images", attributes=tuple(
                                    c for c in columns if c not in ("id", *photos)),
                                source=f"the live delta's {DELTA_TABLE}")


def read_live_delta(folder: str | Path) -> tuple[pd.DataFrame, set[int], dict] | None:
    """(items to add or replace, with image_path; catalogue ids to drop; the fold marker), or None
    when the folder holds no fold (then the catalogue is used exactly as it is)."""
    folder = Path(folder)
    if not (folder / FOLD_FILE).is_file():
        return None
    marker = json.loads((folder / FOLD_FILE).read_text())
    dropped = {int(line) for line in (folder / REMOVED_FILE).read_text().split()[1:]}
    if int(marker.get("items", 0)) == 0:
        return pd.DataFrame(columns=["id", EXTERNAL_ID_COLUMN, "image_path"]), dropped, marker
    header = (folder / DELTA_TABLE).read_text().split("\n", 1)[0]
    items, report = load_catalogue(folder, delta_description(next(csv.reader([header]))))
    if report.items != int(marker["items"]):
        raise CatalogueError(f"the live delta in {folder} has {report.items} usable items but its {FOLD_FILE} "
                             f"says {marker['items']} ({report.summary()}): run lookalike fold again")
    return items.drop(columns=list(_delta_photo_columns(list(items.columns)))), dropped, marker
