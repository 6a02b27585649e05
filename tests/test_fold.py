"""Folding live changes into the next build (lookalike fold + dvc repro), on a copy of the tiny project."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ran_stages, run

from lookalike.catalogue.reading import read_table
from lookalike.live import LiveCatalogue, LiveStore, StaleDatabaseError
from lookalike.live.fold import FIRST_ALLOCATED_ID, fold
from lookalike.search.engine import Searcher

META = {"articleType": "Tshirts", "gender": "Men", "baseColour": "Blue", "masterCategory": "Apparel",
        "productDisplayName": "Live tee"}


def test_fold_then_dvc_repro_serves_every_change_once(tiny_project: Path, tmp_path: Path):
    project = tmp_path / "project"
    shutil.copytree(tiny_project, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    # a database of its own (the copied one names the shared project's mlruns/ as its artifact store)
    params["mlflow"]["tracking_uri"] = f"sqlite:///{project / 'mlflow-copy.db'}"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    db = project / "live/live.db"
    before = Searcher.load(project / "artifacts", root=project)
    ids = [str(i) for i in before.items["id"]]

    def photo(row: int) -> bytes:
        return Path(before.resolve_path(row)).read_bytes()

    catalogue = LiveCatalogue.open(before, LiveStore(db), near_duplicate_cosine=0.99)
    catalogue.put("SKU-A", photo(0), {**META, "productDisplayName": 'Folded "tee", with commas'})
    catalogue.put(ids[5], photo(6), {**META, "productDisplayName": "Replaced"})
    catalogue.remove(ids[7])
    catalogue.put("SKU-B", photo(8), META)
    catalogue.remove("SKU-B")
    catalogue.put("SKU-PNG", _png(photo(11)), {**META, "articleType": "Kurtas"})
    backup = tmp_path / "backup.db"
    with sqlite3.connect(db) as source, sqlite3.connect(backup) as target:
        source.backup(target)  # a backup taken here, at change 6 (SQLite's online backup): older than the fold
    catalogue.put("SKU-A", photo(1), {**META, "productDisplayName": "a version superseded before the fold"})
    catalogue.put("SKU-A", photo(0), {**META, "productDisplayName": 'Folded "tee", with commas'})

    output = run([sys.executable, "-m", "lookalike.cli", "fold", "--artifacts", str(project / "artifacts")], project)
    assert "changes 1..8" in output
    marker = json.loads((project / "data/live_delta/fold.json").read_text())
    assert marker["through_seq"] == 8 and marker["items"] == 3
    catalogue.put("SKU-C", photo(9), META)  # after the fold: must come from the log, once
    catalogue.store.close()

    output = run(["dvc", "repro"], project)
    assert {"sample_subset", "index"} <= ran_stages(output)
    after = Searcher.load(project / "artifacts", root=project)
    assert after.manifest["build_id"] != before.manifest["build_id"]
    assert after.manifest["params"]["live_fold"]["through_seq"] == 8
    subset = read_table(project / "data/subset.csv")
    assert sorted(subset.loc[subset["split"] == "live", "external_id"]) == ["", "SKU-A", "SKU-PNG"]

    served = LiveCatalogue.open(after, LiveStore(db), near_duplicate_cosine=0.99)
    assert served.folded_seq == 8 and served.applied_seq == 9
    assert served.live_ids() == ["SKU-C"]  # the folded changes are in the build, not replayed
    for item_id, name in (("SKU-A", 'Folded "tee", with commas'), (ids[5], "Replaced"), ("SKU-PNG", "Live tee")):
        item = served.item(item_id)
        assert item.source == "build" and item.metadata["productDisplayName"] == name
    assert ids[7] not in served and "SKU-B" not in served and "SKU-C" in served
    assert len(served) == 60 - 1 + 2 + 1
    everything = served.search_vector(after.embeddings[0], 100).matches
    assert len(everything) == len(served) and len({h.id for h in everything}) == len(everything)
    # the folded item's build vector is the pinned model's embedding of its photo
    assert np.abs(served.vector("SKU-A") - after.embed_image(photo(0))).max() < 2e-3
    assert np.abs(served.vector(ids[5]) - after.embed_image(photo(6))).max() < 2e-3
    assert served.stats()["live"]["changes_since_build"] == 1
    # retrained (a new model): SKU-C, made with the old one, was embedded again with the new one; else not
    assert served.reembedded == int(served.model_key != catalogue.model_key)
    assert np.abs(served.vector("SKU-C") - after.embed_image(photo(9))).max() < 2e-3

    # the fold is in the published build: compaction drops what it superseded (SKU-A's two earlier versions,
    # SKU-B's put before its removal) and the catalogue served is unchanged
    before = [(h.id, round(h.score, 5)) for h in served.search_vector(after.embeddings[3], 100).matches]
    served.store.close()
    output = run([sys.executable, "-m", "lookalike.cli", "compact", "--artifacts", str(project / "artifacts")],
                 project)
    assert "compacted through change 8: 3 superseded changes dropped, 6 kept" in output
    kept = [row[0] for row in sqlite3.connect(db).execute("SELECT seq FROM changes ORDER BY seq")]
    assert kept == [2, 3, 5, 6, 8, 9]
    again = LiveCatalogue.open(after, LiveStore(db), near_duplicate_cosine=0.99)
    assert [(h.id, round(h.score, 5)) for h in again.search_vector(after.embeddings[3], 100).matches] == before
    # the backup from before the fold would lose changes 7..9: refused, by the library and the command line
    with pytest.raises(StaleDatabaseError, match="ends at change 6.*holds changes up to 8"):
        LiveCatalogue.open(after, LiveStore(backup))
    result = subprocess.run([sys.executable, "-m", "lookalike.cli", "compact", "--artifacts",
                             str(project / "artifacts"), "--live-db", str(backup)],
                            cwd=project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "backup from before that fold" in result.stderr


def _png(jpeg: bytes) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_decimal_shop_id_never_collides_with_an_allocated_one(tiny_project: Path, tmp_path: Path):
    """A shop id that looks like a number in the allocated range, arriving after an allocation, gets its own."""
    store = LiveStore(tmp_path / "live.db")
    vector = np.ones(4, np.float32)
    image = _png((tiny_project / "artifacts").parent.joinpath(
        str(np.load(tiny_project / "artifacts/image_paths.npy")[0])).read_bytes())
    store.append("put", "SKU-A", "b", "m", vector, META, image, "image/png")
    fold(store, tiny_project / "artifacts", tmp_path / "delta")
    allocated = read_table(tmp_path / "delta/items.csv")
    assert allocated["id"].tolist() == [FIRST_ALLOCATED_ID]
    store.append("put", str(FIRST_ALLOCATED_ID), "b", "m", vector, META, image, "image/png")
    fold(store, tiny_project / "artifacts", tmp_path / "delta")
    table = read_table(tmp_path / "delta/items.csv")
    assert table["id"].is_unique and len(table) == 2
    assert sorted(table["external_id"].astype(str)) == sorted(["SKU-A", str(FIRST_ALLOCATED_ID)])
