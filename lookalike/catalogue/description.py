"""A catalogue description: where a shop's table and photos are, and what each column means.

Everything downstream (training labels, look metrics, filters, card lines, text search, the title of a
result) reads a column's role from here, never a column name of its own, so a new catalogue is a new
description (a YAML file, ``data.catalogue`` in params.yaml; docs/catalogues.md) and no code. Three layouts:

  table    a CSV, Parquet or JSON Lines table (or several: one per split), a row per item; photo paths from
           columns or templates such as ``images/{id}.jpg``; optional joins to other tables
  folders  one sub-folder per class (nested: the photo's folder is the class, its parent the coarser class)
  flat     a folder of photos and nothing else: no labels, every photo its own item
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

LAYOUTS = ("table", "folders", "flat")
TABLE_FORMATS = ("csv", "parquet", "jsonl")
SPLIT_NAMES = ("train", "val", "test")
FOLDER_CLASS = "class"  # the folders layout's columns: the photo's folder, its parent, its path
FOLDER_PARENT = "parent_class"
PATH_COLUMN = "path"
TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")


class DescriptionError(ValueError):
    """A description that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class TableFile:
    """One file of a table; ``split``: every row of it belongs to this split (the dataset's own lists)."""

    path: str
    split: str | None = None


@dataclass(frozen=True)
class Join:
    """Columns of another table brought in by key: ``on`` maps this table's column to the other's."""

    table: str
    on: dict[str, str]
    columns: dict[str, str]  # the other table's column -> its name here
    header: bool = True
    column_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogueRoles:
    """The roles of a build's columns, as the page, the API, the live catalogue and text search read them from
    the build's manifest (``manifest["params"]["catalogue"]``): no reader names a catalogue's column itself."""

    labels: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    colour: str | None = None
    filters: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    title: str | None = None
    card: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()  # the columns a result carries

    @property
    def label(self) -> str | None:
        return self.labels[0] if self.labels else None

    def to_manifest(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "attributes": list(self.attributes), "colour": self.colour,
                "filters": list(self.filters), "words": list(self.words), "title": self.title,
                "card": list(self.card), "metadata": list(self.metadata)}

    @classmethod
    def from_manifest(cls, manifest: dict) -> CatalogueRoles:
        """The build's roles; a build from before descriptions: its label column, no filters or words."""
        params = manifest.get("params", {})
        raw = params.get("catalogue")
        if raw is None:
            label = params.get("label_column")
            return cls(labels=(label,) if label else (), metadata=(label,) if label else ())
        return cls(labels=tuple(raw.get("labels", ())), attributes=tuple(raw.get("attributes", ())),
                   colour=raw.get("colour"), filters=tuple(raw.get("filters", ())), words=tuple(raw.get("words", ())),
                   title=raw.get("title"), card=tuple(raw.get("card", ())), metadata=tuple(raw.get("metadata", ())))


@dataclass(frozen=True)
class CatalogueDescription:
    """The roles of a catalogue's columns. Column names are the catalogue's own."""

    layout: str = "table"
    tables: tuple[TableFile, ...] = ()
    header: bool = True  # False: the table has no header line; ``column_names`` names its columns
    column_names: tuple[str, ...] = ()
    free_text_column: str | None = None  # CSV: the last column may hold unquoted commas (rest of the line)
    id: str | None = None  # None: items are numbered in table order
    photos: tuple[str, ...] = ()  # columns holding a photo path, or templates over columns ("images/{id}.jpg")
    photo_root: str = "."  # photo paths are relative to this folder of the catalogue
    joins: tuple[Join, ...] = ()
    labels: tuple[str, ...] = ()  # training labels, the first the main one; none: self-supervised
    attributes: tuple[str, ...] = ()  # other facts of an item: look sub-spaces, filters, relevance by column
    colour: str | None = None  # the attribute that is the product's colour (the look metrics)
    look: tuple[str, ...] = ()  # attributes that with the label make a look (metrics type_<column>_precision_at_5)
    filters: tuple[str, ...] = ()
    words: tuple[str, ...] = ()  # columns text search reads
    title: str | None = None  # shown on a result; None: the id
    card: tuple[str, ...] = ()  # short facts under a result
    split: str | None = None  # a column holding the given split
    split_values: dict[str, str] = field(default_factory=dict)  # that column's values -> train / val / test
    # a label or attribute column -> family name -> the raw values it merges (Navy Blue with Blue): the evaluation
    # reports relevance by family beside the raw values; a value no family lists is its own family
    families: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    source: str = ""  # the file it was read from, for messages

    @property
    def label(self) -> str | None:
        """The main training label (the type metrics' relevance); None for an unlabelled catalogue."""
        return self.labels[0] if self.labels else None

    @property
    def relevance_columns(self) -> tuple[str, ...]:
        """Columns whose equal values make two items relevant to each other in the evaluation."""
        return tuple(dict.fromkeys((*self.labels, *self.attributes)))

    def families_of(self, column: str | None) -> dict[str, tuple[str, ...]]:
        """The families declared for ``column``; empty when none (then every raw value is its own family)."""
        return self.families.get(column, {}) if column else {}

    def metadata_columns(self) -> tuple[str, ...]:
        """Columns a result carries (title, card, filters, words, labels, attributes), each once."""
        named = (self.title, *self.card, *self.labels, *self.attributes, *self.filters, *self.words)
        return tuple(dict.fromkeys(c for c in named if c))

    def roles(self) -> CatalogueRoles:
        """What the page, API and text search need (it travels in the build's manifest)."""
        return CatalogueRoles(labels=self.labels, attributes=self.attributes, colour=self.colour,
                              filters=self.filters, words=self.words, title=self.title, card=self.card,
                              metadata=self.metadata_columns())

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (what :func:`load_description` reads), without defaults."""
        out: dict[str, Any] = {"layout": self.layout}
        if self.tables:
            out["table"] = [{"path": t.path, **({"split": t.split} if t.split else {})} for t in self.tables] \
                if len(self.tables) > 1 or self.tables[0].split else self.tables[0].path
        for name in ("header", "column_names", "free_text_column", "id", "photos", "photo_root", "labels",
                     "attributes", "colour", "look", "filters", "words", "title", "card", "split", "split_values"):
            value, default = getattr(self, name), _DEFAULTS[name]
            if value != default:
                out[name] = list(value) if isinstance(value, tuple) else value
        if self.families:
            out["families"] = {column: {name: list(values) for name, values in families.items()}
                               for column, families in self.families.items()}
        if self.joins:
            out["joins"] = [{"table": j.table, "keys": j.on, "columns": j.columns,
                             **({} if j.header else {"header": False, "column_names": list(j.column_names)})}
                            for j in self.joins]
        return out


_DEFAULTS = {f.name: getattr(CatalogueDescription(), f.name) for f in fields(CatalogueDescription)}


def _strings(raw: dict, key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise DescriptionError(f"{where}: '{key}' must be a column name or a list of them")
    return tuple(str(v) for v in value)


def _optional(raw: dict, key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str | int):
        raise DescriptionError(f"{where}: '{key}' must be a column name")
    return None if value is None else str(value)


def _families(raw: dict, where: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """``families``: column -> {family: [raw value, ...]}, every name a string and each raw value in one family
    at most (in two, which family it belongs to would depend on the order of the file)."""
    value = raw.get("families") or {}
    if not isinstance(value, dict):
        raise DescriptionError(f"{where}: 'families' maps a column to its families ({{family: [raw value, ...]}})")
    found: dict[str, dict[str, tuple[str, ...]]] = {}
    for column, families in value.items():
        key = f"families.{column}"
        if not isinstance(families, dict) or not families:
            raise DescriptionError(f"{where}: '{key}' must map each family name to the raw values it merges")
        owner: dict[str, str] = {}  # raw value -> its family
        merged: dict[str, tuple[str, ...]] = {}
        for name, values in families.items():
            if not isinstance(name, str):
                raise DescriptionError(f"{where}: '{key}': family name {name!r} must be a string (quote it)")
            values = [values] if isinstance(values, str) else values
            if not isinstance(values, list):
                raise DescriptionError(f"{where}: '{key}.{name}' must be a list of the column's raw values")
            for v in values:
                if not isinstance(v, str):
                    raise DescriptionError(f"{where}: '{key}.{name}': {v!r} is not a string (quote the value as the "
                                           "table writes it)")
                if owner.setdefault(v, name) != name:
                    raise DescriptionError(f"{where}: '{key}': {v!r} is in two families, {owner[v]} and {name}")
            merged[name] = tuple(dict.fromkeys(values))
        for name in merged:
            if owner.setdefault(name, name) != name:
                raise DescriptionError(f"{where}: '{key}': family {name!r} is also a raw value of family "
                                       f"{owner[name]} (a value named like a family belongs to it)")
        found[str(column)] = merged
    return found


def family_values(values: Iterable[str], families: Mapping[str, Sequence[str]]) -> list[str]:
    """Each raw value's family: the family listing it, else the value itself (a value no family lists, or one
    named like a family, is in that family). The one place a column's values are merged into families."""
    lookup = {raw: name for name, raws in families.items() for raw in raws}
    return [lookup.get(value, value) for value in values]


def description_from_dict(raw: Any, where: str = "catalogue description") -> CatalogueDescription:
    """Validate a parsed description; every problem names ``where`` and the key."""
    if not isinstance(raw, dict):
        raise DescriptionError(f"{where}: expected a mapping of keys (layout, table, id, photos, labels, ...)")
    known = ({f.name for f in fields(CatalogueDescription)} | {"table"}) - {"tables", "source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DescriptionError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    layout = raw.get("layout", "table")
    if layout not in LAYOUTS:
        raise DescriptionError(f"{where}: layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    tables = raw.get("table")
    files: list[TableFile] = []
    if layout == "table":
        if tables is None:
            raise DescriptionError(f"{where}: a table layout needs 'table' (a file, or a list of files with splits)")
        for entry in tables if isinstance(tables, list) else [tables]:
            if isinstance(entry, str):
                files.append(TableFile(entry))
            elif isinstance(entry, dict) and isinstance(entry.get("path"), str):
                split = entry.get("split")
                if split is not None and split not in SPLIT_NAMES:
                    raise DescriptionError(f"{where}: table {entry['path']}: split must be one of "
                                           f"{', '.join(SPLIT_NAMES)}")
                files.append(TableFile(entry["path"], split))
            else:
                raise DescriptionError(f"{where}: each 'table' entry is a path or {{path: ..., split: ...}}")
        if not raw.get("photos"):
            raise DescriptionError(f"{where}: a table layout needs 'photos' (a column or a template such as "
                                   "images/{id}.jpg)")
    elif tables is not None:
        raise DescriptionError(f"{where}: layout {layout} reads no table; remove 'table'")
    joins = []
    for entry in raw.get("joins") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("table"), str) \
                or not isinstance(entry.get("keys"), dict) or not isinstance(entry.get("columns"), dict):
            raise DescriptionError(f"{where}: each join needs table, keys ({{column: other column}}) and columns")
        names = [str(v) for v in entry["columns"].values()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # one name, two columns: one of them would be lost
            raise DescriptionError(f"{where}: join {entry['table']}: columns names {', '.join(map(repr, twice))} "
                                   "for two columns of that table; give each its own name")
        joins.append(Join(entry["table"], {str(k): str(v) for k, v in entry["keys"].items()},
                          {str(k): str(v) for k, v in entry["columns"].items()}, bool(entry.get("header", True)),
                          _strings(entry, "column_names", where)))
    if layout == "folders" and not any(key in raw for key in ("labels", "attributes", "filters", "words", "title")):
        raw = {**folders_description().to_dict(), **raw}
    split_values = raw.get("split_values") or {}
    if not isinstance(split_values, dict) or not set(map(str, split_values.values())) <= set(SPLIT_NAMES):
        raise DescriptionError(f"{where}: split_values maps the split column's values to {', '.join(SPLIT_NAMES)}")
    description = CatalogueDescription(
        layout=layout, tables=tuple(files), header=bool(raw.get("header", True)),
        column_names=_strings(raw, "column_names", where),
        free_text_column=_optional(raw, "free_text_column", where), id=_optional(raw, "id", where),
        photos=_strings(raw, "photos", where), photo_root=str(raw.get("photo_root", ".")), joins=tuple(joins),
        labels=_strings(raw, "labels", where), attributes=_strings(raw, "attributes", where),
        colour=_optional(raw, "colour", where), look=_strings(raw, "look", where),
        filters=_strings(raw, "filters", where),
        words=_strings(raw, "words", where), title=_optional(raw, "title", where), card=_strings(raw, "card", where),
        split=_optional(raw, "split", where), split_values={str(k): str(v) for k, v in split_values.items()},
        families=_families(raw, where), source=where)
    if not description.header and not description.column_names and layout == "table":
        raise DescriptionError(f"{where}: a table without a header needs 'column_names'")
    for column in (description.colour, *description.look):
        if column and column not in description.relevance_columns:
            raise DescriptionError(f"{where}: {column!r} (colour, look) must be one of labels or attributes")
    for column in description.families:
        if column not in description.relevance_columns:
            raise DescriptionError(f"{where}: 'families.{column}': {column!r} must be one of labels or attributes")
    return description


def load_description(path: str | Path) -> CatalogueDescription:
    """A description from its YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DescriptionError(f"catalogue description not found: {path}") from None
    except yaml.YAMLError as error:
        raise DescriptionError(f"{path} is not valid YAML: {error}") from None
    return description_from_dict(raw, str(path))


def folders_description(labels: bool = True) -> CatalogueDescription:
    """The folders layout's fixed roles: the photo's folder is the class, its parent folder the coarser one."""
    return CatalogueDescription(
        layout="folders", photos=(PATH_COLUMN,), labels=(FOLDER_CLASS,) if labels else (),
        attributes=(FOLDER_PARENT,), filters=(FOLDER_CLASS, FOLDER_PARENT), words=(FOLDER_CLASS, FOLDER_PARENT),
        title=FOLDER_CLASS, card=(FOLDER_CLASS, FOLDER_PARENT))


def template_fields(template: str) -> list[str]:
    """Columns a photo template reads (``images/{id}.jpg`` -> [id]); a plain column name reads itself."""
    return TEMPLATE_FIELD.findall(template)
