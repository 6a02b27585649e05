"""What the SQLite and PostgreSQL journals share above their connections: the fold bookkeeping, the refusal of a
database older than a fold, the numeric ids of folded items and which changes compaction drops.

:class:`lookalike.live.store.LiveStore` and :class:`lookalike.live.pg_store.PostgresStore` each give ``_read``
(``work(cursor)`` outside a write transaction), ``_write`` (``work(cursor)`` in one committed transaction, on disk on
return; ``serialise``: behind every other writer, so changes commit in seq order), ``_lock_meta`` (in a write
transaction, before a read-then-write of the meta table) and ``PARAM``, their SQL's placeholder; the statements
here are in the SQL both speak.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from lookalike.live.records import Change, StaleDatabaseError, UnknownItemError, now, parse_build_switch

Result = TypeVar("Result")


class SqlJournal:
    """The journal's rules written once, over a backend's ``_read``, ``_write`` and ``PARAM``."""

    PARAM = "?"
    path: Any
    readonly: bool

    def _read(self, work: Callable[[Any], Result]) -> Result:
        raise NotImplementedError

    def _write(self, work: Callable[[Any], Result], serialise: bool = True) -> Result:
        raise NotImplementedError

    def _lock_meta(self, cursor) -> None:
        raise NotImplementedError

    def last_seq(self) -> int:
        raise NotImplementedError

    # ---------------------------------------------------------------- the change log

    def append(self, op: str, item_id: str, build_id: str, key: str, embedding: np.ndarray | None = None,
               metadata: dict | None = None, image: bytes | None = None,
               content_type: str | None = None, more: Sequence[tuple[np.ndarray, bytes, str]] = (),
               in_build: bool = False) -> Change:
        """Append one change in its own transaction; on return it is committed to disk. ``more``: a put's
        other photos (embedding, image, content type), in the same transaction.

        The change's ``existed`` (whether the item was in the catalogue just before it: its latest change is a
        put, or it has none and ``in_build``) is read in that transaction, under the write lock every writer
        takes, so two writers (processes, replicas) never both create an item; a remove of an item that does not
        exist raises :class:`UnknownItemError` and writes nothing."""
        p = self.PARAM
        blob = None if embedding is None else np.ascontiguousarray(embedding, dtype="<f4").tobytes()
        text = None if metadata is None else json.dumps(metadata, sort_keys=True)
        photos = [(position, np.ascontiguousarray(vector, dtype="<f4").tobytes(), bytes(data), kind)
                  for position, (vector, data, kind) in enumerate(more, start=1)]
        created = now()

        def write(cursor) -> tuple[int, bool]:
            latest = cursor.execute(f"SELECT op FROM changes WHERE item_id = {p} ORDER BY seq DESC LIMIT 1",
                                    (item_id,)).fetchone()
            existed = in_build if latest is None else latest[0] == "put"
            if op == "remove" and not existed:
                raise UnknownItemError(f"no item with id {item_id!r}")
            seq = int(cursor.execute(
                "INSERT INTO changes (op, item_id, build_id, model_key, embedding, metadata, image, content_type,"
                f" created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) RETURNING seq",
                (op, item_id, build_id, key, blob, text, None if image is None else bytes(image), content_type,
                 created)).fetchone()[0])
            if photos:
                cursor.executemany("INSERT INTO change_photos (seq, position, embedding, image, content_type)"
                                   f" VALUES ({p}, {p}, {p}, {p}, {p})", [(seq, *photo) for photo in photos])
            return seq, existed

        seq, existed = self._write(write)
        more_embeddings = np.array([v for v, _, _ in more], np.float32) if more else None
        return Change(seq, op, item_id, build_id, key,
                      None if embedding is None else np.asarray(embedding, np.float32), metadata, content_type,
                      created, more_embeddings, existed)

    def save_reembedding(self, seq: int, key: str, embedding: np.ndarray) -> None:
        """Cache the change's photos embedded by another model (:meth:`reembedding` reads it back); a reader
        beside the writing server skips it."""
        if self.readonly:
            return
        p = self.PARAM
        blob = np.ascontiguousarray(embedding, dtype="<f4").tobytes()

        def write(cursor) -> None:
            if cursor.execute(f"SELECT 1 FROM changes WHERE seq = {p}", (int(seq),)).fetchone() is None:
                return  # compacted away meanwhile: nothing to cache it for
            cursor.execute(f"INSERT INTO reembeddings (seq, model_key, embedding) VALUES ({p}, {p}, {p})"
                           " ON CONFLICT (seq, model_key) DO UPDATE SET embedding = excluded.embedding",
                           (int(seq), key, blob))

        self._write(write)

    # ---------------------------------------------------------------- reloads and the build switch, every process

    def request_reload(self) -> int:
        """Ask every process following this journal to look for a new build now (the admin reload reaches every
        worker and replica, not just the one that took the request); returns the request's number."""
        return int(self._write(lambda cursor: cursor.execute(
            "INSERT INTO meta (key, value) VALUES ('reload_requests', '1') ON CONFLICT (key) DO UPDATE"
            " SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT) RETURNING value").fetchone()[0],
            serialise=False))

    def announce_build(self, version: str, switch_at: float) -> float:
        """Agree when every process following this journal switches to build ``version``: the first process to
        announce it sets the instant (``switch_at``, seconds since the epoch), a later one is answered that same
        instant, and another version replaces the announcement. Returns the agreed instant."""
        p = self.PARAM

        def write(cursor) -> float:
            self._lock_meta(cursor)
            row = cursor.execute("SELECT value FROM meta WHERE key = 'build_switch'").fetchone()
            agreed = parse_build_switch(row[0] if row else None)
            if agreed is not None and agreed[0] == version:
                return agreed[1]
            cursor.execute(f"INSERT INTO meta (key, value) VALUES ('build_switch', {p}) ON CONFLICT (key) DO UPDATE"
                           " SET value = excluded.value", (json.dumps({"version": version, "at": switch_at}),))
            return switch_at

        return self._write(write, serialise=False)

    def signals(self) -> tuple[tuple[str, float] | None, int]:
        """(:meth:`build_switch`, :meth:`reload_requests`) in one read: what every follower asks each round."""
        rows = dict(self._read(lambda cursor: cursor.execute(
            "SELECT key, value FROM meta WHERE key IN ('build_switch', 'reload_requests')").fetchall()))
        requests = rows.get("reload_requests")
        return parse_build_switch(rows.get("build_switch")), int(requests) if requests else 0

    def build_switch(self) -> tuple[str, float] | None:
        """The last announced build switch: (build version, instant), None before any."""
        return self.signals()[0]

    def reload_requests(self) -> int:
        """How many reloads were requested through this journal so far (a follower compares it with the last)."""
        return self.signals()[1]

    # ---------------------------------------------------------------- folds and compaction

    def record_fold(self, fold_id: str, through_seq: int) -> None:
        """Remember a fold written from this database (shown in the service's stats until a build holds it)."""
        p = self.PARAM
        self._write(lambda cursor: cursor.execute(
            f"INSERT INTO folds (fold_id, through_seq, created_at) VALUES ({p}, {p}, {p}) ON CONFLICT DO NOTHING",
            (fold_id, int(through_seq), now())))

    def latest_fold(self) -> dict | None:
        """The newest fold written from this database: fold_id, through_seq, created_at; None before any."""
        row = self._read(lambda cursor: cursor.execute(
            "SELECT fold_id, through_seq, created_at FROM folds ORDER BY through_seq DESC, created_at DESC"
            " LIMIT 1").fetchone())
        return None if row is None else {"fold_id": row[0], "through_seq": int(row[1]), "created_at": row[2]}

    def check_holds(self, through_seq: int, build_id: str) -> None:
        """Refuse a database that ends before a fold the build holds: it is a backup from before that fold,
        and replaying it would silently drop every change made after the backup."""
        last = self.last_seq()
        if last < through_seq:
            raise StaleDatabaseError(
                f"the live database {self.path.name} ends at change {last}, but build {build_id} already holds "
                f"changes up to {through_seq} (a fold of this database): it is a backup from before that fold, and "
                f"serving it would lose changes {last + 1}..{through_seq} and everything after. Restore the newest "
                f"backup (taken after the fold), or serve the build the backup was taken under")

    def _drop_superseded(self, cursor, through_seq: int) -> int:
        """Compaction's rows, in the caller's write transaction: every change up to ``through_seq`` that a later
        change of its item superseded, with its photos and cached re-embeddings; remembers ``through_seq``. How
        many changes it dropped."""
        p = self.PARAM
        superseded = (f"SELECT c.seq FROM changes c WHERE c.seq <= {p} AND EXISTS "
                      "(SELECT 1 FROM changes later WHERE later.item_id = c.item_id AND later.seq > c.seq)")
        through = (int(through_seq),)
        cursor.execute(f"DELETE FROM reembeddings WHERE seq IN ({superseded})", through)
        cursor.execute(f"DELETE FROM change_photos WHERE seq IN ({superseded})", through)
        dropped = cursor.execute(f"DELETE FROM changes WHERE seq IN ({superseded})", through).rowcount
        cursor.execute(f"INSERT INTO meta (key, value) VALUES ('compacted_through', {p})"
                       " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(int(through_seq)),))
        return int(dropped)

    def _kept(self) -> int:
        return int(self._read(lambda cursor: cursor.execute("SELECT COUNT(*) FROM changes").fetchone()[0]))

    # ---------------------------------------------------------------- numeric ids for folds

    def numeric_ids(self, item_ids: list[str], taken: set[int], start: int) -> dict[str, int]:
        """A stable numeric id per item id (for the Kaggle-layout catalogue), allocated once, never reused."""
        p = self.PARAM

        def write(cursor) -> dict[str, int]:
            known = {item_id: int(number) for item_id, number in
                     cursor.execute("SELECT item_id, numeric_id FROM numeric_ids").fetchall()}
            used = set(known.values()) | taken
            following = max([start - 1, *used]) + 1 if used else start
            for item_id in item_ids:
                if item_id not in known:
                    while following in used:
                        following += 1
                    known[item_id] = following
                    used.add(following)
                    cursor.execute(f"INSERT INTO numeric_ids (item_id, numeric_id) VALUES ({p}, {p})",
                                   (item_id, following))
            return known

        known = self._write(write)
        return {item_id: int(known[item_id]) for item_id in item_ids}
