"""Reading a product catalogue in the Kaggle "Fashion Product Images" layout.

A catalogue folder holds ``styles.csv`` and ``images/<id>.jpg``. The real
``styles.csv`` has lines with unquoted commas inside ``productDisplayName`` and
the literal text ``NA`` as a value; rows may have no image and images no row.
Every such case is repaired or counted in a :class:`CatalogueReport`, never
dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

EXPECTED_COLUMNS = (
    "id", "gender", "masterCategory", "subCategory", "articleType",
    "baseColour", "season", "year", "usage", "productDisplayName",
)
FREE_TEXT_COLUMN = "productDisplayName"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# The live catalogue's delta (written by `lookalike fold`, see lookalike/live/fold.py), read by sample_subset
LIVE_DELTA_DIR = "data/live_delta"  # relative to the project root
FOLD_FILE = "fold.json"  # present only once something was folded
REMOVED_FILE = "removed.csv"
EXTERNAL_ID_COLUMN = "external_id"  # a delta item's shop id when it is not a decimal number
LIVE_SPLIT = "live"  # delta items: in the gallery, never trained on, never a query


class CatalogueError(ValueError):
    """The catalogue folder or its CSV cannot be used; the message says what to fix."""


@dataclass
class CatalogueReport:
    """What reading the catalogue found, for the console and a JSON report."""

    csv_rows: int = 0
    repaired_lines: list[int] = field(default_factory=list)  # 1-based line numbers
    malformed_lines: list[int] = field(default_factory=list)
    duplicate_ids: list[int] = field(default_factory=list)
    rows_without_image: list[int] = field(default_factory=list)  # ids
    images_without_row: list[str] = field(default_factory=list)  # file names
    rows_without_label: list[int] = field(default_factory=list)  # ids
    empty_images: list[str] = field(default_factory=list)  # file names of 0-byte image files (their rows are set aside)
    unreadable_images: list[dict] = field(default_factory=list)  # {id, file, reason}: see check_images
    extra_columns: list[str] = field(default_factory=list)
    items: int = 0

    def summary(self) -> str:
        return (
            f"{self.items} items with image and label from {self.csv_rows} CSV rows; "
            f"repaired {len(self.repaired_lines)} lines with unquoted commas, "
            f"skipped {len(self.malformed_lines)} malformed lines, {len(self.duplicate_ids)} duplicate ids, "
            f"{len(self.rows_without_image)} rows without image, {len(self.rows_without_label)} rows without label; "
            f"{len(self.images_without_row)} images without row, {len(self.empty_images)} empty image files"
            + (f", {len(self.unreadable_images)} unreadable images" if self.unreadable_images else "")
        )

    def to_dict(self) -> dict:
        counts = {f"n_{k}": len(v) for k, v in asdict(self).items() if isinstance(v, list)}
        return {"csv_rows": self.csv_rows, "items": self.items, **counts, **asdict(self)}


def _parse_lines(text: str, report: CatalogueReport) -> tuple[list[str], list[list[str]], list[int]]:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise CatalogueError("styles.csv is empty: it needs a header line and at least one row")
    header = next(csv.reader([lines[0]]))
    header = [h.strip() for h in header]
    n_fields = len(header)
    free_text_last = header and header[-1] == FREE_TEXT_COLUMN
    rows, numbers = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = next(csv.reader([line])) if '"' in line else line.split(",")
        if len(fields) > n_fields and free_text_last and '"' not in line:
            fields = line.split(",", n_fields - 1)  # the free text keeps its commas
            report.repaired_lines.append(number)
        if len(fields) != n_fields:
            report.malformed_lines.append(number)
            continue
        rows.append(fields)
        numbers.append(number)
    return header, rows, numbers


def read_styles(csv_path: str | Path, label_column: str = "articleType") -> tuple[pd.DataFrame, CatalogueReport]:
    """Parse ``styles.csv`` into a table indexed by nothing, one row per unique id.

    Values stay text (``NA`` is a colour name, not a missing value); ``year`` is
    a nullable integer; ``id`` an integer.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CatalogueError(f"catalogue CSV not found: {csv_path}")
    report = CatalogueReport()
    text = csv_path.read_bytes().decode("utf-8-sig", errors="replace")  # -sig: Excel's byte-order mark
    header, rows, line_numbers = _parse_lines(text, report)
    for required in ("id", label_column):
        if required not in header:
            raise CatalogueError(f"{csv_path} has no '{required}' column (columns: {', '.join(header)})")
    report.extra_columns = [c for c in header if c not in EXPECTED_COLUMNS]
    table = pd.DataFrame(rows, columns=header, dtype="string")
    report.csv_rows = len(table)
    ids = pd.to_numeric(table["id"], errors="coerce")
    bad_id = ids.isna()
    if bad_id.any():
        log.warning("%d rows have a non-numeric id and are skipped", int(bad_id.sum()))
        report.malformed_lines.extend(line_numbers[i] for i in table.index[bad_id])
        report.malformed_lines.sort()
    table = table[~bad_id].copy()
    table["id"] = ids[~bad_id].astype("int64")
    duplicated = table["id"].duplicated(keep="first")
    report.duplicate_ids = sorted(int(i) for i in table.loc[duplicated, "id"].unique())
    table = table[~duplicated]
    if "year" in table:
        table["year"] = pd.to_numeric(table["year"].replace("", pd.NA), errors="coerce").astype("Int64")
    for column in table.columns:
        if column not in ("id", "year"):
            table[column] = table[column].fillna("").astype(str)
    if table.empty:
        raise CatalogueError(f"{csv_path} has a header but no usable rows")
    return table.reset_index(drop=True), report


def load_catalogue(folder: str | Path, label_column: str = "articleType") -> tuple[pd.DataFrame, CatalogueReport]:
    """Rows of ``styles.csv`` that have an image and a label, with an ``image_path`` column.

    ``image_path`` is ``<folder>/images/<file>`` as given (relative stays relative). Image files of
    0 bytes (real downloads have some) are listed in ``report.empty_images`` and their rows set aside:
    a stat per file, nothing is decoded here (:func:`check_images` decodes).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CatalogueError(f"catalogue folder not found: {folder}")
    images_dir = folder / "images"
    if not images_dir.is_dir():
        raise CatalogueError(f"catalogue folder {folder} has no images/ subfolder")
    table, report = read_styles(folder / "styles.csv", label_column)
    image_files: dict[int, str] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        stem = path.stem
        if path.stat().st_size == 0:
            report.empty_images.append(path.name)
        if stem.isdigit() and int(stem) not in image_files:
            image_files[int(stem)] = path.name
        else:
            report.images_without_row.append(path.name)
    known_ids = set(table["id"].tolist())
    report.images_without_row.extend(sorted(name for i, name in image_files.items() if i not in known_ids))
    has_image = table["id"].isin(image_files.keys())
    report.rows_without_image = sorted(int(i) for i in table.loc[~has_image, "id"])
    table = table[has_image].copy()
    empty = set(report.empty_images)
    table = table[~table["id"].map(image_files).isin(empty)].copy()
    has_label = table[label_column].str.strip() != ""
    report.rows_without_label = sorted(int(i) for i in table.loc[~has_label, "id"])
    table = table[has_label].copy()
    table["image_path"] = [str(images_dir / image_files[i]) for i in table["id"]]
    report.items = len(table)
    if table.empty:
        raise CatalogueError(f"no row of {folder / 'styles.csv'} has both an image and a '{label_column}' label")
    return table.reset_index(drop=True), report


def check_images(table: pd.DataFrame, report: CatalogueReport, max_side: int = 224) -> pd.DataFrame:
    """``table`` without the rows whose image cannot be decoded, each listed in ``report.unreadable_images``
    with the decoder's reason.

    The decode is the one the features stage runs (:func:`lookalike.model.preprocessing.load_image`), so a
    corrupt or truncated file is set aside here, before the split, instead of stopping that stage.
    """
    from lookalike.model.preprocessing import InvalidImageError, load_image

    unreadable = []
    for position, (item_id, path) in enumerate(zip(table["id"], table["image_path"], strict=True)):
        try:
            load_image(path, max_side=max_side)
        except InvalidImageError as error:
            unreadable.append(position)
            report.unreadable_images.append({"id": int(item_id), "file": Path(path).name, "reason": str(error)})
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
    if "year" in table:
        table["year"] = pd.to_numeric(table["year"].replace("", pd.NA), errors="coerce").astype("Int64")
    return table


def write_table(table: pd.DataFrame) -> bytes:
    """CSV bytes of a table, for atomic writing."""
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8")


def read_live_delta(folder: str | Path, label_column: str) -> tuple[pd.DataFrame, set[int], dict] | None:
    """(items to add or replace, with image_path; catalogue ids to drop; the fold marker), or None
    when the folder holds no fold (then the catalogue is used exactly as it is)."""
    folder = Path(folder)
    if not (folder / FOLD_FILE).is_file():
        return None
    marker = json.loads((folder / FOLD_FILE).read_text())
    dropped = {int(line) for line in (folder / REMOVED_FILE).read_text().split()[1:]}
    if int(marker.get("items", 0)) == 0:
        return pd.DataFrame(columns=["id", label_column, EXTERNAL_ID_COLUMN, "image_path"]), dropped, marker
    items, report = load_catalogue(folder, label_column)
    if report.items != int(marker["items"]):
        raise CatalogueError(f"the live delta in {folder} has {report.items} usable items but its {FOLD_FILE} "
                             f"says {marker['items']} ({report.summary()}): run lookalike fold again")
    return items, dropped, marker
