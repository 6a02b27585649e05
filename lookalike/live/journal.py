"""Where the live catalogue's journal is: the one place that picks its backend from a location.

A ``postgresql://`` (or ``postgres://``) URL, given as ``--live-db`` or in ``$LOOKALIKE_LIVE_DB``, opens
the journal in PostgreSQL (:class:`lookalike.live.pg_store.PostgresStore`: one journal for replicas on
several machines); anything else is a SQLite file (:class:`lookalike.live.store.LiveStore`, the default,
``live/live.db`` under the project root). Both have the same methods and answers, so every caller
(the live catalogue, ``lookalike fold``, ``lookalike compact``) works on either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.live.records import DB_ENV, resolve_db_path
from lookalike.live.store import LiveStore
from lookalike.params import PROJECT_ROOT

if TYPE_CHECKING:
    from lookalike.live.pg_store import PostgresStore

URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(location: object) -> bool:
    """Whether ``location`` names a PostgreSQL database (a ``postgresql://`` URL) rather than a SQLite file."""
    return isinstance(location, str) and location.strip().lower().startswith(URL_SCHEMES)


def open_journal(location: str | Path | None, root: str | Path = PROJECT_ROOT,
                 readonly: bool = False) -> LiveStore | PostgresStore:
    """The journal at ``location``, else at $LOOKALIKE_LIVE_DB, else at live/live.db under ``root``: in
    PostgreSQL for a database URL, in SQLite otherwise (a relative file path is taken from ``root``).

    ``readonly`` never creates anything, and raises :class:`FileNotFoundError` where there is no journal yet."""
    location = location or os.environ.get(DB_ENV)
    if is_database_url(location):
        from lookalike.live.pg_store import PostgresStore  # psycopg is needed only by a PostgreSQL journal

        return PostgresStore(str(location), readonly=readonly)
    return LiveStore(resolve_db_path(location, Path(root)), readonly=readonly)
