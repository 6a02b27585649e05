"""The live catalogue (lookalike/live/): durable changes over the pinned build, on every index type.

Runs against the scratch pipeline project of conftest.py (60 images); every test has its own database.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from grocery_build import grocery_build
from PIL import Image

from lookalike.live import (
    LiveCatalogue,
    LiveError,
    LiveStore,
    StaleDatabaseError,
    UnknownItemError,
    validate_metadata,
    value_kinds,
)
from lookalike.search.duplicates import GROUP_COLUMNS
from lookalike.search.engine import Searcher
from lookalike.search.index import INDEX_TYPES, build_index, search

INDEX_PARAMS = {
    "flat": {"type": "flat"},
    "ivf_flat": {"type": "ivf_flat", "nlist": 4, "nprobe": 1},
    "ivf_pq": {"type": "ivf_pq", "nlist": 4, "nprobe": 1, "pq_m": 16, "pq_bits": 4},
    "hnsw": {"type": "hnsw", "hnsw_m": 8, "ef_construction": 40, "ef_search": 8},
}
META = {"articleType": "Tshirts", "gender": "Men", "baseColour": "Blue", "masterCategory": "Apparel",
        "productDisplayName": "Live tee"}


@pytest.fixture(scope="module")
def searcher(tiny_project: Path) -> Searcher:
    return Searcher.load(tiny_project / "artifacts", root=tiny_project)


def open_catalogue(searcher: Searcher, db: Path, readonly: bool = False) -> LiveCatalogue:
    return LiveCatalogue.open(searcher, LiveStore(db, readonly=readonly), near_duplicate_cosine=0.99)


def photo(searcher: Searcher, row: int) -> bytes:
    return Path(searcher.resolve_path(row)).read_bytes()


def all_result_ids(catalogue: LiveCatalogue, probe: np.ndarray, item_ids: list[str]) -> set[str]:
    """Every id any kind of query returns: plain, filtered, 'more like this' from several items, k = everything."""
    k = len(catalogue) + 5
    found = {h.id for h in catalogue.search_vector(probe, k).matches}
    for gender in ("Men", "Women", "Unisex"):
        found |= {h.id for h in catalogue.search_vector(probe, k, {"gender": [gender]}).matches}
    found |= {h.id for h in catalogue.search_vector(probe, 3, {"articleType": ["Tshirts"]}).matches}
    for item_id in item_ids:
        found |= {h.id for h in catalogue.similar(item_id, k).matches}
        found |= {h.id for h in catalogue.similar(item_id, 2).matches}
    return found


def test_index_search_excluded_rows_every_type():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    excluded = np.arange(0, 400, 3)
    for kind in INDEX_TYPES:
        params = {**INDEX_PARAMS[kind], "pq_m": 8}
        index = build_index(vectors, params)
        _, rows = search(index, vectors[:20], 10, excluded_rows=excluded)
        assert not np.isin(rows, excluded).any(), kind
        assert (rows >= 0).all(), f"{kind}: fewer than k results"
        _, rows = search(index, vectors[:20], 10, allowed_rows=np.arange(0, 60), excluded_rows=excluded)
        assert not np.isin(rows, excluded).any() and (rows[rows >= 0] < 60).all(), kind
        _, rows = search(index, vectors[:2], 400, excluded_rows=excluded)  # everything that is left
        assert sorted(rows[0][rows[0] >= 0]) == sorted(set(range(400)) - set(excluded)), kind


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_removed_and_replaced_items_never_returned(searcher: Searcher, tmp_path: Path, kind: str):
    index = build_index(searcher.embeddings, INDEX_PARAMS[kind])
    manifest = {**searcher.manifest, "params": {**searcher.manifest["params"], "index": INDEX_PARAMS[kind]}}
    catalogue = open_catalogue(dataclasses.replace(searcher, index=index, manifest=manifest), tmp_path / "live.db")
    ids = [str(i) for i in searcher.items["id"]]
    removed = ids[0:60:4]
    for item_id in removed:
        catalogue.remove(item_id)
    replaced = ids[1]
    catalogue.put(replaced, photo(searcher, 2), {**META, "gender": "Women"})
    catalogue.put("SKU-A", photo(searcher, 3), META)
    catalogue.put("SKU-B", photo(searcher, 4), META)
    catalogue.remove("SKU-B")
    gone = set(removed) | {"SKU-B"}
    probe = searcher.embeddings[0]
    found = all_result_ids(catalogue, probe, [ids[5], "SKU-A", replaced])
    assert not found & gone
    assert "SKU-A" in found and replaced in found
    assert len(catalogue) == 60 - len(removed) + 1
    everything = catalogue.search_vector(probe, 200).matches
    assert len(everything) == len(catalogue) and len({h.id for h in everything}) == len(everything)
    # the replaced id is one item, with its new metadata, scored by its new photo
    hits = [h for h in everything if h.id == replaced]
    assert len(hits) == 1 and hits[0].source == "live" and hits[0].metadata["gender"] == "Women"
    assert np.allclose(catalogue.vector(replaced), searcher.embeddings[2], atol=2e-3)
    for item_id in gone:
        with pytest.raises(UnknownItemError):
            catalogue.item(item_id)
        with pytest.raises(UnknownItemError):
            catalogue.similar(item_id)


def test_filters_apply_to_live_items(searcher: Searcher, tmp_path: Path):
    catalogue = open_catalogue(searcher, tmp_path / "live.db")
    catalogue.put("SKU-W", photo(searcher, 0), {**META, "gender": "Women", "baseColour": "Teal"})
    probe = catalogue.vector("SKU-W")
    teal = catalogue.search_vector(probe, 5, {"baseColour": ["Teal"]}).matches
    assert [h.id for h in teal] == ["SKU-W"]
    assert "SKU-W" not in {h.id for h in catalogue.search_vector(probe, 60, {"gender": ["Men"]}).matches}
    first = catalogue.search_vector(probe, 1).matches[0]
    assert first.id in ("SKU-W", str(searcher.items["id"][0])) and first.score > 0.99
    with pytest.raises(LiveError):
        catalogue.search_vector(probe, 5, {"season": ["Summer"]})


def test_live_item_scores_as_its_build_twin(searcher: Searcher, tmp_path: Path):
    """A catalogue photo added under a new id gets the build's vector for it (the build's comes from cached
    backbone features, the live one from the image: the same model and preprocessing)."""
    catalogue = open_catalogue(searcher, tmp_path / "live.db")
    for row in (0, 17, 42):
        result = catalogue.put(f"TWIN-{row}", photo(searcher, row), META)
        live, built = catalogue.vector(f"TWIN-{row}"), searcher.embeddings[row]
        assert float(live @ built) > 0.9999 and np.abs(live - built).max() < 2e-3
        twin = str(searcher.items["id"][row])
        assert twin in [h.id for h in result.near_duplicates]  # the same photo: a near-duplicate
        probe = searcher.embeddings[(row + 1) % 60]
        scores = {h.id: h.score for h in catalogue.search_vector(probe, 100).matches}
        assert abs(scores[f"TWIN-{row}"] - scores[twin]) < 2e-3


def test_restart_replays_every_change_in_order(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    first = open_catalogue(searcher, db)
    first.put("SKU-1", photo(searcher, 5), META)
    first.put("SKU-1", photo(searcher, 6), {**META, "productDisplayName": "second"})
    first.remove(str(searcher.items["id"][7]))
    first.put("SKU-2", photo(searcher, 8), META)
    first.remove("SKU-2")
    probe = searcher.embeddings[9]
    before = [(h.id, round(h.score, 5)) for h in first.search_vector(probe, 70).matches]
    first.store.close()
    second = open_catalogue(searcher, db)
    assert [(h.id, round(h.score, 5)) for h in second.search_vector(probe, 70).matches] == before
    assert second.item("SKU-1").metadata["productDisplayName"] == "second"
    assert second.applied_seq == 5 and second.live_ids() == ["SKU-1"]
    assert second.image("SKU-1")[0] == photo(searcher, 6)


def test_changes_made_with_another_model_are_reembedded_once(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    store = LiveStore(db)
    wrong = np.zeros(searcher.embeddings.shape[1], np.float32)
    wrong[0] = 1.0
    store.append("put", "OLD-MODEL", "some-older-build", "another-model", wrong, META, photo(searcher, 11),
                 "image/jpeg")
    catalogue = open_catalogue(searcher, db)
    assert catalogue.reembedded == 1
    assert np.allclose(catalogue.vector("OLD-MODEL"), searcher.embeddings[11], atol=2e-3)
    cached = store.reembedding(1, catalogue.model_key)
    assert cached is not None and np.allclose(cached, catalogue.vector("OLD-MODEL"))
    again = open_catalogue(searcher, db)  # the cached vector: no second embedding needed
    assert np.array_equal(again.vector("OLD-MODEL"), catalogue.vector("OLD-MODEL"))


def test_readonly_reader_sees_writes_after_refresh(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    writer = open_catalogue(searcher, db)
    reader = open_catalogue(searcher, db, readonly=True)
    writer.put("SKU-R", photo(searcher, 12), META)
    assert "SKU-R" not in reader
    assert reader.refresh() == 1 and "SKU-R" in reader and reader.refresh() == 0
    writer.remove("SKU-R")
    reader.refresh()
    assert "SKU-R" not in reader
    with pytest.raises(LiveError):
        reader.put("SKU-X", photo(searcher, 12), META)
    page = LiveCatalogue.for_page(searcher, db)  # what the Streamlit page calls
    assert page is not None and page.store.readonly and "SKU-R" not in page and len(page) == len(writer)
    assert LiveCatalogue.for_page(searcher, tmp_path / "absent.db") is None


def test_concurrent_writers_all_applied_in_log_order(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    catalogue = open_catalogue(searcher, db)
    images = [photo(searcher, row) for row in range(8)]
    errors = []

    def writer(number: int) -> None:
        try:
            for i in range(6):
                catalogue.put(f"W{number}-{i % 3}", images[(number + i) % 8], {**META, "productDisplayName": f"{i}"})
                if i == 4:
                    catalogue.remove(f"W{number}-0")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    rows = sqlite3.connect(db).execute("SELECT seq FROM changes ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == list(range(1, 6 * 7 + 1))  # every change, no gaps
    expected = sorted(f"W{n}-{j}" for n in range(6) for j in (1, 2))
    assert catalogue.live_ids() == expected
    replayed = open_catalogue(searcher, db)
    probe = searcher.embeddings[0]
    assert [h.id for h in replayed.search_vector(probe, 80).matches] == \
        [h.id for h in catalogue.search_vector(probe, 80).matches]


def test_bad_changes_are_refused_and_not_stored(searcher: Searcher, tmp_path: Path):
    catalogue = open_catalogue(searcher, tmp_path / "live.db")
    for bad_id in ("", "a/b", "../x", "x" * 129, "-start", "sp ace"):
        with pytest.raises(LiveError):
            catalogue.put(bad_id, photo(searcher, 0), META)
    with pytest.raises(LiveError):
        catalogue.put("SKU-1", photo(searcher, 0), {"gender": "Men"})  # no articleType
    with pytest.raises(LiveError):
        catalogue.put("SKU-1", photo(searcher, 0), {**META, "colour": "x"})
    with pytest.raises(UnknownItemError):
        catalogue.remove("never-added")
    from lookalike.model.preprocessing import InvalidImageError

    with pytest.raises(InvalidImageError):
        catalogue.put("SKU-1", b"not an image at all" * 10, META)
    assert catalogue.store.last_seq() == 0
    with pytest.raises(LiveError, match="whole number"):  # every year the build holds is one
        catalogue.put("SKU-1", photo(searcher, 0), {**META, "year": "20x1"})
    assert catalogue.store.last_seq() == 0
    fields = searcher.roles.metadata
    with pytest.raises(LiveError):
        validate_metadata({**META, "productDisplayName": "line\nbreak"}, fields)
    assert validate_metadata({**META, "year": " 2012 ", "usage": ""}, fields, ("articleType",),
                             {"year": "whole number"}) == {**META, "year": "2012"}  # an empty field is no field


def test_number_columns_are_the_ones_whose_every_value_is_a_number():
    kinds = value_kinds({"year": ["2011", "2012", "", "NA"], "price": ["1.5", "2", ".25"], "size": ["10", "M"],
                         "empty": ["", ""]})
    assert kinds == {"year": "whole number", "price": "number"}
    for good in ("3", "-2.5", "+.5", ""):
        validate_metadata({"price": good}, ("price",), kinds=kinds)
    for bad in ("1e3", "two", "1,5"):
        with pytest.raises(LiveError, match="'price' must be a number"):
            validate_metadata({"price": bad}, ("price",), kinds=kinds)
    with pytest.raises(LiveError, match="known: none"):
        validate_metadata({"price": "1"}, ())


def test_a_catalogue_of_other_columns_filters_and_writes_its_own(tiny_project: Path, tmp_path: Path):
    """A grocery build: searches filter on its filter columns, a write takes its metadata columns and needs its
    label, the report and stats name its columns; no fashion column is accepted anywhere."""
    artifacts = grocery_build(tiny_project / "artifacts", tmp_path / "grocery")
    grocery = Searcher.load(artifacts, root=tiny_project)
    catalogue = open_catalogue(grocery, tmp_path / "live.db")
    probe = grocery.embeddings[0]
    apparel = catalogue.search_vector(probe, 60, {"coarse_class": ["Apparel"]}).matches
    assert apparel and all(h.metadata["coarse_class"] == "Apparel" for h in apparel)
    assert len(apparel) == (grocery.items["coarse_class"] == "Apparel").sum()
    assert set(apparel[0].metadata) == {"name", "class", "coarse_class", "pack_grams"}
    for fashion in ({"gender": ["Men"]}, {"articleType": ["Tshirts"]}, {"pack_grams": ["588"]}):
        with pytest.raises(LiveError, match="filters: coarse_class, class"):
            catalogue.search_vector(probe, 5, fashion)
    with pytest.raises(LiveError, match="'class' is required"):
        catalogue.put("SKU-1", photo(grocery, 0), {"coarse_class": "Fruit", "name": "Granny Smith"})
    with pytest.raises(LiveError, match="unknown metadata field"):
        catalogue.put("SKU-1", photo(grocery, 0), {"class": "Apple", "articleType": "Tshirts"})
    with pytest.raises(LiveError, match="'pack_grams' must be a whole number"):
        catalogue.put("SKU-1", photo(grocery, 0), {"class": "Apple", "pack_grams": "heavy"})
    added = catalogue.put("SKU-1", photo(grocery, 0), {"class": "Apple", "coarse_class": "Fruit",
                                                       "name": "Granny Smith", "pack_grams": "250"})
    assert added.item.metadata["class"] == "Apple"
    assert [h.id for h in catalogue.search_vector(probe, 5, {"coarse_class": ["Fruit"]}).matches] == ["SKU-1"]
    assert catalogue.browse_ids({"class": ["Apple"]}) == ["SKU-1"]
    described = catalogue.stats()["catalogue"]
    assert described["filters"]["coarse_class"] == sorted({*grocery.items["coarse_class"], "Fruit"})
    assert set(described["filters"]) == {"coarse_class", "class"} and described["required"] == ["class"]
    assert described["metadata"] == ["name", "class", "coarse_class", "pack_grams"]
    assert described["numbers"] == {"pack_grams": "whole number"} and described["title"] == "name"
    catalogue.put("SKU-2", photo(grocery, 0), {"class": "Apple"})  # the same photo
    report = catalogue.duplicate_report()
    assert tuple(report.columns) == GROUP_COLUMNS + ("name", "coarse_class", "class")
    assert {"SKU-1", "SKU-2"} <= set(report["id"])


# ------------------------------------------------------------------------------ durability


def test_durability_settings_are_the_ones_acknowledgement_relies_on(tmp_path: Path):
    """A kill -9 test passes even with synchronous=OFF (the page cache survives a process kill): check the
    settings themselves, on the connection every writing thread gets."""
    store = LiveStore(tmp_path / "live.db")
    assert store.durability() == {"journal_mode": "wal", "synchronous": 2}
    seen = []
    thread = threading.Thread(target=lambda: seen.append(store.durability()))
    thread.start()
    thread.join()
    assert seen == [{"journal_mode": "wal", "synchronous": 2}]
    raw = sqlite3.connect(tmp_path / "live.db")  # a plain connection defaults to synchronous=FULL only by luck
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


FSYNC_PROBE = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from lookalike.live import LiveStore
store = LiveStore(sys.argv[1])
store.append("put", "A", "b", "m", np.ones(4, np.float32), {"articleType": "x"}, b"img", "image/png")
sys.stdout.write("ACKNOWLEDGED\n"); sys.stdout.flush()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to watch the system calls")
def test_an_acknowledged_append_has_fsynced_the_log_before_returning(tmp_path: Path):
    """The fsync path itself: between the append's write to the WAL and the return, an fsync of the WAL."""
    db = tmp_path / "live.db"
    LiveStore(db).close()  # schema made beforehand: only the append is traced
    trace = tmp_path / "trace.txt"
    result = subprocess.run(["strace", "-f", "-y", "-e", "trace=openat,write,pwrite64,fsync,fdatasync", "-o",
                             str(trace), sys.executable, "-c", FSYNC_PROBE, str(db), str(Path(__file__).parents[1])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = trace.read_text().splitlines()
    acknowledged = next(i for i, line in enumerate(lines) if "ACKNOWLEDGED" in line)
    wal_writes = [i for i, line in enumerate(lines[:acknowledged]) if "write" in line and "live.db-wal" in line]
    wal_syncs = [i for i, line in enumerate(lines[:acknowledged])
                 if ("fsync(" in line or "fdatasync(" in line) and "live.db-wal" in line]
    assert wal_writes, "the append wrote nothing to the write-ahead log before it returned"
    assert wal_syncs and wal_syncs[-1] > wal_writes[-1], "no fsync of the log after its last write, before the return"


# ------------------------------------------------------------------------------ several processes on one journal


def test_a_writer_that_fell_behind_applies_the_others_changes_first(searcher: Searcher, tmp_path: Path):
    """Two catalogues on one database (two worker processes): each write applies what the other committed
    first, so both hold the same items in the same order."""
    db = tmp_path / "live.db"
    first, second = open_catalogue(searcher, db), open_catalogue(searcher, db)
    first.put("FROM-FIRST", photo(searcher, 1), META)
    second.remove(str(searcher.items["id"][2]))  # second never refreshed: it must not skip FROM-FIRST
    assert "FROM-FIRST" in second and second.applied_seq == 2
    assert second.put("FROM-SECOND", photo(searcher, 3), META).created
    assert first.refresh() == 2 and first.live_ids() == second.live_ids() == ["FROM-FIRST", "FROM-SECOND"]
    probe = searcher.embeddings[4]
    assert [h.id for h in first.search_vector(probe, 70).matches] == \
        [h.id for h in second.search_vector(probe, 70).matches]
    assert not first.put("FROM-SECOND", photo(searcher, 5), META).created  # it knows the other's item


# ------------------------------------------------------------------------------ near-duplicates


def recoloured(data: bytes) -> bytes:
    """The same product shot in another colourway: hue rotated, the white background kept."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    pixels = np.asarray(image).astype(np.int16)
    rotated = pixels[:, :, [2, 0, 1]]
    background = (pixels > 235).all(axis=2, keepdims=True)
    out = np.where(background, pixels, rotated).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(out).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def reencoded(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def colourful_row(searcher: Searcher) -> int:
    """The build photo whose colourway (:func:`recoloured`) changes it most: a product with a colour to change."""
    from lookalike.search.duplicates import photo_thumbnail, pixel_difference

    def change(row: int) -> float:
        original = photo(searcher, row)
        return pixel_difference(photo_thumbnail(original), photo_thumbnail(recoloured(original)))

    return max(range(len(searcher.items)), key=change)


def test_near_duplicates_are_exact_over_build_and_live_and_skip_colourways(searcher: Searcher, tmp_path: Path):
    """Every item at or above the threshold (not a top-10), live ones included, confirmed by pixels: a re-encoded
    copy is flagged, a recoloured one is not even when its cosine is above the threshold; the report agrees."""
    catalogue = LiveCatalogue.open(searcher, LiveStore(tmp_path / "live.db"), near_duplicate_cosine=0.5)
    row = colourful_row(searcher)
    original = photo(searcher, row)
    for n in range(12):  # more copies than a top-10 could return
        catalogue.put(f"COPY-{n}", reencoded(original), META)
    colourway = recoloured(original)
    variant_vector = searcher.embed_image(colourway)
    assert float(variant_vector @ searcher.embeddings[row]) >= catalogue.near_duplicate_cosine
    flagged = catalogue.put("NEW", reencoded(original), META).near_duplicates
    ids = {h.id for h in flagged}
    assert ids >= {str(searcher.items["id"][row]), *(f"COPY-{n}" for n in range(12))}
    assert all(h.score >= 0.5 for h in flagged) and [h.rank for h in flagged] == list(range(1, len(flagged) + 1))
    variant = catalogue.put("COLOURWAY", colourway, {**META, "baseColour": "Purple"}).near_duplicates
    assert {h.id for h in variant} == set()
    report = catalogue.duplicate_report()
    groups = report.groupby("group")["id"].apply(set).tolist()
    assert any({"NEW", "COPY-0", str(searcher.items["id"][row])} <= group for group in groups)
    assert "COLOURWAY" not in set(report["id"])


def test_the_threshold_is_the_builds_calibration(searcher: Searcher, tmp_path: Path):
    calibration = searcher.manifest["near_duplicates"]
    assert 0.5 < calibration["cosine"] <= 1.0 and calibration["copies"] == 120  # 2 copies of each of the 60
    # the copies' 1st percentile, raised to the photos' nearest-other-photo cosine where that is higher
    expected = max(calibration["from_copies"], calibration["from_nearest_other_photo"])
    assert calibration["cosine"] == pytest.approx(min(1.0, np.floor(expected * 1e4) / 1e4), abs=1e-9)
    assert calibration["lowest_copy_cosine"] <= calibration["from_copies"] + 1e-6
    assert calibration["max_pixel_difference"] >= calibration["largest_copy_pixel_difference"]
    catalogue = LiveCatalogue.open(searcher, LiveStore(tmp_path / "live.db"))
    assert catalogue.near_duplicate_cosine == calibration["cosine"]
    stats = catalogue.stats()["near_duplicates"]
    assert stats["cosine"] == calibration["cosine"] and stats["source"] == "calibrated on this build"
    twin = catalogue.put("TWIN", photo(searcher, 9), META).near_duplicates  # the same bytes: always flagged
    assert twin[0].id == str(searcher.items["id"][9]) and twin[0].source == "build"


# ------------------------------------------------------------------------------ bounded storage


def test_compaction_brings_10000_puts_of_100_ids_back_to_the_live_set(tmp_path: Path, capsys):
    store = LiveStore(tmp_path / "live.db")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, 8_000, dtype=np.uint8).tobytes()  # a small product photo, incompressible
    vector = np.ones(64, np.float32) / 8
    for n in range(10_000):
        store.append("put", f"ID-{n % 100}", "build", "model", vector,
                     {"articleType": "x", "productDisplayName": str(n)}, image, "image/jpeg")
    store.append("remove", "ID-5", "build", "model")
    before = store.size_bytes()
    result = store.compact(store.last_seq())
    rows = sqlite3.connect(tmp_path / "live.db").execute("SELECT item_id, metadata FROM changes").fetchall()
    live_set = 99 * len(image)
    with capsys.disabled():
        print(f"\n10,000 puts of 100 ids: {before / 1e6:.1f} MB -> {result.bytes_after / 1e6:.2f} MB after compaction "
              f"(live set {live_set / 1e6:.2f} MB of photos)")
    assert result.changes_dropped == 10_000 - 99 and result.changes_kept == 100 == len(rows)
    assert before > 60e6 and result.bytes_after < 1.5 * live_set
    assert {r[0] for r in rows} == {f"ID-{n}" for n in range(100)}
    versions = sorted(int(json.loads(text)["productDisplayName"]) for _, text in rows if text is not None)
    assert versions == [n for n in range(9_900, 10_000) if n != 9_905]  # each id's latest put; ID-5 removed
    assert store.last_seq() == 10_001


def test_compaction_keeps_the_replay_identical(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    catalogue = open_catalogue(searcher, db)
    for n in range(6):
        catalogue.put(f"SKU-{n % 2}", photo(searcher, n), {**META, "productDisplayName": f"v{n}"})
    catalogue.remove(str(searcher.items["id"][10]))
    probe = searcher.embeddings[0]
    before = [(h.id, round(h.score, 5)) for h in catalogue.search_vector(probe, 70).matches]
    result = catalogue.store.compact(catalogue.store.last_seq())
    assert result.changes_dropped == 4
    again = open_catalogue(searcher, db)
    assert [(h.id, round(h.score, 5)) for h in again.search_vector(probe, 70).matches] == before
    assert again.item("SKU-1").metadata["productDisplayName"] == "v5"


def test_a_database_older_than_the_builds_fold_is_refused(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    store = LiveStore(db)
    catalogue = LiveCatalogue.open(searcher, store)
    catalogue.put("SKU-1", photo(searcher, 1), META)
    manifest = {**searcher.manifest, "params": {**searcher.manifest["params"],
                                                "live_fold": {"store_id": store.store_id, "through_seq": 3}}}
    folded = dataclasses.replace(searcher, manifest=manifest)
    with pytest.raises(StaleDatabaseError, match="ends at change 1.*holds changes up to 3"):
        LiveCatalogue.open(folded, LiveStore(db))
    catalogue.put("SKU-2", photo(searcher, 2), META)
    catalogue.put("SKU-3", photo(searcher, 3), META)
    assert LiveCatalogue.open(folded, LiveStore(db)).live_ids() == []  # now it holds the fold: nothing to replay
    assert os.path.getsize(db) > 0


def test_the_thumbnail_cache_holds_under_threads_that_fill_and_trim_it(searcher: Searcher, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    import lookalike.live.catalogue as live_catalogue

    monkeypatch.setattr(live_catalogue, "THUMBNAIL_CACHE", 3)  # every insert trims: readers race the evictions
    catalogue = open_catalogue(searcher, tmp_path / "live.db")
    ids = [str(i) for i in searcher.items["id"].iloc[:12]]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(offset: int) -> None:
        start.wait()
        try:
            for turn in range(150):
                assert catalogue._thumbnail(ids[(turn + offset) % len(ids)]) is not None
        except BaseException as error:  # noqa: BLE001 - any failure of a thread fails the test
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:1]
    assert len(catalogue._thumbnails) <= 3


# ------------------------------------------------------------------------------ answers decided by the journal


def test_two_writers_of_one_new_id_never_both_create_it(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    first, second = open_catalogue(searcher, db), open_catalogue(searcher, db)  # two workers or replicas
    for round_ in range(10):
        item_id = f"RACE-{round_}"
        start = threading.Barrier(2)
        answers: list[bool] = []

        def write(catalogue: LiveCatalogue, row: int, item_id: str, start: threading.Barrier,
                  answers: list[bool]) -> None:
            start.wait()
            answers.append(catalogue.put(item_id, photo(searcher, row), META).created)

        threads = [threading.Thread(target=write, args=(c, r, item_id, start, answers))
                   for c, r in ((first, 2), (second, 3))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers) == [False, True]  # one 201, one 200: decided in the write's own transaction


def test_a_remove_of_an_item_another_writer_removed_is_a_404_and_writes_nothing(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    first, second = open_catalogue(searcher, db), open_catalogue(searcher, db)
    first.put("GONE", photo(searcher, 4), META)
    second.refresh()
    assert "GONE" in second
    first.remove("GONE")  # the second has not caught up: it still holds GONE in memory
    last = first.store.last_seq()
    with pytest.raises(UnknownItemError):
        second.remove("GONE")
    assert second.store.last_seq() == last and "GONE" not in second
    build_item = str(searcher.items["id"][5])
    assert second.put(build_item, photo(searcher, 5), META).created is False  # a build item exists already


def test_a_write_held_up_by_a_locked_journal_is_refused_whole(searcher: Searcher, tmp_path: Path):
    from lookalike.live import JournalBusyError

    db = tmp_path / "live.db"
    catalogue = LiveCatalogue.open(searcher, LiveStore(db, busy_seconds=0.2), near_duplicate_cosine=0.99)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what compaction's VACUUM does for as long as it runs
    try:
        with pytest.raises(JournalBusyError):
            catalogue.put("BUSY", photo(searcher, 6), META)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "BUSY" not in catalogue and catalogue.store.last_seq() == 0
    assert catalogue.put("BUSY", photo(searcher, 6), META).created  # the same write once the lock is gone


def test_a_reader_catches_up_to_the_position_a_write_answered(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    writer, reader = open_catalogue(searcher, db), open_catalogue(searcher, db)
    seq = writer.put("RYW", photo(searcher, 7), META).seq
    assert "RYW" not in reader  # no follower thread here: only what it applied
    assert reader.caught_up_to(seq) and "RYW" in reader
    assert not reader.caught_up_to(seq + 1)  # a position the journal has not reached
