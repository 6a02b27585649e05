"""The search API: pinned artifacts in, the most similar catalogue items out.

    searcher = Searcher.load()                       # checks the manifest first
    response = searcher.search("photo.jpg", k=5)     # a path or the bytes of an upload
    response = searcher.similar_items(15970, k=5)    # "more like this" for a catalogue item

Bad images raise :class:`lookalike.preprocessing.InvalidImageError`; artifacts that
disagree raise :class:`lookalike.artifacts.ArtifactMismatchError`. Both carry a
message meant for a person. Also a command line: ``python -m lookalike.search --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.artifacts import ArtifactMismatchError, load_build
from lookalike.catalogue import load_catalogue, read_table
from lookalike.index import load_index, search
from lookalike.metrics import evaluate_retrieval, unit_rows
from lookalike.model import CompiledModel, build_feature_model, load_embedding_model, predict_paths
from lookalike.params import PROJECT_ROOT
from lookalike.preprocessing import DEFAULT_MAX_BYTES, ImageSource, InvalidImageError, PreprocessSpec, preprocess

FILTER_COLUMNS = ("gender", "masterCategory", "articleType", "baseColour")
METADATA_COLUMNS = ("productDisplayName", "articleType", "baseColour", "gender", "masterCategory", "subCategory")


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
    model: CompiledModel
    spec: PreprocessSpec
    embeddings: np.ndarray  # float32 (n, dim), unit length
    image_paths: np.ndarray  # str (n,)
    items: pd.DataFrame  # n rows, same order
    index: object
    root: Path = PROJECT_ROOT
    max_bytes: int = DEFAULT_MAX_BYTES
    _row_of_id: dict = field(default_factory=dict, repr=False)
    _metadata_columns: dict = field(default_factory=dict, repr=False)  # column -> object array: rows in microseconds
    _item_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @classmethod
    def load(cls, artifacts_dir: str | Path | None = None, root: str | Path = PROJECT_ROOT,
             max_bytes: int = DEFAULT_MAX_BYTES) -> Searcher:
        """Load and cross-check the build an artifacts folder serves; refuse any that disagree.

        The folder's published build (``artifacts/current.json``), so a pipeline killed halfway
        never leaves the page a mix; a folder without one is loaded as it is. See
        :func:`lookalike.artifacts.resolve_build`.
        """
        directory = Path(artifacts_dir) if artifacts_dir else Path(root) / "artifacts"
        return load_build(directory, lambda folder, manifest: cls._load_folder(folder, manifest, root, max_bytes))

    @classmethod
    def _load_folder(cls, directory: Path, manifest: dict, root: str | Path, max_bytes: int) -> Searcher:
        """One verified build folder: every file loaded and checked against the others."""
        files = {name: directory / entry["path"] for name, entry in manifest["files"].items()}
        count, dimension = int(manifest["count"]), int(manifest["dimension"])
        embeddings = np.load(files["embeddings"])
        image_paths = np.load(files["image_paths"])
        items = read_table(files["items"])
        index = load_index(files["index"], manifest["params"]["index"])
        model = load_embedding_model(files["model"])
        checks = {
            "embeddings rows": (embeddings.shape[0], count),
            "embeddings dimension": (embeddings.shape[1], dimension),
            "image paths": (len(image_paths), count),
            "items rows": (len(items), count),
            "index size": (index.ntotal, count),
            "index dimension": (index.d, dimension),
            "model output dimension": (int(model.output_shape[-1]), dimension),
        }
        for what, (actual, expected) in checks.items():
            if actual != expected:
                raise ArtifactMismatchError(
                    f"{what} is {actual} but the manifest says {expected}: rebuild with dvc repro")
        norms = np.linalg.norm(embeddings, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ArtifactMismatchError("embeddings are not unit length: rebuild with dvc repro")
        spec = PreprocessSpec(**manifest["params"]["preprocess"])
        if tuple(model.input_shape[1:3]) != (spec.image_size, spec.image_size):
            raise ArtifactMismatchError(
                f"model input {model.input_shape[1:3]} does not match the manifest's image_size {spec.image_size}")
        searcher = cls(manifest, CompiledModel(model), spec, embeddings, image_paths, items, index, Path(root),
                       max_bytes)
        searcher._row_of_id = {int(i): row for row, i in enumerate(items["id"])}
        searcher._item_ids = items["id"].to_numpy()
        searcher._metadata_columns = {c: items[c].to_numpy(dtype=object) for c in METADATA_COLUMNS if c in items}
        searcher.model(np.zeros((1, spec.image_size, spec.image_size, 3), np.float32))  # trace once, up front
        return searcher

    def resolve_path(self, row: int) -> Path:
        path = Path(str(self.image_paths[row]))
        return path if path.is_absolute() else self.root / path

    def row_of(self, item_id: int) -> int:
        try:
            return self._row_of_id[int(item_id)]
        except (KeyError, ValueError, TypeError):
            raise KeyError(f"no catalogue item with id {item_id!r}") from None

    def metadata(self, row: int) -> dict[str, str]:
        """Display fields of the item at ``row`` (text as in styles.csv; "NA" stays "NA")."""
        return {c: str(values[row]) for c, values in self._metadata_columns.items()}

    def item(self, item_id: int) -> Match:
        """One catalogue item as a rank-0 match with score 1: its id, image path and metadata."""
        row = self.row_of(item_id)
        return Match(0, int(item_id), 1.0, str(self.resolve_path(row)), self.metadata(row))

    def embed_image(self, source: ImageSource) -> np.ndarray:
        """float32 (dim,) unit embedding of a path or image bytes."""
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

    def search_vector(self, vector: np.ndarray, k: int, filters: dict | None = None,
                      exclude_rows: tuple[int, ...] = ()) -> SearchResponse:
        """Top-k among the items passing ``filters``, never any of ``exclude_rows``."""
        if k < 1:
            raise ValueError("k must be at least 1")
        started = time.perf_counter()
        allowed = self.allowed_rows(filters)
        excluded = {int(r) for r in exclude_rows}
        if allowed is not None and excluded:
            allowed = np.setdiff1d(allowed, np.fromiter(excluded, dtype=np.int64))
        candidates = len(self.items) - len(excluded) if allowed is None else len(allowed)
        if candidates == 0:
            return SearchResponse([], candidates=0)
        depth = k + (len(excluded) if allowed is None else 0)
        scores, rows = search(self.index, vector[None], depth, allowed)
        matches = []
        for score, row in zip(scores[0], rows[0], strict=True):
            if row < 0 or int(row) in excluded:
                continue
            matches.append(Match(len(matches) + 1, int(self._item_ids[int(row)]), float(score),
                                 str(self.resolve_path(int(row))), self.metadata(int(row))))
            if len(matches) == k:
                break
        return SearchResponse(matches, search_ms=(time.perf_counter() - started) * 1e3, candidates=candidates)

    def search(self, source: ImageSource, k: int = 5, filters: dict | None = None) -> SearchResponse:
        """The k catalogue items most similar to an image (path or bytes)."""
        started = time.perf_counter()
        vector = self.embed_image(source)
        embedded = time.perf_counter()
        response = self.search_vector(vector, k, filters)
        response.embed_ms = (embedded - started) * 1e3
        response.total_ms = (time.perf_counter() - started) * 1e3
        return response

    def similar_items(self, item_id: int, k: int = 5, filters: dict | None = None) -> SearchResponse:
        """"More like this": the k nearest catalogue items to an item, never the item itself."""
        started = time.perf_counter()
        row = self.row_of(item_id)
        response = self.search_vector(self.embeddings[row], k, filters, exclude_rows=(row,))
        response.total_ms = (time.perf_counter() - started) * 1e3
        return response

    def related_table(self, k: int = 10) -> pd.DataFrame:
        """For every item its k nearest others: columns id, rank, related_id, score."""
        scores, rows = search(self.index, self.embeddings, k + 1)
        records = []
        for row, (row_scores, row_neighbours) in enumerate(zip(scores, rows, strict=True)):
            kept = [(s, n) for s, n in zip(row_scores, row_neighbours, strict=True) if n >= 0 and n != row][:k]
            item_id = int(self._item_ids[row])
            records.extend((item_id, rank, int(self._item_ids[n]), round(float(s), 6))
                           for rank, (s, n) in enumerate(kept, start=1))
        return pd.DataFrame(records, columns=["id", "rank", "related_id", "score"])


def evaluate_folder(searcher: Searcher, folder: str | Path, label_column: str | None = None,
                    batch_size: int = 32, with_baseline: bool = False) -> dict:
    """The pinned model on another catalogue folder: every image a query against all the others.

    No retraining. Queries whose label has no other image in the folder cannot
    score and are left out (counted in the result). ``with_baseline`` also scores
    the pinned model's pretrained backbone features without the head.
    """
    label_column = label_column or searcher.manifest["params"]["label_column"]
    table, report = load_catalogue(folder, label_column)
    paths = table["image_path"].tolist()
    labels = table[label_column].to_numpy()
    counts = pd.Series(labels).value_counts()
    queries = np.flatnonzero(pd.Series(labels).map(counts).to_numpy() >= 2)
    embeddings = predict_paths(searcher.model, paths, searcher.spec, batch_size, description="folder embeddings")
    result = {"folder": str(folder), "images": len(table), "queries": len(queries),
              "queries_without_relevant": int(len(table) - len(queries)), "catalogue": report.summary(),
              "trained": evaluate_retrieval(embeddings, labels, queries)[0]}
    if with_baseline:
        backbone = CompiledModel(build_feature_model(searcher.model.model.get_layer("backbone")))
        features = predict_paths(backbone, paths, searcher.spec, batch_size, description="backbone features")
        result["pretrained"] = evaluate_retrieval(unit_rows(features), labels, queries)[0]
    return result


def _print_response(response: SearchResponse, as_json: bool) -> None:
    if as_json:
        print(json.dumps(response.to_dict(), indent=2))
        return
    for match in response.matches:
        print(f"{match.rank:>3}  {match.score:.4f}  {match.id:>6}  {match.metadata.get('articleType', ''):<18} "
              f"{match.metadata.get('productDisplayName', '')}")
    print(f"({response.total_ms:.1f} ms: embed {response.embed_ms:.1f}, search {response.search_ms:.1f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookalike.search", description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", help="artifacts folder (default: ./artifacts)")
    commands = parser.add_subparsers(dest="command", required=True)
    query = commands.add_parser("query", help="catalogue items most similar to an image file")
    query.add_argument("image")
    query.add_argument("--k", type=int, default=5)
    query.add_argument("--json", action="store_true")
    similar = commands.add_parser("similar", help="'more like this' for a catalogue item id")
    similar.add_argument("item_id", type=int)
    similar.add_argument("--k", type=int, default=5)
    similar.add_argument("--json", action="store_true")
    related = commands.add_parser("related", help="export id -> k related ids with scores for the whole catalogue")
    related.add_argument("--k", type=int, default=10)
    related.add_argument("--out", required=True, help="CSV file to write")
    folder = commands.add_parser("evaluate-folder", help="evaluate the pinned model on another catalogue folder")
    folder.add_argument("folder")
    folder.add_argument("--out", help="also write the metrics to this JSON file")
    folder.add_argument("--baseline", action="store_true", help="also score the pretrained backbone features")
    args = parser.parse_args(argv)
    try:
        searcher = Searcher.load(args.artifacts)
        if args.command == "query":
            _print_response(searcher.search(args.image, args.k), args.json)
        elif args.command == "similar":
            _print_response(searcher.similar_items(args.item_id, args.k), args.json)
        elif args.command == "related":
            from lookalike.artifacts import write_bytes

            table = searcher.related_table(args.k)
            write_bytes(args.out, table.to_csv(index=False).encode())
            print(f"wrote {len(table)} rows ({table['id'].nunique()} items x up to {args.k}) to {args.out}")
        else:
            result = evaluate_folder(searcher, args.folder, with_baseline=args.baseline)
            print(json.dumps(result, indent=2))
            if args.out:
                from lookalike.artifacts import write_json

                write_json(args.out, result)
    except (InvalidImageError, ArtifactMismatchError, KeyError, ValueError, FileNotFoundError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
