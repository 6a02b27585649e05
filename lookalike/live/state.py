"""The catalogue as searched: the pinned build's index, tombstones over it, and the live items beside it.

The build's FAISS index is never modified. A removed or replaced build item is a tombstone that a FAISS
id selector excludes from the build search (every index type; see :func:`lookalike.search.index.search`); live
items are rows of an in-memory matrix searched exactly; the two result lists are merged by score.
Every method is thread-safe (one re-entrant lock; searches copy what they need under it).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lookalike.live.records import Change, Hit, LiveError
from lookalike.search import duplicates
from lookalike.search.engine import Searcher


@dataclass
class LiveEntry:
    slots: list[int]  # rows of the live matrix: its first photo's, then its other photos'
    seq: int
    vector: np.ndarray  # its first photo's
    metadata: dict[str, str]
    content_type: str


def active_filters(filters: dict[str, list[str]] | None, columns: Sequence[str]) -> dict[str, set[str]]:
    """The non-empty filters as sets; LiveError for a column that is not one of ``columns`` (the build's filter
    columns, ``roles.filters``: what a catalogue may be filtered on is its description's to say)."""
    active = {c: set(v) for c, v in (filters or {}).items() if v}
    for column in active:
        if column not in columns:
            known = ", ".join(columns) if columns else "none: this build has no filter columns"
            raise LiveError(f"unknown filter {column!r}; filters: {known}")
    return active


class LiveState:
    """Build ids and tombstones, live entries and their matrix; applying a change and searching the result."""

    def __init__(self, searcher: Searcher, build_ids: list[str]):
        self.searcher = searcher
        self.build_ids = build_ids
        self.build_row = {item_id: row for row, item_id in enumerate(build_ids)}
        self.tombstones: set[int] = set()
        self.tombstone_rows = np.zeros(0, np.int64)
        self.live: dict[str, LiveEntry] = {}
        dimension = searcher.embeddings.shape[1]
        self._matrix = np.zeros((16, dimension), np.float32)  # rows 0..len(live)-1 in use
        self._slot_ids: list[str] = []
        self.filter_columns = searcher.roles.filters  # what searches and the browse listing may filter on
        self.lock = threading.RLock()

    # ---------------------------------------------------------------- changes

    def apply(self, change: Change) -> None:
        """Reflect one change whose embeddings are already the pinned model's."""
        with self.lock:
            old = self.live.pop(change.item_id, None)
            if old is not None:
                for slot in sorted(old.slots, reverse=True):  # highest first: a move never lands on a freed row
                    self._free(slot)
            row = self.build_row.get(change.item_id)
            if row is not None and row not in self.tombstones:
                self.tombstones.add(row)
                self.tombstone_rows = np.array(sorted(self.tombstones), dtype=np.int64)
            if change.op == "put":
                vectors = np.ascontiguousarray(change.vectors(), dtype=np.float32)
                first = len(self._slot_ids)
                while first + len(vectors) > len(self._matrix):
                    self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
                self._matrix[first:first + len(vectors)] = vectors
                self._slot_ids.extend([change.item_id] * len(vectors))
                self.live[change.item_id] = LiveEntry(list(range(first, first + len(vectors))), change.seq,
                                                      vectors[0].copy(), dict(change.metadata or {}),
                                                      change.content_type or "application/octet-stream")

    def _free(self, slot: int) -> None:
        """Move the last live row into ``slot`` (the matrix stays dense)."""
        last = len(self._slot_ids) - 1
        if slot != last:
            moved = self._slot_ids[last]
            self._matrix[slot] = self._matrix[last]
            self._slot_ids[slot] = moved
            slots = self.live[moved].slots
            slots[slots.index(last)] = slot
        self._slot_ids.pop()

    # ---------------------------------------------------------------- membership

    def __len__(self) -> int:
        with self.lock:
            return len(self.build_ids) - len(self.tombstones) + len(self.live)

    def __contains__(self, item_id: object) -> bool:
        with self.lock:
            return item_id in self.live or self.live_build_row(item_id) is not None

    def live_build_row(self, item_id: object) -> int | None:
        row = self.build_row.get(item_id)  # type: ignore[arg-type]
        return None if row is None or row in self.tombstones else row

    # ---------------------------------------------------------------- search

    def search(self, vector: np.ndarray, k: int, filters: dict[str, list[str]] | None = None,
               exclude: str | None = None) -> tuple[list[Hit], int]:
        """Top-k of build + live items passing ``filters``, never ``exclude``; and how many were candidates."""
        if k < 1:
            raise LiveError("k must be at least 1")
        active = active_filters(filters, self.filter_columns)
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        with self.lock:
            excluded = self.tombstone_rows
            row = self.build_row.get(exclude) if exclude is not None else None
            if row is not None and row not in self.tombstones:
                excluded = np.append(excluded, row)
            hits, live_candidates = self._search_live(query[0], k, active, exclude)
        allowed = self.searcher.allowed_rows({c: sorted(v) for c, v in active.items()})
        build_candidates = (len(self.build_ids) - len(excluded) if allowed is None
                            else len(allowed) - int(np.isin(excluded, allowed).sum()))
        if allowed is None or len(allowed):
            rows, scores = self.searcher.top_rows(query[0], k, allowed, excluded)
            for score, found in zip(scores.tolist(), rows.tolist(), strict=True):
                hits.append(Hit(0, self.build_ids[found], float(score), self.searcher.metadata(found), "build",
                                str(self.searcher.resolve_path(found))))
        # by score; on a tie build items first, then by id: a deterministic order
        hits.sort(key=lambda h: (-h.score, h.source != "build", h.id))
        matches = hits[:k]
        for rank, hit in enumerate(matches, start=1):
            hit.rank = rank
        return matches, build_candidates + live_candidates

    def _search_live(self, query: np.ndarray, k: int, active: dict[str, set[str]],
                     exclude: str | None) -> tuple[list[Hit], int]:
        """The live items' top k (exact) and how many live items were candidates. Under the lock."""
        count = len(self._slot_ids)
        if count == 0:
            return [], 0
        slots = np.arange(count)
        candidates = len(self.live)
        if active or exclude in self.live:
            kept = [entry.slots for item_id, entry in self.live.items()
                    if item_id != exclude and all(entry.metadata.get(c) in v for c, v in active.items())]
            candidates = len(kept)
            slots = np.array([slot for entry_slots in kept for slot in entry_slots], dtype=np.int64)
            if len(slots) == 0:
                return [], 0
        scores = self._matrix[slots] @ query
        hits, seen = [], set()
        for position in np.argsort(-scores, kind="stable"):  # an item of several photos: by its best, once
            item_id = self._slot_ids[int(slots[position])]
            if item_id in seen:
                continue
            seen.add(item_id)
            hits.append(Hit(0, item_id, float(scores[position]), dict(self.live[item_id].metadata), "live"))
            if len(hits) == k:
                break
        return hits, candidates

    def within(self, vector: np.ndarray, threshold: float, exclude: str | None = None
               ) -> list[tuple[str, float, str, int]]:
        """Every item whose cosine with ``vector`` is at least ``threshold``: (id, score, source, the photo that
        scored it: a build photo row, or a live item's photo number, 0 its first), exact over build + live, an item
        of several photos by its best (:func:`lookalike.search.duplicates.near_duplicates`, the report's scoring)."""
        with self.lock:
            excluded = set(self.tombstones)
            row = self.build_row.get(exclude) if exclude is not None else None
            if row is not None:
                excluded.add(row)
            live_count = len(self._slot_ids)
            live_matrix = self._matrix[:live_count].copy()
            slot_ids = list(self._slot_ids)
            photo_numbers = [self.live[item_id].slots.index(slot) for slot, item_id in enumerate(slot_ids)]
        found = []
        photos, owners = self.searcher.photo_embeddings  # every photo of the build's items, compared one by one
        skipped = np.flatnonzero(np.isin(owners, np.fromiter(excluded, np.int64, len(excluded))))
        rows, scores = duplicates.near_duplicates(photos, vector, threshold, exclude=skipped)
        seen: set[int] = set()
        for photo_row, score in zip(rows.tolist(), scores.tolist(), strict=True):  # best first: an item's best photo
            if (row := int(owners[photo_row])) not in seen:
                seen.add(row)
                found.append((self.build_ids[row], float(score), "build", int(photo_row)))
        if live_count:
            skip = [i for i, item_id in enumerate(slot_ids) if item_id == exclude]
            rows, scores = duplicates.near_duplicates(live_matrix, vector, threshold, exclude=skip)
            seen_live: set[str] = set()
            for r, score in zip(rows.tolist(), scores.tolist(), strict=True):  # best first: each item once
                if slot_ids[r] not in seen_live:
                    seen_live.add(slot_ids[r])
                    found.append((slot_ids[r], float(score), "live", photo_numbers[r]))
        found.sort(key=lambda f: (-f[1], f[2] != "build", f[0]))
        return found

    def vectors(self) -> tuple[np.ndarray, list[str], list[int | None]]:
        """Every item's vector (build rows still in the catalogue, then live items), its id, and its build row
        (None for a live item): what the near-duplicate report ranges over."""
        with self.lock:
            keep = np.setdiff1d(np.arange(len(self.build_ids)), self.tombstone_rows)
            live = list(self.live.items())
            matrix = np.concatenate([self.searcher.embeddings[keep],
                                     np.array([e.vector for _, e in live], np.float32).reshape(
                                         -1, self.searcher.embeddings.shape[1])])
        return matrix, [self.build_ids[int(r)] for r in keep] + [i for i, _ in live], \
            [int(r) for r in keep] + [None] * len(live)

    def browse(self, filters: dict[str, list[str]] | None = None) -> list[str]:
        """Every item passing ``filters``: live items first (latest change first), then the build's items in
        build order, without the removed or replaced ones."""
        active = active_filters(filters, self.filter_columns)
        allowed = self.searcher.allowed_rows({c: sorted(v) for c, v in active.items()})
        rows = np.arange(len(self.build_ids)) if allowed is None else allowed
        with self.lock:
            live = sorted(((entry.seq, item_id) for item_id, entry in self.live.items()
                           if all(entry.metadata.get(c) in v for c, v in active.items())), reverse=True)
            if len(self.tombstone_rows):
                rows = rows[~np.isin(rows, self.tombstone_rows)]
        return [item_id for _, item_id in live] + [self.build_ids[int(row)] for row in rows]
