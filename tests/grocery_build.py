"""A build of another kind of catalogue for the tests, made from the tiny fashion build without a pipeline run.

Its items table names its columns as a grocery shop would (``class``, ``coarse_class``, ``name``, ``pack_grams``)
and no fashion column at all, and its manifest's catalogue roles say so: whatever serves it (the service, the
live catalogue, the page, the command line) has to read the roles to show, filter and write anything. The model,
embeddings, index and photos are the fashion build's, so searches still find things.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lookalike.artifacts import build_id, resolve_build, sha256_file
from lookalike.catalogue.description import CatalogueRoles
from lookalike.catalogue.reading import read_table, write_table

RENAMED = {"articleType": "class", "masterCategory": "coarse_class", "productDisplayName": "name"}
ROLES = CatalogueRoles(labels=("class",), attributes=("coarse_class", "pack_grams"), filters=("coarse_class", "class"),
                       words=("name", "class", "coarse_class"), title="name", card=("coarse_class", "class"),
                       metadata=("name", "class", "coarse_class", "pack_grams"))
FASHION = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year", "usage",
           "productDisplayName")


def grocery_build(artifacts: Path, out: Path, names: dict[str, str] | None = None) -> Path:
    """The published build of ``artifacts`` copied to ``out`` (a new artifacts folder, no pointer) with grocery
    columns: its items' type, category and name renamed, a whole-number ``pack_grams`` added, every other fashion
    column dropped; the manifest's roles name the new columns. ``names``: the grocery columns renamed once more
    (``{"coarse_class": "k"}``: a column named like a route parameter). Returns ``out``."""
    names = names or {}
    folder, manifest = resolve_build(artifacts)
    out.mkdir(parents=True)
    for entry in manifest["files"].values():
        shutil.copy(folder / entry["path"], out / entry["path"])
    items = read_table(out / manifest["files"]["items"]["path"]).rename(columns=RENAMED)
    items["pack_grams"] = [str(100 + int(i) % 900) for i in items["id"]]
    items = items[[c for c in items.columns if c not in FASHION]].rename(columns=names)
    (out / manifest["files"]["items"]["path"]).write_bytes(write_table(items))
    manifest = json.loads(json.dumps(manifest))
    manifest["files"]["items"]["sha256"] = sha256_file(out / manifest["files"]["items"]["path"])
    manifest["params"]["label_column"] = names.get("class", "class")
    manifest["params"]["catalogue"] = _renamed(ROLES.to_manifest(), names)
    manifest["build_id"] = build_id(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def _renamed(value, names: dict[str, str]):
    """The manifest's roles with every column name in ``names`` renamed."""
    if isinstance(value, dict):
        return {k: _renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value
