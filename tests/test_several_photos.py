"""Several photos per item (lookalike/search/photos.py): every photo read, embedded and indexed; every search,
"more like this", the evaluation and near-duplicate checks answer items, each by its best photo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SHARED, project_skeleton, ran_stages, run

from lookalike.catalogue.description import description_from_dict
from lookalike.catalogue.reading import MORE_PHOTOS_COLUMN, CatalogueReport, check_images, load_catalogue
from lookalike.live import LiveCatalogue, LiveStore
from lookalike.search.engine import Searcher
from lookalike.search.index import build_index
from lookalike.search.photos import PhotoRows, search_items

LABELS = ("Tshirts", "Watches", "Handbags")
PER_LABEL = 10


def test_an_item_scores_by_its_best_photo_and_appears_once():
    # items 0, 1, 2; photo rows 3 and 4 are item 0's, photo row 5 is item 2's
    photos = PhotoRows(3, np.array([0, 0, 2]))
    vectors = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6], [0.99, 0.141], [0.5, 0.866]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors, {"type": "flat"})
    query = np.array([[0.8, 0.6]], np.float32)
    scores, rows = search_items(index, photos, query, 3)
    assert rows[0].tolist() == [0, 1, 2]  # item 0 by its photo row 3 (cosine 1), item 1, then item 2 by row 5
    assert scores[0][0] == pytest.approx(1.0, abs=1e-5)
    assert scores[0][2] == pytest.approx(float(vectors[5] @ query[0]), abs=1e-5)
    _, without_first = search_items(index, photos, query, 3, excluded_items=np.array([0]))
    assert without_first[0].tolist()[:2] == [1, 2]  # none of item 0's photos comes back
    _, only_two = search_items(index, photos, query, 3, allowed_items=np.array([2]))
    assert only_two[0].tolist() == [2, -1, -1]
    assert photos.photos_of(np.array([0])).tolist() == [0, 3, 4] and photos.most == 3


def write_catalogue(folder: Path) -> pd.DataFrame:
    """A table of items with a front, a back and sometimes a side photo (other photos of the same type)."""
    styles = pd.read_csv(SHARED / "styles.csv", usecols=range(9), dtype=str, on_bad_lines="skip")
    photos = folder / "photos"
    photos.mkdir(parents=True)
    rows = []
    for label in LABELS:
        ids = [i for i in styles.loc[styles["articleType"] == label, "id"] if (SHARED / f"images/{i}.jpg").is_file()]
        for number in range(PER_LABEL):
            front, back = ids[2 * number], ids[2 * number + 1]
            for name in (front, back):
                shutil.copy(SHARED / f"images/{name}.jpg", photos / f"{name}.jpg")
            side = ""
            if number == 0:  # a side photo that does not exist, and one that does
                side = "photos/missing.jpg"
            if number == 1:
                side = f"photos/{ids[-1]}.jpg"
                shutil.copy(SHARED / f"images/{ids[-1]}.jpg", photos / f"{ids[-1]}.jpg")
            rows.append({"sku": f"{label[:3].upper()}-{number}", "kind": label, "front": f"photos/{front}.jpg",
                         "back": f"photos/{back}.jpg", "side": side})
    (photos / "empty.jpg").write_bytes(b"")
    rows[2]["front"] = "photos/empty.jpg"  # its back photo becomes its first
    table = pd.DataFrame(rows)
    table.to_csv(folder / "items.csv", index=False)
    return table


DESCRIPTION = {"layout": "table", "table": "items.csv", "id": "sku", "photos": ["front", "back", "side"],
               "labels": ["kind"], "title": "sku"}


def test_the_reader_keeps_every_photo_that_exists_and_decodes(tmp_path: Path):
    given = write_catalogue(tmp_path)
    table, report = load_catalogue(tmp_path, description_from_dict(DESCRIPTION, "test"))
    table = check_images(table, report)
    assert len(table) == len(given)
    by_sku = table.set_index("external_id")
    assert json.loads(by_sku.loc["TSH-1", MORE_PHOTOS_COLUMN]) == [str(tmp_path / given.loc[1, "back"]),
                                                                   str(tmp_path / given.loc[1, "side"])]
    assert json.loads(by_sku.loc["TSH-0", MORE_PHOTOS_COLUMN]) == [str(tmp_path / given.loc[0, "back"])]
    assert by_sku.loc["TSH-2", "image_path"] == str(tmp_path / given.loc[2, "back"])  # the empty front set aside
    assert by_sku.loc["TSH-2", MORE_PHOTOS_COLUMN] == ""
    assert "empty.jpg" in report.empty_images


def test_an_undecodable_first_photo_gives_way_to_the_next(tmp_path: Path):
    good = sorted((SHARED / "images").iterdir())[:2]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    table = pd.DataFrame({"id": [1, 2], "image_path": [str(tmp_path / "broken.jpg"), str(good[0])],
                          MORE_PHOTOS_COLUMN: [json.dumps([str(good[1])]), json.dumps([str(tmp_path / "broken.jpg")])]})
    report = CatalogueReport()
    kept = check_images(table, report)
    assert kept["image_path"].tolist() == [str(good[1]), str(good[0])]
    assert kept[MORE_PHOTOS_COLUMN].tolist() == ["", ""]
    assert [u["id"] for u in report.unreadable_images] == [1, 2]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("several")
    project, catalogue = root / "project", root / "catalogue"
    project_skeleton(project)
    write_catalogue(catalogue)
    (project / "catalogues/shop.yaml").write_text(yaml.safe_dump(DESCRIPTION))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(catalogue_dir=str(catalogue), catalogue="catalogues/shop.yaml")
    params["subset"].update(size=1000, min_per_class=5, test_fraction=0.3, val_fraction=0.2)
    params["backbone"]["image_size"] = 96
    params["features"].update(batch_size=16, augmented_views=1)
    params["model"]["subspaces"] = {"kind": {"column": "kind", "dim": params["model"]["embedding_dim"], "weight": 1.0}}
    params["similarity"] = {}
    params["train"].update(steps=40, eval_every=20, classes_per_batch=3, images_per_class=4, finetune_blocks=0)
    params["mlflow"]["tracking_uri"] = "sqlite:///mlflow.db"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], project)
    run(["dvc", "init", "-q"], project)
    output = run(["dvc", "repro"], project)
    assert {"sample_subset", "features", "train", "embed", "index", "evaluate"} <= ran_stages(output), output[-3000:]
    return project


def test_every_photo_is_indexed_and_a_search_by_any_photo_finds_its_item_once(project: Path):
    searcher = Searcher.load(project / "artifacts", root=project)
    items = len(LABELS) * PER_LABEL
    assert len(searcher.items) == items
    # two photos each, a side photo for item 1 of each label, TSH-2's empty front set aside
    assert searcher.index.ntotal == searcher.manifest["photos"] == 2 * items + len(LABELS) - 1
    assert MORE_PHOTOS_COLUMN not in searcher.items and MORE_PHOTOS_COLUMN not in searcher.metadata(0)
    sku = dict(zip(searcher.items["id"], searcher.items["external_id"], strict=True))
    more_paths = np.load(project / "artifacts/more_photos.npz")["paths"]
    for photo in more_paths:  # each other photo (never an item's first) finds its own item first
        response = searcher.search(Path(photo).read_bytes(), k=8)
        ids = [m.id for m in response.matches]
        assert len(ids) == len(set(ids)) == 8
        owner = searcher.items["id"].iloc[int(searcher.photos.owners[list(more_paths).index(photo)])]
        assert ids[0] == owner, (photo, sku[ids[0]])
        assert response.matches[0].score == pytest.approx(1.0, abs=1e-3)
    related = searcher.related_table(k=5)
    assert not related.duplicated(["id", "related_id"]).any() and (related["id"] != related["related_id"]).all()


def test_more_like_this_and_the_evaluation_are_by_item(project: Path):
    searcher = Searcher.load(project / "artifacts", root=project)
    first = int(searcher.items["id"].iloc[0])
    ids = [m.id for m in searcher.similar_items(first, k=10).matches]
    assert first not in ids and len(set(ids)) == 10
    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert metrics["gallery"] == len(LABELS) * PER_LABEL and metrics["queries"] > 0
    for model in ("trained", "pretrained"):
        assert 0.0 <= metrics[model]["precision_at_5"] <= 1.0


def test_a_copy_of_any_photo_is_a_near_duplicate_of_its_item(project: Path, tmp_path: Path):
    searcher = Searcher.load(project / "artifacts", root=project)
    catalogue = LiveCatalogue.open(searcher, LiveStore(tmp_path / "live.db"), near_duplicate_cosine=0.99)
    photo = np.load(project / "artifacts/more_photos.npz")["paths"][5]
    owner = searcher.items["external_id"].iloc[int(searcher.photos.owners[5])]  # the shop's own id
    data = Path(photo).read_bytes()
    found = catalogue.near_duplicates(searcher.embed_image(data), data)
    assert [hit.id for hit in found][:1] == [owner]


# ------------------------------------------------------------------ the live catalogue: a write of several photos

META = {"articleType": "Tshirts", "gender": "Men", "baseColour": "Blue", "masterCategory": "Apparel",
        "productDisplayName": "Live tee"}


@pytest.fixture(scope="module")
def tiny_searcher(tiny_project: Path) -> Searcher:
    return Searcher.load(tiny_project / "artifacts", root=tiny_project)


def photo_of(searcher: Searcher, row: int) -> bytes:
    return Path(searcher.resolve_path(row)).read_bytes()


def outside_photos(searcher: Searcher, count: int) -> list[bytes]:
    """Photos of the sample that the build does not hold (a build photo would tie with its build item)."""
    held = {Path(str(p)).name for p in searcher.image_paths}
    return [p.read_bytes() for p in sorted((SHARED / "images").iterdir())[:200] if p.name not in held][:count]


def first_hit(catalogue: LiveCatalogue, image: bytes) -> tuple[str, float]:
    found = catalogue.search(image, k=5).matches
    assert len({h.id for h in found}) == len(found)
    return found[0].id, found[0].score


def test_a_live_item_of_several_photos_is_found_by_each_and_replaced_whole(tiny_searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    catalogue = LiveCatalogue.open(tiny_searcher, LiveStore(db), near_duplicate_cosine=0.99)
    front, back, side = outside_photos(tiny_searcher, 3)
    catalogue.put("SKU-3", front, META, [back, side])
    for image in (back, side):  # each photo finds the item first, and only once
        item_id, score = first_hit(catalogue, image)
        assert item_id == "SKU-3" and score == pytest.approx(1.0, abs=1e-3)
    near = catalogue.near_duplicates(tiny_searcher.embed_image(side), side)
    assert "SKU-3" in [h.id for h in near]  # a copy of its third photo is a near-duplicate of the item
    restarted = LiveCatalogue.open(tiny_searcher, LiveStore(db), near_duplicate_cosine=0.99)
    assert first_hit(restarted, back)[0] == "SKU-3"  # replayed with every photo
    catalogue.put("SKU-3", front, META)  # replaced by one photo: its old others are gone
    assert first_hit(catalogue, back)[0] != "SKU-3"
    assert first_hit(catalogue, front)[0] == "SKU-3"
    catalogue.remove("SKU-3")
    assert "SKU-3" not in [h.id for h in catalogue.search(front, k=60).matches]


def test_too_many_or_a_bad_other_photo_writes_nothing(tiny_searcher: Searcher, tmp_path: Path):
    from lookalike.live import LiveError
    from lookalike.model.preprocessing import InvalidImageError

    catalogue = LiveCatalogue.open(tiny_searcher, LiveStore(tmp_path / "live.db"), near_duplicate_cosine=0.99)
    front = photo_of(tiny_searcher, 3)
    with pytest.raises(LiveError, match="at most 8 photos"):
        catalogue.put("SKU-9", front, META, [front] * 8)
    with pytest.raises(InvalidImageError, match="photo 3"):
        catalogue.put("SKU-9", front, META, [front, b"not an image"])
    assert "SKU-9" not in catalogue and catalogue.store.last_seq() == 0


def test_other_photos_are_reembedded_with_the_pinned_model_and_folded_into_the_delta(tiny_searcher: Searcher,
                                                                                      tiny_project: Path,
                                                                                      tmp_path: Path):
    from lookalike.catalogue.reading import read_live_delta
    from lookalike.live.fold import fold

    db = tmp_path / "live.db"
    store = LiveStore(db)
    front, back = outside_photos(tiny_searcher, 2)
    wrong = np.zeros(tiny_searcher.embeddings.shape[1], np.float32)
    wrong[0] = 1.0
    store.append("put", "OLD-MODEL", "an-older-build", "another-model", wrong, META, front, "image/jpeg",
                 [(wrong, back, "image/jpeg")])
    catalogue = LiveCatalogue.open(tiny_searcher, store, near_duplicate_cosine=0.99)
    assert catalogue.reembedded == 1
    assert first_hit(catalogue, back)[0] == "OLD-MODEL"  # its other photo embedded again by the pinned model
    cached = store.reembedding(1, catalogue.model_key)
    assert cached is not None and cached.size == 2 * tiny_searcher.embeddings.shape[1]
    again = LiveCatalogue.open(tiny_searcher, LiveStore(db), near_duplicate_cosine=0.99)
    assert first_hit(again, back)[0] == "OLD-MODEL"
    summary = fold(store, tiny_project / "artifacts", tmp_path / "delta")
    assert summary.items == 1
    items, _, _ = read_live_delta(tmp_path / "delta")
    others = json.loads(items.loc[0, MORE_PHOTOS_COLUMN])
    assert [Path(p).read_bytes() for p in others] == [back]
    assert Path(items.loc[0, "image_path"]).read_bytes() == front
