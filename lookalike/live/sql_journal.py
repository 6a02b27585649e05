"""What the SQLite and PostgreSQL journals share above their connections: the fold bookkeeping, the refusal of a
database older than a fold, the numeric ids of folded items and which changes compaction drops.

:class:`lookalike.live.store.LiveStore` and :class:`lookalike.live.pg_store.PostgresStore` each give ``_read``
(``work(cursor)`` outside a write transaction), ``_write`` (``work(cursor)`` in one committed transaction, one
writer at a time) and ``PARAM``, their SQL's placeholder; the statements here are in the SQL both speak.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from lookalike.live.records import StaleDatabaseError, now, parse_build_switch

Result = TypeVar("Result")


class SqlJournal:
    """The journal's rules written once, over a backend's ``_read``, ``_write`` and ``PARAM``."""

    PARAM = "?"
    path: Any

    def _read(self, work: Callable[[Any], Result]) -> Result:
        raise NotImplementedError

    def _write(self, work: Callable[[Any], Result]) -> Result:
        raise NotImplementedError

    def last_seq(self) -> int:
        raise NotImplementedError

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
