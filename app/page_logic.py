"""Plain-Python helpers for the shopper page: settings, artifact facts, labels, and the catalogue it shows.

Kept free of Streamlit so the rules (which folder, which upload cap, what the
sidebar says about the model, which products the page shows) can be read and tested
without running the page.

The catalogue (:class:`PageCatalogue`) is the pinned build alone, or, when the live
database of ``lookalike serve`` exists, the build plus the shop's live changes (items
added, replaced or removed through the API), read-only. Ids are strings throughout: a
build item's decimal id, or a shop's own id (SKU).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from lookalike.catalogue.description import CatalogueRoles
from lookalike.live import DB_ENV, DEFAULT_DB, LiveCatalogue, LiveResponse, resolve_db_path
from lookalike.live.journal import is_database_url
from lookalike.model.preprocessing import UPLOAD_EXTENSIONS, ImageSource
from lookalike.search.engine import Searcher, SearchResponse

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_ENV = "LOOKALIKE_ARTIFACTS"
LIVE_DB_ENV = DB_ENV  # the same variable `lookalike serve` reads
DEFAULT_K = 5
DEFAULT_MAX_UPLOAD_MB = 10.0
MAX_K = 20
UPLOAD_TYPES = UPLOAD_EXTENSIONS  # the decoder's list: the uploader offers exactly what the search accepts
ALIKE_LABELS = {"overall": "Overall look", "colour": "Same colour", "type": "Same type", "style": "Same style",
                "picture": "Whole picture"}
BUILD_COMMAND = "dvc repro"
_WORD_BREAK = re.compile(r"[\s_\-.]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def artifacts_dir(environ: dict[str, str] | None = None) -> Path:
    """The artifacts folder: $LOOKALIKE_ARTIFACTS when set (tests point it at a broken copy), else ./artifacts."""
    value = (environ if environ is not None else os.environ).get(ARTIFACTS_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else ROOT / "artifacts"


def live_db_path(artifacts: Path, environ: Mapping[str, str] | None = None) -> Path | str:
    """The live catalogue database `lookalike serve` keeps for these artifacts: $LOOKALIKE_LIVE_DB (a
    PostgreSQL URL as it is; a relative path is taken from the folder that holds the artifacts folder), else
    live/live.db beside the artifacts."""
    value = (environ if environ is not None else os.environ).get(LIVE_DB_ENV, "").strip()
    if is_database_url(value):
        return value
    return resolve_db_path(Path(value).expanduser() if value else DEFAULT_DB, artifacts.parent)


def metrics_path(artifacts: Path) -> Path:
    """metrics/metrics.json beside the artifacts folder, so an overridden folder never borrows foreign metrics."""
    return artifacts.parent / "metrics" / "metrics.json"


@dataclass(frozen=True)
class PageSettings:
    """What params.yaml says about the page: default K and the upload cap."""

    default_k: int = DEFAULT_K
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB

    @property
    def max_bytes(self) -> int:
        """The searcher's cap in bytes; decimal MB, the unit InvalidImageError messages print."""
        return int(self.max_upload_mb * 1_000_000)

    @property
    def widget_max_mb(self) -> int:
        """Streamlit's per-widget cap (whole MiB, never below ours), so oversized files still reach our message."""
        return max(1, math.ceil(self.max_upload_mb))


def read_settings(params_path: Path | None = None) -> PageSettings:
    """search.k and search.max_upload_mb from params.yaml; defaults when the file or keys are missing or invalid."""
    path = params_path or ROOT / "params.yaml"
    try:
        search = (yaml.safe_load(path.read_text()) or {}).get("search") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        search = {}
    k, mb = search.get("k", DEFAULT_K), search.get("max_upload_mb", DEFAULT_MAX_UPLOAD_MB)
    valid_k = isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_K
    valid_mb = isinstance(mb, (int, float)) and not isinstance(mb, bool) and mb > 0
    return PageSettings(k if valid_k else DEFAULT_K, float(mb) if valid_mb else DEFAULT_MAX_UPLOAD_MB)


@dataclass(frozen=True)
class ArtifactInfo:
    """The few facts a shopper-facing page shows about the model it runs."""

    model_hash: str
    index_hash: str
    created: str
    items: int
    backbone: str
    index_type: str
    precision_at_5: float | None
    look_precision_at_5: float | None = None  # same type AND same colour in the top 5


def format_created(value: str) -> str:
    """ISO timestamp from the manifest as 'YYYY-MM-DD HH:MM UTC' (unchanged when unparsable)."""
    try:
        stamp = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return str(value or "unknown")
    if stamp.tzinfo is None:
        return stamp.strftime("%Y-%m-%d %H:%M")
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def read_precision_at_5(path: Path, name: str = "precision_at_5") -> float | None:
    """trained.<name> from metrics.json (by default precision_at_5), or None when it is not there."""
    try:
        value = json.loads(path.read_text())["trained"][name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def artifact_info(manifest: dict[str, Any], metrics: Path) -> ArtifactInfo:
    """Summarise the manifest the searcher verified, plus the test metric."""
    files = manifest.get("files", {})
    params = manifest.get("params", {})
    return ArtifactInfo(
        model_hash=str(files.get("model", {}).get("sha256", ""))[:12],
        index_hash=str(files.get("index", {}).get("sha256", ""))[:12],
        created=format_created(manifest.get("created_at", "")),
        items=int(manifest.get("count", 0)),
        backbone=str(params.get("backbone", "unknown")),
        index_type=str(params.get("index", {}).get("type", "unknown")),
        precision_at_5=read_precision_at_5(metrics),
        look_precision_at_5=read_precision_at_5(metrics, "type_colour_precision_at_5"),
    )


def column_label(column: str) -> str:
    """A person's name for a catalogue column (a filter's label): its words split at camelCase, snake_case or
    kebab-case, the first capitalised ("coarse_class" -> "Coarse class", "countryOfOrigin" -> "Country of origin").
    Any catalogue's columns read this way, so the page names none of its own."""
    words = [w for w in _WORD_BREAK.split(str(column)) if w]
    if not words:
        return str(column)
    words = [w if len(w) > 1 and w.isupper() else w.lower() for w in words]  # acronyms (SKU, EAN) stay
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def item_label(item_id: int | str, name: str) -> str:
    """How a catalogue item reads in the product picker: id first, so typing either finds it (the id alone when
    the name is the id: a catalogue without titles)."""
    return str(item_id) if name == str(item_id) else f"{item_id} · {name}"


def label_of(labels: Mapping[str, str], item_id: object) -> str:
    """The picker's label for an id (its own text when the labels lack it, e.g. an id set by a test as a number)."""
    return labels.get(str(item_id), str(item_id))


def _shown(value: object) -> str:
    """A value as the page shows it; "" for a missing one (pandas' "nan")."""
    text = str(value if value is not None else "").strip()
    return "" if text == "nan" else text


def display_name(metadata: Mapping[str, str], title: str | None, item_id: object) -> str:
    """A product's name: its value of the build's title column (``roles.title``), else its id (a catalogue
    without titles, or a row without one)."""
    return (_shown(metadata.get(title)) if title else "") or str(item_id)


def describe(metadata: Mapping[str, str], card: Sequence[str]) -> str:
    """One short line under a product: its values of the build's card columns (``roles.card``), where it has one."""
    return " · ".join(v for v in (_shown(metadata.get(c)) for c in card) if v)


def caption(product: Product) -> str:
    """The card line and the id ("Fruit · Apple · #17"; "#17" when the build has no card columns)."""
    return " · ".join(p for p in (product.line, f"#{product.id}") if p)


def page_count(total: int, per_page: int) -> int:
    """Pages needed for ``total`` items; at least one so the pager always renders."""
    return max(1, math.ceil(total / per_page))


_MARKDOWN_SPECIALS = "\\`*_[]<>#|~$"  # the ones that matter mid-sentence


def escape_markdown(text: str) -> str:
    """Show shopper-provided text (file names) literally inside Streamlit markdown."""
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIALS else c for c in str(text))


# --- the catalogue the page shows ---

Photo = Path | bytes | None  # a catalogue photo's path, a live item's stored image, or nothing to show


@dataclass(frozen=True)
class Product:
    """A product as the page shows it: a result card (rank and score), a browse card or the query. ``name`` and
    ``line`` come from the build's title and card columns (:meth:`PageCatalogue.product`)."""

    id: str
    metadata: dict[str, str]
    photo: Photo
    rank: int = 0
    score: float = 1.0
    name: str = ""
    line: str = ""


@dataclass(frozen=True)
class Results:
    """The top K, timings, and how many products could have been returned (filters passed, not excluded)."""

    matches: list[Product]
    embed_ms: float
    search_ms: float
    total_ms: float
    candidates: int


@dataclass(frozen=True)
class BuildView:
    """Computed once per loaded build: each row's id and display name, picker labels by id, filter choices, and
    what the build's columns are for (its filters, title and card columns: ``roles``)."""

    ids: list[str]
    names: list[str]
    labels: dict[str, str]
    options: dict[str, list[str]]
    roles: CatalogueRoles = CatalogueRoles()


def build_view(searcher: Searcher) -> BuildView:
    items, roles = searcher.items, searcher.roles
    ids = [str(int(i)) for i in items["id"]]
    titles = items[roles.title].tolist() if roles.title and roles.title in items else [None] * len(ids)
    names = [display_name({"title": t}, "title", i) for i, t in zip(ids, titles, strict=True)]
    labels = {i: item_label(i, name) for i, name in zip(ids, names, strict=True)}
    options = {c: sorted(str(v) for v in items[c].dropna().unique() if _shown(v)) if c in items else []
               for c in roles.filters}
    return BuildView(ids, names, labels, options, roles)


class PageCatalogue:
    """What the page asks of the catalogue, for one rerun: the pinned build alone (``live`` None: no live
    database), or the build plus the live changes, as the service answers them (refresh ``live`` first).

    Removed build items are in no result, grid or picker; replaced ones show their new photo and metadata;
    added ones are found, browsed (first in the grid, latest first) and picked like any other.
    """

    def __init__(self, searcher: Searcher, view: BuildView, live: LiveCatalogue | None = None):
        self.searcher, self.view, self.live = searcher, view, live

    @property
    def filter_columns(self) -> tuple[str, ...]:
        """The build's filter columns (its description's ``filters``), in its order: the sidebar's filters."""
        return self.view.roles.filters

    def _product(self, item_id: str, metadata: dict[str, str], photo: Photo, rank: int = 0,
                 score: float = 1.0) -> Product:
        roles = self.view.roles
        return Product(item_id, metadata, photo, rank, score, display_name(metadata, roles.title, item_id),
                       describe(metadata, roles.card))

    @property
    def size(self) -> int:
        return len(self.live) if self.live is not None else len(self.searcher.items)

    def labels(self) -> dict[str, str]:
        """Picker labels (id -> 'id · name'), in the grid's order."""
        if self.live is None:
            return self.view.labels
        labels = {}
        for item_id in self.live.browse_ids():
            row = self.live.build_row(item_id)
            name = self.view.names[row] if row is not None else self._live_name(item_id)
            if name is not None:
                labels[item_id] = item_label(item_id, name)
        return labels

    def _live_name(self, item_id: str) -> str | None:
        try:
            return display_name(self.live.item(item_id).metadata, self.view.roles.title, item_id)
        except KeyError:  # removed since the listing (another session refreshed)
            return None

    def options(self) -> dict[str, list[str]]:
        """Filter choices: the build's, plus any new value a live item brought (a new product type)."""
        if self.live is None:
            return self.view.options
        values = {c: set(v) for c, v in self.view.options.items()}
        for item_id in self.live.live_ids():
            try:
                metadata = self.live.item(item_id).metadata
            except KeyError:
                continue
            for column in self.filter_columns:
                if metadata.get(column):
                    values.setdefault(column, set()).add(metadata[column])
        return {c: sorted(v) for c, v in values.items()}

    def browse_ids(self, filters: dict[str, list[str]]) -> list[str]:
        """Every product passing the filters, in grid order."""
        if self.live is not None:
            return self.live.browse_ids(filters)
        allowed = self.searcher.allowed_rows(filters)
        return list(self.view.ids) if allowed is None else [self.view.ids[int(row)] for row in allowed]

    def product(self, item_id: str) -> Product:
        """One product by id; KeyError when the catalogue has none (never had, or removed)."""
        if self.live is None:
            match = self.searcher.item(item_id)
            return self._product(str(match.id), match.metadata, Path(match.image_path))
        item = self.live.item(str(item_id))
        return self._product(item.id, item.metadata, self._photo(item.id, item.image_path))

    def _photo(self, item_id: str, image_path: str | None) -> Photo:
        if image_path is not None:
            return Path(image_path)
        try:
            return self.live.image(item_id)[0]
        except KeyError:  # removed since the search (another session refreshed): a placeholder
            return None

    def decode(self, source: ImageSource) -> Image.Image:
        """An upload decoded once, as the search will see it: the preview and the search share it."""
        return self.searcher.decode(source)

    def search(self, image: Image.Image, k: int, filters: dict, similarity: str | None = None) -> Results:
        if self.live is None:
            return self._results(self.searcher.search(image, k, filters, similarity=similarity))
        return self._results(self.live.search(image, k, filters, similarity=similarity))

    def similar(self, item_id: str, k: int, filters: dict, similarity: str | None = None) -> Results:
        """"More like this": never the product itself. KeyError for an unknown id."""
        if self.live is None:
            return self._results(self.searcher.similar_items(item_id, k, filters, similarity=similarity))
        return self._results(self.live.similar(str(item_id), k, filters, similarity=similarity))

    def words(self, text: str, k: int, filters: dict, image: Image.Image | None = None,
              item_id: str | None = None, text_weight: float = 0.5) -> Results:
        """Products for words alone, or a photo or product refined by words ("in red"): lookalike/text/search.py.
        TextQueryError (a message for the shopper) for words it cannot search; KeyError for an unknown product."""
        from lookalike.text.search import Query, text_search_for

        query = Query(text=text, image=image, item_ids=[item_id] if item_id is not None else [],
                      text_weight=text_weight if image is not None or item_id is not None else 1.0)
        if self.live is None:
            query.item_ids = [int(i) for i in query.item_ids]
            return self._results(text_search_for(self.searcher).search(query, k, filters))
        return self._results(text_search_for(self.live).search(query, k, filters))

    def similarity_modes(self) -> list[str]:
        """What "alike" may mean for this build: "overall" first, then its modes (colour, type, style)."""
        return self.searcher.similarity.mode_names if self.searcher.similarity else ["overall"]

    def _results(self, response: SearchResponse | LiveResponse) -> Results:
        matches = [self._product(str(m.id), m.metadata,
                                 Path(m.image_path) if self.live is None else self._photo(str(m.id), m.image_path),
                                 m.rank, m.score)
                   for m in response.matches]
        return Results(matches, response.embed_ms, response.search_ms, response.total_ms, response.candidates)
