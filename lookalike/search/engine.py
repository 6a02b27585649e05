"""The search API: pinned artifacts in, the most similar catalogue items out.

    searcher = Searcher.load()                       # checks the manifest first
    response = searcher.search("photo.jpg", k=5)     # a path or the bytes of an upload
    response = searcher.similar_items(15970, k=5)    # "more like this" for a catalogue item
    response = searcher.similar_items(15970, k=5, similarity="colour")   # ... in the same colour

``similarity`` picks what "alike" means per query (:mod:`lookalike.search.similarity`): "overall" (the
default), a mode of the build ("colour", "type", "style") or weights such as "type:1,colour:0.5".

Bad images raise :class:`lookalike.model.preprocessing.InvalidImageError`; artifacts that
disagree raise :class:`lookalike.artifacts.ArtifactMismatchError`. Both carry a
message meant for a person. The command line is :mod:`lookalike.cli` (``lookalike --help``).

The model runs through :mod:`lookalike.model.runtime` (LiteRT, the build's ``model.tflite``): importing
this module imports no TensorFlow (tests/test_runtime.py checks it).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lookalike.artifacts import ArtifactMismatchError, load_build
from lookalike.catalogue.description import CatalogueRoles
from lookalike.catalogue.reading import read_table
from lookalike.model.preprocessing import DEFAULT_MAX_BYTES, ImageSource, PreprocessSpec, load_image, preprocess
from lookalike.model.runtime import EmbeddingRuntime
from lookalike.params import PROJECT_ROOT
from lookalike.search.expansion import QueryExpansion
from lookalike.search.index import load_index
from lookalike.search.photos import PhotoRows, load_more_photos, search_items
from lookalike.search.similarity import Similarity


@dataclass
class Match:
    rank: int
    id: int
    score: float
    image_path: str
    metadata: dict


@dataclass
class SearchResponse:
    matches: list[Match]
    embed_ms: float = 0.0
    search_ms: float = 0.0
    total_ms: float = 0.0
    candidates: int = 0  # catalogue items that could be returned: passing the filters, not excluded

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Searcher:
    """Loaded once per process; safe to call from several threads at once."""

    manifest: dict
    model: EmbeddingRuntime  # the build's exported model: float32 (n, h, w, 3) -> (n, dim)
    spec: PreprocessSpec
    embeddings: np.ndarray  # float32 (n, dim), unit length
    image_paths: np.ndarray  # str (n,)
    items: pd.DataFrame  # n rows, same order
    index: object
    root: Path = PROJECT_ROOT
    max_bytes: int = DEFAULT_MAX_BYTES
    folder: Path | None = None  # the build folder loaded (its exported backbone serves evaluate-folder's baseline)
    similarity: Similarity | None = None  # the build's sub-spaces and modes (None: read from the manifest)
    expansion: QueryExpansion = field(default_factory=QueryExpansion)  # the build's query expansion (default off)
    photos: PhotoRows | None = None  # which item each indexed photo is of (None: one photo per item)
    more_embeddings: np.ndarray | None = None  # float32 (m, dim): the items' other photos, index rows n..n+m-1
    more_image_paths: np.ndarray | None = None  # str (m,): their files
    _row_of_id: dict = field(default_factory=dict, repr=False)
    _metadata_columns: dict = field(default_factory=dict, repr=False)  # column -> object array: rows in microseconds
    _item_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @classmethod
    def load(cls, artifacts_dir: str | Path | None = None, root: str | Path = PROJECT_ROOT,
             max_bytes: int = DEFAULT_MAX_BYTES, threads: int | None = None) -> Searcher:
        """Load and cross-check the build an artifacts folder serves; refuse any that disagree.

        The folder's published build (``artifacts/current.json``), so a pipeline killed halfway
        never leaves the page a mix; a folder without one is loaded as it is. See
        :func:`lookalike.artifacts.resolve_build`. ``threads``: the model's intra-op threads (default:
        the cores this process may use).
        """
        directory = Path(artifacts_dir) if artifacts_dir else Path(root) / "artifacts"
        return load_build(directory, lambda folder, manifest: cls._load_folder(folder, manifest, root, max_bytes,
                                                                               threads))

    @classmethod
    def _load_folder(cls, directory: Path, manifest: dict, root: str | Path, max_bytes: int,
                     threads: int | None = None) -> Searcher:
        """One verified build folder: every file loaded and checked against the others."""
        files = {name: directory / entry["path"] for name, entry in manifest["files"].items()}
        count, dimension = int(manifest["count"]), int(manifest["dimension"])
        embeddings = np.load(files["embeddings"])
        image_paths = np.load(files["image_paths"])
        items = read_table(files["items"])
        index = load_index(files["index"], manifest["params"]["index"])
        model = EmbeddingRuntime(files["runtime_model"], threads)
        photos, more = PhotoRows.single(count), np.zeros((0, dimension), np.float32)
        more_paths = np.zeros(0, str)
        if "more_photos" in files:  # several photos per item (lookalike/search/photos.py)
            try:
                more_paths, photos, more = load_more_photos(files["more_photos"], count, dimension)
            except (ValueError, KeyError) as error:
                raise ArtifactMismatchError(f"{error}: rebuild with dvc repro") from None
        checks = {
            "embeddings rows": (embeddings.shape[0], count),
            "embeddings dimension": (embeddings.shape[1], dimension),
            "image paths": (len(image_paths), count),
            "items rows": (len(items), count),
            "index size": (index.ntotal, photos.photos),
            "index dimension": (index.d, dimension),
            "model output dimension": (model.output_shape[-1], dimension),
        }
        for what, (actual, expected) in checks.items():
            if actual != expected:
                raise ArtifactMismatchError(
                    f"{what} is {actual} but the manifest says {expected}: rebuild with dvc repro")
        norms = np.linalg.norm(embeddings, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ArtifactMismatchError("embeddings are not unit length: rebuild with dvc repro")
        spec = PreprocessSpec(**manifest["params"]["preprocess"])
        if model.input_shape != (spec.image_size, spec.image_size, 3):
            raise ArtifactMismatchError(
                f"model input {model.input_shape[:2]} does not match the manifest's image_size {spec.image_size}")
        searcher = cls(manifest, model, spec, embeddings, image_paths, items, index, Path(root), max_bytes,
                       Path(directory))
        searcher.similarity = Similarity.from_manifest(manifest)
        searcher.expansion = QueryExpansion.from_index_params(manifest["params"]["index"])
        searcher.photos, searcher.more_embeddings, searcher.more_image_paths = photos, more, more_paths
        searcher._row_of_id = {int(i): row for row, i in enumerate(items["id"])}
        searcher._item_ids = items["id"].to_numpy()
        # the columns a result carries are the build's own (its catalogue description), never a fixed list
        searcher._metadata_columns = {c: items[c].to_numpy(dtype=object)
                                      for c in CatalogueRoles.from_manifest(manifest).metadata if c in items}
        searcher.model(np.zeros((1, spec.image_size, spec.image_size, 3), np.float32))  # allocate once, up front
        return searcher

    def photo_path(self, photo_row: int) -> Path:
        """The file of any indexed photo: an item's first (rows 0..n-1) or one of its others."""
        if photo_row < len(self.items):
            return self.resolve_path(photo_row)
        path = Path(str(self.more_image_paths[photo_row - len(self.items)]))
        return path if path.is_absolute() else self.root / path

    @property
    def photo_rows(self) -> PhotoRows:
        """Which item each indexed photo is of."""
        return self.photos if self.photos is not None else PhotoRows.single(len(self.items))

    @cached_property
    def photo_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """Every photo's vector (float32 (photos, dim), index row order) and its item row (int64 (photos,)): what
        near-duplicate checks compare, photo by photo."""
        rows = self.photo_rows
        if self.more_embeddings is None or not len(self.more_embeddings):
            return self.embeddings, np.arange(len(self.embeddings), dtype=np.int64)
        return (np.vstack([self.embeddings, self.more_embeddings]),
                rows.item_of(np.arange(rows.photos, dtype=np.int64)))

    def resolve_path(self, row: int) -> Path:
        return Path(self.path_text(row))

    def path_text(self, row: int) -> str:
        """The photo file of the item at ``row``, as text: string joins, because pathlib cost a photo query
        0.15 ms for its five results (cProfile)."""
        path = str(self.image_paths[row])
        return path if os.path.isabs(path) else os.path.join(str(self.root), path)

    def row_of(self, item_id: int) -> int:
        try:
            return self._row_of_id[int(item_id)]
        except (KeyError, ValueError, TypeError):
            raise KeyError(f"no catalogue item with id {item_id!r}") from None

    @property
    def roles(self) -> CatalogueRoles:
        """What the build's columns are for (filters, title, card lines, metadata): readers ask this, never a
        column name of their own, so any catalogue is served."""
        return CatalogueRoles.from_manifest(self.manifest)

    def metadata(self, row: int) -> dict[str, str]:
        """The build's metadata columns of the item at ``row`` (text as in its table; "NA" stays "NA")."""
        return {c: str(values[row]) for c, values in self._metadata_columns.items()}

    def item(self, item_id: int) -> Match:
        """One catalogue item as a rank-0 match with score 1: its id, image path and metadata."""
        row = self.row_of(item_id)
        return Match(0, int(item_id), 1.0, self.path_text(row), self.metadata(row))

    def decode(self, source: ImageSource) -> Image.Image:
        """An upload decoded once, as the search will see it (shrunk to the model's input side), for a preview."""
        return load_image(source, max_bytes=self.max_bytes, max_side=self.spec.image_size)

    def embed_image(self, source: ImageSource | Image.Image) -> np.ndarray:
        """float32 (dim,) unit embedding of a path, image bytes or an image :meth:`decode` returned."""
        return self.model(preprocess(source, self.spec, self.max_bytes)[None])[0]

    def allowed_rows(self, filters: dict[str, list[str]] | None) -> np.ndarray | None:
        """Rows passing every non-empty filter (column -> accepted values), or None for all."""
        active = {c: v for c, v in (filters or {}).items() if v}
        if not active:
            return None
        mask = np.ones(len(self.items), dtype=bool)
        for column, values in active.items():
            if column not in self.items:
                raise KeyError(f"unknown filter column {column!r}")
            mask &= self.items[column].isin(list(values)).to_numpy()
        return np.flatnonzero(mask)

    def check_similarity(self, similarity: str | dict | None) -> None:
        """Refuse a similarity this build cannot answer (:class:`lookalike.search.similarity.SimilarityError`) before
        any work is done for the query."""
        (self.similarity or Similarity.from_manifest(self.manifest)).weights(similarity)

    def query_vector(self, vector: np.ndarray, similarity: str | dict | None = None) -> np.ndarray:
        """``vector`` re-weighted to ask ``similarity`` (:class:`lookalike.search.similarity.SimilarityError` if the
        build cannot answer it); the vector itself for the default, "overall"."""
        layout = self.similarity or Similarity.from_manifest(self.manifest)
        return layout.query_vector(vector, similarity)

    def top_rows(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None,
                 excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The one top-k of the build every search ends in (photo, item, words, the live catalogue's build part):
        rows int64 (<= k,) and their inner products float32 with ``vector``, best first, among ``allowed`` rows
        (None: all) and never an ``excluded`` one; an item of several photos scores by its best
        (:func:`lookalike.search.photos.search_items`)."""
        scores, rows = search_items(self.index, self.photo_rows, np.asarray(vector, np.float32)[None], k, allowed,
                                    None if excluded is None or not len(excluded) else np.asarray(excluded, np.int64))
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]

    def match(self, rank: int, row: int, score: float) -> Match:
        """The result at ``row`` of the build."""
        return Match(rank, int(self._item_ids[row]), float(score), self.path_text(row), self.metadata(row))

    def search_vector(self, vector: np.ndarray, k: int, filters: dict | None = None,
                      exclude_rows: tuple[int, ...] = (), similarity: str | dict | None = None) -> SearchResponse:
        """Top-k among the items passing ``filters``, never any of ``exclude_rows``, by ``similarity``."""
        if k < 1:
            raise ValueError("k must be at least 1")
        started = time.perf_counter()
        self.check_similarity(similarity)
        allowed = self.allowed_rows(filters)
        excluded = np.unique(np.asarray(exclude_rows, dtype=np.int64))
        candidates = len(self.items) - len(excluded) if allowed is None else \
            len(allowed) - int(np.isin(excluded, allowed).sum())
        if candidates == 0:
            return SearchResponse([], candidates=0)

        def nearest(query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
            found, cosines = self.top_rows(query, n, allowed, excluded)
            return self.embeddings[found], cosines

        vector = self.query_vector(self.expansion.expand(vector, nearest), similarity)
        rows, scores = self.top_rows(vector, k, allowed, excluded)
        matches = [self.match(rank, int(row), score)
                   for rank, (row, score) in enumerate(zip(rows.tolist(), scores.tolist(), strict=True), start=1)]
        return SearchResponse(matches, search_ms=(time.perf_counter() - started) * 1e3, candidates=candidates)

    def search(self, source: ImageSource | Image.Image, k: int = 5, filters: dict | None = None,
               similarity: str | dict | None = None) -> SearchResponse:
        """The k catalogue items most similar to an image (path or bytes), by ``similarity``."""
        started = time.perf_counter()
        self.check_similarity(similarity)
        vector = self.embed_image(source)
        embedded = time.perf_counter()
        response = self.search_vector(vector, k, filters, similarity=similarity)
        response.embed_ms = (embedded - started) * 1e3
        response.total_ms = (time.perf_counter() - started) * 1e3
        return response

    def similar_items(self, item_id: int, k: int = 5, filters: dict | None = None,
                      similarity: str | dict | None = None) -> SearchResponse:
        """"More like this": the k nearest catalogue items to an item, never the item itself, by ``similarity``."""
        started = time.perf_counter()
        row = self.row_of(item_id)
        response = self.search_vector(self.embeddings[row], k, filters, exclude_rows=(row,), similarity=similarity)
        response.total_ms = (time.perf_counter() - started) * 1e3
        return response

    def related_table(self, k: int = 10) -> pd.DataFrame:
        """For every item its k nearest others: columns id, rank, related_id, score."""
        scores, rows = search_items(self.index, self.photo_rows, self.embeddings, k + 1)
        records = []
        for row, (row_scores, row_neighbours) in enumerate(zip(scores, rows, strict=True)):
            kept = [(s, n) for s, n in zip(row_scores, row_neighbours, strict=True) if n >= 0 and n != row][:k]
            item_id = int(self._item_ids[row])
            records.extend((item_id, rank, int(self._item_ids[n]), round(float(s), 6))
                           for rank, (s, n) in enumerate(kept, start=1))
        return pd.DataFrame(records, columns=["id", "rank", "related_id", "score"])
