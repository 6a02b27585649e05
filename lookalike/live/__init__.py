"""The live catalogue: a published build plus the shop's acknowledged changes, searchable at once.

    catalogue = LiveCatalogue.load()                    # published build + every change in live/live.db
    catalogue.put("SKU-1", image_bytes, {"class": "Granny-Smith", ...})    # durable, then searchable
    catalogue.remove("15970")                           # never in any result again
    catalogue.search(image_bytes, k=5, filters={"coarse_class": ["Apple"]})
    catalogue.similar("SKU-1", k=5)
    catalogue.browse_ids({"coarse_class": ["Apple"]})   # every item, live ones first (the page's grid)

Column names are the build's own: an item carries its catalogue's metadata columns, a search filters on its filter
columns, a write must give its main label (``catalogue.roles``, read from the build's manifest; the examples above
are a grocery catalogue's).

One module per concern:

- :mod:`lookalike.live.records`: ids, metadata, changes, items, hits, and the errors a caller can fix;
- :mod:`lookalike.live.store`: the journal in SQLite (durability, folds, compaction, stale backups);
- :mod:`lookalike.live.pg_store`: the same journal in PostgreSQL, shared by replicas on several machines;
- :mod:`lookalike.live.journal`: the one place that picks the backend from a location (a file or a URL);
- :mod:`lookalike.live.state`: the build's index with tombstones and the live items beside it, searched and merged;
- :mod:`lookalike.live.catalogue`: replay and re-embedding, reads, writes, near-duplicates, stats;
- :mod:`lookalike.live.holder`: the catalogue a server process serves, following the journal and swapping builds.

Ids: a shop's ids are its own strings (``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``); a build item's id is its
decimal id, or the ``external_id`` a fold gave it.
"""

from lookalike.live.catalogue import LiveCatalogue
from lookalike.live.holder import CatalogueHolder
from lookalike.live.records import (
    DB_ENV,
    DEFAULT_DB,
    Change,
    Hit,
    Item,
    JournalBusyError,
    LiveError,
    LiveResponse,
    PutResult,
    StaleDatabaseError,
    UnknownItemError,
    manifest_build_id,
    model_key,
    resolve_db_path,
    validate_item_id,
    validate_metadata,
    value_kinds,
)
from lookalike.live.store import Compaction, LiveStore

__all__ = ["DB_ENV", "DEFAULT_DB", "CatalogueHolder", "Change", "Compaction", "Hit", "Item", "JournalBusyError",
           "LiveCatalogue",
           "LiveError", "LiveResponse", "LiveStore", "PutResult", "StaleDatabaseError", "UnknownItemError",
           "manifest_build_id", "model_key", "resolve_db_path", "validate_item_id", "validate_metadata",
           "value_kinds"]
