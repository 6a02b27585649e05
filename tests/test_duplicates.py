"""Near-duplicate groups, the single-item check, and the pixel ground truth, on synthetic data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import lookalike.search.duplicates as duplicates
from lookalike.catalogue.description import CatalogueRoles
from lookalike.search.duplicates import (
    GROUP_COLUMNS,
    NEAR_DUPLICATE_COSINE,
    colour_differences,
    duplicate_groups,
    near_duplicates,
    pixel_digest,
    pixel_duplicate_pairs,
    pixel_thumbnail,
    report_columns,
)

ITEM_COLUMNS = ("productDisplayName", "articleType", "baseColour", "gender")  # the synthetic items' own columns


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def catalogue_with_known_duplicates() -> tuple[np.ndarray, pd.DataFrame, list[set[int]]]:
    """40 random directions (far apart in 64-d), plus copies of some with tiny noise."""
    rng = np.random.default_rng(0)
    base = unit(rng.normal(size=(40, 64)))
    copies = {40: 3, 41: 3, 42: 3, 43: 10, 44: 25}  # new row -> the row it duplicates
    noisy = [base[source] + rng.normal(scale=0.005, size=64) for source in copies.values()]
    embeddings = unit(np.vstack([base, noisy]))
    ids = np.arange(1000, 1000 + len(embeddings))
    items = pd.DataFrame({"id": ids, "productDisplayName": [f"item {i}" for i in ids],
                          "articleType": ["Tshirts"] * len(ids), "baseColour": ["Red"] * len(ids),
                          "gender": ["Men"] * len(ids)})
    groups = [{1003, 1040, 1041, 1042}, {1010, 1043}, {1025, 1044}]
    return embeddings, items, groups


def test_groups_are_the_known_duplicates() -> None:
    embeddings, items, expected = catalogue_with_known_duplicates()
    table = duplicate_groups(embeddings, items, 0.99)
    assert tuple(table.columns) == GROUP_COLUMNS + ITEM_COLUMNS  # every column of the items, by default
    found = [set(group["id"]) for _, group in table.groupby("group")]
    assert sorted(found, key=min) == sorted(expected, key=min)
    assert table.loc[table["group"] == 1, "id"].tolist() == [1003, 1040, 1041, 1042]  # largest group first
    assert (table["group_size"] == table.groupby("group")["id"].transform("size")).all()
    cosine = embeddings @ embeddings.T
    np.fill_diagonal(cosine, -1)
    row_of = {int(i): r for r, i in enumerate(items["id"])}
    for record in table.itertuples():
        row = row_of[record.id]
        assert record.closest_id == items["id"].iat[int(np.argmax(cosine[row]))]
        assert record.max_cosine == pytest.approx(min(cosine[row].max(), 1.0), abs=1e-5)
    assert (table["productDisplayName"] == "item " + table["id"].astype(str)).all()


def test_threshold_is_inclusive_and_bounds_the_pairs() -> None:
    embeddings = unit([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # cosines 0.8 (0-1), 0.6 (1-2), 0 (0-2)
    items = pd.DataFrame({"id": [1, 2, 3]})
    assert set(duplicate_groups(embeddings, items, 0.8)["id"]) == {1, 2}
    assert duplicate_groups(embeddings, items, 0.8001).empty
    assert set(duplicate_groups(embeddings, items, 0.6)["id"]) == {1, 2, 3}  # chained: one group of three
    assert duplicate_groups(embeddings, items, 0.6)["group"].nunique() == 1
    empty = duplicate_groups(embeddings, items, 0.9)
    assert empty.empty and tuple(empty.columns) == GROUP_COLUMNS
    for bad in (0.0, -0.5, 1.01):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            duplicate_groups(embeddings, items, bad)
    with pytest.raises(ValueError, match="2 items for 3 embeddings"):
        duplicate_groups(embeddings, items.iloc[:2], 0.9)


def test_the_report_carries_the_builds_own_columns_whatever_they_are_called() -> None:
    """A grocery build's report shows its title and card columns and counts colourways by its colour column; a
    catalogue column may even share a name with the report's own bookkeeping."""
    embeddings, fashion, expected = catalogue_with_known_duplicates()
    items = pd.DataFrame({"id": fashion["id"], "name": [f"apple {i}" for i in fashion["id"]],
                          "coarse_class": "Fruit", "class": "Apple", "skin": ["Red", "Green"] * 22 + ["Red"],
                          "root": "kept apart"})
    roles = CatalogueRoles(labels=("class",), colour="skin", title="name", card=("coarse_class", "class"))
    assert report_columns(roles) == ("name", "coarse_class", "class", "skin")
    table = duplicate_groups(embeddings, items, 0.99, columns=report_columns(roles))
    assert tuple(table.columns) == GROUP_COLUMNS + ("name", "coarse_class", "class", "skin")
    assert sorted((set(g["id"]) for _, g in table.groupby("group")), key=min) == sorted(expected, key=min)
    assert (table["name"] == "apple " + table["id"].astype(str)).all()
    skin = dict(zip(items["id"], items["skin"], strict=True))
    differing = sum(skin[i] != skin[c] for i, c in zip(table["id"], table["closest_id"], strict=True))
    assert colour_differences(table, "skin") == differing > 0
    assert colour_differences(table, None) == 0 and colour_differences(table, "baseColour") == 0
    everything = duplicate_groups(embeddings, items, 0.99)  # no columns named: all of the items', "root" too
    assert tuple(everything.columns) == GROUP_COLUMNS + ("name", "coarse_class", "class", "skin", "root")
    assert (everything["root"] == "kept apart").all() and everything["group"].tolist() == table["group"].tolist()
    no_roles = duplicate_groups(embeddings, items, 0.99, columns=report_columns(CatalogueRoles()))
    assert tuple(no_roles.columns) == GROUP_COLUMNS


def test_small_result_chunks_give_the_same_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    embeddings, items, _ = catalogue_with_known_duplicates()
    whole = duplicate_groups(embeddings, items, 0.99)
    monkeypatch.setattr(duplicates, "_MAX_RESULTS_PER_CALL", 1)  # one query per range search
    pd.testing.assert_frame_equal(duplicate_groups(embeddings, items, 0.99), whole)


def test_csv_round_trip(tmp_path: Path) -> None:
    embeddings, items, _ = catalogue_with_known_duplicates()
    table = duplicate_groups(embeddings, items, 0.99)
    table.to_csv(tmp_path / "d.csv", index=False)
    again = pd.read_csv(tmp_path / "d.csv")
    assert tuple(again.columns) == GROUP_COLUMNS + ITEM_COLUMNS and len(again) == 4 + 2 + 2


def test_near_duplicates_of_one_new_item() -> None:
    embeddings, _, _ = catalogue_with_known_duplicates()
    rows, scores = near_duplicates(embeddings, embeddings[3], 0.99)
    assert set(rows.tolist()) == {3, 40, 41, 42}
    assert rows[0] == 3 and scores[0] == pytest.approx(1.0, abs=1e-6)
    assert (np.diff(scores) <= 0).all() and rows.dtype == np.int64
    rows, _ = near_duplicates(embeddings, embeddings[3], 0.99, exclude=[3], chunk=7)
    assert set(rows.tolist()) == {40, 41, 42}
    rows, scores = near_duplicates(embeddings, embeddings[0], NEAR_DUPLICATE_COSINE, exclude=[0])
    assert len(rows) == 0 and len(scores) == 0
    with pytest.raises(ValueError, match="dimension"):
        near_duplicates(embeddings, np.ones(3, np.float32), 0.9)


def _photo(seed: int, size: tuple[int, int] = (60, 80)) -> Image.Image:
    """A product-like picture: a coloured blob on white, different for each seed."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 3), 255, np.uint8)
    top, left = rng.integers(5, 30), rng.integers(5, 20)
    pixels[top:top + 40, left:left + 30] = rng.integers(0, 200, size=3)
    pixels[top + 10:top + 20, left:left + 30] = rng.integers(0, 255, size=3)
    return Image.fromarray(pixels)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_pixel_ground_truth_on_synthetic_photos() -> None:
    first, second = _photo(1), _photo(2)
    png, bmp = _encode(first, "PNG"), _encode(first, "BMP")
    assert png != bmp and pixel_digest(png) == pixel_digest(bmp)  # same pixels, different files
    jpeg = _encode(first, "JPEG", quality=95)
    assert pixel_digest(jpeg) != pixel_digest(png)  # lossy: not identical...
    larger = _encode(first.resize((120, 160), Image.Resampling.NEAREST), "PNG")
    sources = [png, jpeg, larger, _encode(second, "PNG"), _encode(_photo(3), "PNG")]
    thumbnails = np.stack([pixel_thumbnail(s) for s in sources])
    assert thumbnails.shape == (5, 32, 32, 3) and thumbnails.dtype == np.uint8
    pairs = pixel_duplicate_pairs(thumbnails, 2.0)
    assert {(i, j) for i, j, _ in pairs} == {(0, 1), (0, 2), (1, 2)}  # ...but nearly: the same photo three ways
    assert all(0.0 <= mad <= 2.0 for _, _, mad in pairs)
    assert pixel_duplicate_pairs(thumbnails[[0, 3, 4]], 0.0) == []
    assert pixel_duplicate_pairs(np.stack([thumbnails[0]] * 2), 0.0) == [(0, 1, 0.0)]
    different = np.abs(thumbnails[0].astype(int) - thumbnails[3].astype(int)).mean()
    assert different > 2.0


def test_pixel_screen_never_drops_a_pair_within_the_bound() -> None:
    """The matrix-product screen is a bound, not a heuristic: compare with brute force."""
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, size=(6, 8, 8, 3)).astype(np.uint8)
    variants = [np.clip(base[i % 6].astype(int) + rng.integers(-3, 4, size=(8, 8, 3)), 0, 255) for i in range(30)]
    thumbnails = np.stack(variants).astype(np.uint8)
    for bound in (2.2, 2.3, 3.0):  # 7, 31 and all 60 same-base pairs
        found = {(i, j) for i, j, _ in pixel_duplicate_pairs(thumbnails, bound, chunk=7)}
        flat = thumbnails.reshape(30, -1).astype(int)
        brute = {(i, j) for i in range(30) for j in range(i + 1, 30) if np.abs(flat[i] - flat[j]).mean() <= bound}
        assert found == brute and len(brute) > 0


def test_the_nearest_other_photo_quantile_is_over_thousands_of_photos_not_the_copied_few(tmp_path: Path):
    from lookalike.search.duplicates import DISTINCT_QUANTILE, calibrate, nearest_other_cosines

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(1500, 32)).astype(np.float32)
    vectors[1:40] = vectors[0] + 0.01 * rng.normal(size=(39, 32))  # 40 near-twins: 2.7% of the photos
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    found = nearest_other_cosines(vectors, {}, np.random.default_rng(0), sample=5000)
    brute = vectors @ vectors.T
    np.fill_diagonal(brute, -1.0)
    assert np.allclose(np.sort(found), np.sort(brute.max(axis=1)), atol=1e-5)  # every photo, exactly
    photos = []
    for row in range(len(vectors)):
        path = tmp_path / f"{row}.png"
        pixels = np.zeros((8, 8, 3), np.uint8)
        pixels[0, 0, :2] = row % 256, row // 256  # every file different: no byte-identical pair
        Image.fromarray(pixels).save(path)
        photos.append(path)
    calibration = calibrate(vectors, photos, lambda data: vectors[0], sample=20, seed=0)
    assert calibration["nearest_other_photos"] == len(vectors)
    assert calibration["from_nearest_other_photo"] == pytest.approx(
        float(np.quantile(brute.max(axis=1), DISTINCT_QUANTILE)), abs=1e-6)
