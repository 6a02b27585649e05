"""Folding the live catalogue into the next build: ``lookalike fold``, then ``dvc repro``.

``lookalike fold`` writes the net effect of every live change (``live/live.db``) on the catalogue
as a delta folder, ``data/live_delta/``, that the ``sample_subset`` stage reads:

- ``items.csv`` (id, external_id, image, image_2... for items of several photos, the build's metadata columns)
  and ``images/<numeric id>.<ext>`` (``<numeric id>-2.<ext>``, ...): every item whose last change is a put (added
  or replaced). A shop's id that is not a decimal number gets a numeric id,
  allocated once in the database and never reused, and keeps its own id in the ``external_id``
  column (the service and the page show that one);
- ``removed.csv``: the catalogue ids to drop (removed, or replaced by a row of ``items.csv``);
- ``fold.json``: which database (``store_id``) and which changes (``through_seq``) it holds.

Once ``dvc repro`` published the build that holds a fold (and the service swapped it in), ``lookalike
compact`` (:func:`compact`) drops the changes that fold superseded and reclaims their space.

The delta is cumulative (all changes from the first), because every build starts again from the
original catalogue folder. ``sample_subset`` drops the removed ids, samples the subset as before,
then adds every delta item (split ``live``: in the gallery, never trained on or used as a query,
never left out by sampling or the rare-label rule). Without ``fold.json`` the stage does exactly
what it did before. The index stage copies the marker into the manifest (``params.live_fold``);
the service, starting from that build, skips the changes it holds and replays only later ones, so
no change is lost or applied twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from lookalike.artifacts import fsync_path, resolve_build
from lookalike.catalogue.description import CatalogueRoles
from lookalike.catalogue.reading import (
    DELTA_PHOTO_COLUMN,
    DELTA_TABLE,
    EXTERNAL_ID_COLUMN,
    FOLD_FILE,
    REMOVED_FILE,
    more_photo_column,
    read_table,
)
from lookalike.live import Compaction, LiveError, LiveStore

FIRST_ALLOCATED_ID = 10**15  # numeric ids for shop ids that are not decimal numbers start here
# A shop id used as the catalogue's numeric id as it is: decimal and below the allocated range, so it can never
# collide with an id allocated earlier (a longer decimal id is allocated a number like any other string).
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,14}")
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


@dataclass
class FoldSummary:
    fold_id: str
    through_seq: int
    items: int
    removed: int
    folder: str

    def line(self) -> str:
        return (f"fold {self.fold_id}: changes 1..{self.through_seq} -> {self.items} items to add or replace, "
                f"{self.removed} catalogue ids to drop, in {self.folder}; now run dvc repro")


def fold(store: LiveStore, artifacts_dir: str | Path, out: str | Path) -> FoldSummary:
    """Write the delta folder for every change in ``store`` (replacing any earlier one) and record the fold."""
    folder, manifest = resolve_build(artifacts_dir)
    through = store.last_seq()
    final: dict[str, int | None] = {}  # item id -> seq of its last put, or None when its last change removed it
    for change in store.changes_after(0):
        if change.seq > through:
            break
        final[change.item_id] = change.seq if change.op == "put" else None
    puts = {item_id: seq for item_id, seq in final.items() if seq is not None}
    taken = {int(i) for i in final if _DECIMAL.fullmatch(i)}
    items = read_table(folder / manifest["files"]["items"]["path"])
    taken |= {int(i) for i in items["id"]}
    allocated = store.numeric_ids(sorted(i for i in puts if not _DECIMAL.fullmatch(i)), taken, FIRST_ALLOCATED_ID)
    numeric = {i: (int(i) if _DECIMAL.fullmatch(i) else allocated[i]) for i in puts}
    removed = sorted(int(i) for i in final if _DECIMAL.fullmatch(i))  # dropped; the puts among them come back
    out = Path(out)
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    rows = []
    columns = [c for c in CatalogueRoles.from_manifest(manifest).metadata if c not in ("id", EXTERNAL_ID_COLUMN)]
    changes = {c.seq: c for c in store.changes_after(0) if c.seq in set(puts.values())}
    most = 1
    for item_id in sorted(puts, key=lambda i: numeric[i]):
        change = changes[puts[item_id]]
        photos = []  # its photo, then its other photos (several per item): images/<id>.jpg, <id>-2.jpg, ...
        for number, (image, content_type) in enumerate([store.image(change.seq), *store.more_images(change.seq)],
                                                       start=1):
            suffix = "" if number == 1 else f"-{number}"
            photo = f"{numeric[item_id]}{suffix}{_EXTENSIONS.get(content_type, '.png')}"
            (staging / "images" / photo).write_bytes(image if content_type in _EXTENSIONS else _as_png(image))
            photos.append(photo)
        most = max(most, len(photos))
        metadata = change.metadata or {}
        rows.append([str(numeric[item_id]), "" if _DECIMAL.fullmatch(item_id) else item_id, photos,
                     *(metadata.get(c, "") for c in columns)])
    more_columns = [more_photo_column(n) for n in range(2, most + 1)]
    rows = [[item, external, photos[0], *(photos[1:] + [""] * most)[:most - 1], *rest]
            for item, external, photos, *rest in rows]
    _write_csv(staging / DELTA_TABLE, ["id", EXTERNAL_ID_COLUMN, DELTA_PHOTO_COLUMN, *more_columns, *columns], rows)
    _write_csv(staging / REMOVED_FILE, ["id"], [[str(i)] for i in removed])
    fold_id = f"{store.store_id}-{through}"
    marker = {"fold_id": fold_id, "store_id": store.store_id, "through_seq": through,
              "base_build_id": manifest.get("build_id"), "items": len(rows), "removed": len(removed)}
    (staging / FOLD_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    for path in staging.rglob("*"):
        fsync_path(path)
    readme = out / "README.md"
    if readme.is_file():
        shutil.copy(readme, staging / "README.md")
    previous = out.with_name(f".{out.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if out.exists():
        os.replace(out, previous)
    os.replace(staging, out)
    fsync_path(out.parent)
    shutil.rmtree(previous, ignore_errors=True)
    store.record_fold(fold_id, through)
    return FoldSummary(fold_id, through, len(rows), len(removed), str(out))


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def _as_png(image: bytes) -> bytes:
    """Formats the catalogue reader does not list (GIF, BMP, ...) are stored as PNG (first frame)."""
    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(io.BytesIO(image)) as opened:
        opened.save(buffer, "PNG")
    return buffer.getvalue()


def compact(store: LiveStore, artifacts_dir: str | Path) -> Compaction:
    """Compact ``store`` through the fold the published build holds; refuse when it holds none of this database."""
    _, manifest = resolve_build(artifacts_dir)
    marker = manifest["params"].get("live_fold") or {}
    if marker.get("store_id") != store.store_id:
        raise LiveError(f"the published build {manifest['build_id']} holds no fold of this live database: run "
                        "lookalike fold, then dvc repro, and compact once that build is published")
    store.check_holds(int(marker["through_seq"]), manifest["build_id"])
    return store.compact(int(marker["through_seq"]))
