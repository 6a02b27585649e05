"""Several photos per item: every photo is indexed, every search answers items (each by its best photo).

The build's index holds the items' first photos as rows ``0 .. n-1`` (the item rows everything else uses:
metadata, filters, tombstones, "more like this") and every other photo after them, row ``n + j`` belonging to
item row ``owners[j]``. A search fetches enough photo rows to see ``k`` distinct items (at most ``most`` photos
per item), then keeps each item's best-scoring photo. A catalogue of one photo per item has no other photos:
its searches are the index's own, unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.artifacts import write_with
from lookalike.model.preprocessing import PreprocessSpec
from lookalike.model.runtime import predict_paths
from lookalike.search.index import search

MORE_PHOTOS_FILE = "more_photos.npz"  # the build's other photos: paths str (m,), owners int64 (m,), embeddings


@dataclass(frozen=True)
class PhotoRows:
    items: int  # n: item rows, each its first photo
    owners: np.ndarray  # int64 (m,): the item row of each other photo, photo row n + j

    @classmethod
    def single(cls, items: int) -> PhotoRows:
        """One photo per item."""
        return cls(items, np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        owners = np.asarray(self.owners, np.int64)
        if len(owners) and (owners.min() < 0 or owners.max() >= self.items):
            raise ValueError(f"another photo's item row lies outside 0..{self.items - 1}")
        object.__setattr__(self, "owners", owners)

    @property
    def photos(self) -> int:
        """Rows in the index: every photo."""
        return self.items + len(self.owners)

    @property
    def most(self) -> int:
        """The most photos any one item has."""
        return 1 + (int(np.bincount(self.owners).max()) if len(self.owners) else 0)

    def item_of(self, photo_rows: np.ndarray) -> np.ndarray:
        """int64 item row of each photo row (-1 stays -1)."""
        photo_rows = np.asarray(photo_rows, np.int64)
        extra = photo_rows >= self.items
        items = photo_rows.copy()
        items[extra] = self.owners[photo_rows[extra] - self.items]
        return items

    def photos_of(self, item_rows: np.ndarray) -> np.ndarray:
        """int64 photo rows of ``item_rows``: their first photos and every other one, sorted."""
        item_rows = np.asarray(item_rows, np.int64)
        others = self.items + np.flatnonzero(np.isin(self.owners, item_rows))
        return np.union1d(item_rows, others)

    def best_per_item(self, scores: np.ndarray, photo_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Photo rows ranked best first (q, K) -> their items, each kept at its best photo: scores float32 (q, k)
        and item rows int64 (q, k), -1 (score -inf) where fewer than k items were seen."""
        found_scores = np.full((len(photo_rows), k), -np.inf, np.float32)
        found_rows = np.full((len(photo_rows), k), -1, np.int64)
        for query, (row_scores, rows) in enumerate(zip(scores, photo_rows, strict=True)):
            valid = rows >= 0
            items = self.item_of(rows[valid])
            _, first = np.unique(items, return_index=True)  # ranked best first: the first is the best photo
            keep = np.sort(first)[:k]
            found_rows[query, :len(keep)] = items[keep]
            found_scores[query, :len(keep)] = row_scores[valid][keep]
        return found_scores, found_rows


def search_items(index, photos: PhotoRows, queries: np.ndarray, k: int, allowed_items: np.ndarray | None = None,
                 excluded_items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lookalike.search.index.search` over an index of every photo, answering item rows: top-k items
    (scores float32 (q, k), item rows int64 (q, k), -1 where fewer), each by its best photo, among
    ``allowed_items`` (None: all) and never an ``excluded_items`` one."""
    if not len(photos.owners):
        return search(index, queries, k, allowed_items, excluded_items)
    allowed = None if allowed_items is None else photos.photos_of(allowed_items)
    excluded = None if excluded_items is None or not len(excluded_items) else photos.photos_of(excluded_items)
    depth = min(int(k) * photos.most, photos.photos)  # at most ``most`` photo rows per item: k items seen
    scores, rows = search(index, queries, depth, allowed, excluded)
    return photos.best_per_item(scores, rows, min(int(k), photos.items))


def embed_more_photos(cells: list[str], model, spec: PreprocessSpec, batch_size: int, out: Path) -> int:
    """Every item's other photos (its ``more_image_paths`` cell: "" or a JSON list; item row = position) through
    ``model`` (the build's exported one) into ``out`` (:data:`MORE_PHOTOS_FILE`, empty arrays when no item has
    any); returns how many."""
    lists = [json.loads(cell) if cell else [] for cell in cells]
    paths = [path for photos in lists for path in photos]
    owners = np.array([row for row, photos in enumerate(lists) for _ in photos], np.int64)
    embeddings = (predict_paths(model, paths, spec, batch_size, description="other photos") if paths
                  else np.zeros((0, *model.output_shape), np.float32))

    def save(tmp: Path) -> None:
        with tmp.open("wb") as stream:
            np.savez(stream, paths=np.array(paths, dtype=str), owners=owners, embeddings=embeddings)

    write_with(out, save)
    return len(paths)


def load_more_photos(path: Path, items: int, dimension: int) -> tuple[np.ndarray, PhotoRows, np.ndarray]:
    """A build's other photos: their paths (m,), the :class:`PhotoRows` of the build, their embeddings (m, dim)."""
    with np.load(path, allow_pickle=False) as stored:
        paths, owners, embeddings = stored["paths"], stored["owners"], stored["embeddings"]
    if embeddings.shape != (len(paths), dimension) or owners.shape != (len(paths),):
        raise ValueError(f"{path.name}: {embeddings.shape} embeddings for {len(paths)} photos of dimension "
                         f"{dimension}")
    return paths, PhotoRows(items, owners), np.asarray(embeddings, np.float32)
