"""load_catalogue on every layout a description can name, on tiny catalogues made here with real photos,
and on the real Grocery Store dataset; and every refusal, naming the file, the line or row, and the column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from lookalike.catalogue.description import (
    FOLDER_CLASS,
    FOLDER_PARENT,
    CatalogueDescription,
    description_from_dict,
    folders_description,
    load_description,
)
from lookalike.catalogue.reading import (
    EXTERNAL_ID_COLUMN,
    SPLIT_GIVEN_COLUMN,
    CatalogueError,
    check_images,
    load_catalogue,
)
from lookalike.catalogue.subset import GALLERY_SPLIT, split_train_val_test

REPO = Path(__file__).resolve().parent.parent
GROCERY = (REPO / "../shared/data/grocery-store").resolve()


def photo(path: Path, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    """A real 12 x 10 photo, PNG or JPEG by its suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path, format="PNG" if path.suffix == ".png" else "JPEG")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def describe(**raw) -> CatalogueDescription:
    return description_from_dict(raw, "shop.yaml")


def names(table: pd.DataFrame) -> list[str]:
    return [Path(p).name for p in table["image_path"]]


SHOP = dict(table="items.csv", id="sku", photos=["photo"], labels=["category"], attributes=["colour"],
            colour="colour", title="name")


def make_shop(folder: Path) -> Path:
    write(folder / "items.csv", "sku,name,category,colour,photo\n"
                                "10,Red shoe,shoes,red,img/10.jpg\n"
                                "11,Blue shoe,shoes,blue,img/11.png\n"
                                "12,Cap,hats,,/img/12.jpg\n")  # a leading / is the catalogue's root
    photo(folder / "img/10.jpg")
    photo(folder / "img/11.png", (20, 20, 200))
    photo(folder / "img/12.jpg", (20, 200, 20))
    return folder


# ---------------------------------------------------------------- table layouts


def test_csv_with_header(tmp_path):
    folder = make_shop(tmp_path / "shop")
    table, report = load_catalogue(folder, describe(**SHOP))
    assert table["id"].tolist() == [10, 11, 12]
    assert table["id"].dtype == "int64"
    assert EXTERNAL_ID_COLUMN not in table
    assert table["image_path"].tolist() == [str(folder / "img/10.jpg"), str(folder / "img/11.png"),
                                            str(folder / "img/12.jpg")]
    assert table["category"].tolist() == ["shoes", "shoes", "hats"]
    assert table["colour"].tolist() == ["red", "blue", ""]
    assert (table[SPLIT_GIVEN_COLUMN] == "").all()
    assert report.items == report.csv_rows == 3
    assert report.extra_columns == []
    assert report.rows_without_image == report.images_without_row == report.rows_without_label == []
    kept = check_images(table, report)  # real photos: all decode
    assert len(kept) == 3 and report.unreadable_images == []


def test_a_relative_catalogue_folder_gives_relative_image_paths(tmp_path, monkeypatch):
    make_shop(tmp_path / "shop")
    monkeypatch.chdir(tmp_path)
    table, _ = load_catalogue("shop", describe(**SHOP))
    assert table["image_path"].tolist() == ["shop/img/10.jpg", "shop/img/11.png", "shop/img/12.jpg"]


def make_lists(folder: Path) -> Path:
    """The Grocery Store's own layout: headerless split lists "path, class id, coarse id" under dataset/."""
    write(folder / "dataset/train.txt", "train/Apple/a1.jpg, 0, 0\ntrain/Apple/a2.jpg, 0, 0\n"
                                        "train/Pear/p1.jpg, 1, 0\n\n")
    write(folder / "dataset/val.txt", "val/Apple/a3.jpg, 0, 0\n")
    write(folder / "dataset/test.txt", "test/Pear/p2.jpg, 1, 0\ntest/Pear/p3.png, 1, 0")  # no final newline
    for i, name in enumerate(("train/Apple/a1.jpg", "train/Apple/a2.jpg", "train/Pear/p1.jpg", "val/Apple/a3.jpg",
                              "test/Pear/p2.jpg", "test/Pear/p3.png")):
        photo(folder / "dataset" / name, (30 * i, 100, 100))
    return folder


LISTS = dict(table=[{"path": "dataset/train.txt", "split": "train"}, {"path": "dataset/val.txt", "split": "val"},
                    {"path": "dataset/test.txt", "split": "test"}],
             header=False, column_names=["photo", "class_id", "coarse_id"], id="photo", photos=["photo"],
             photo_root="dataset", labels=["class_id"], attributes=["coarse_id"])


def test_headerless_lists_with_a_split_per_file(tmp_path):
    folder = make_lists(tmp_path / "grocery")
    table, report = load_catalogue(folder, describe(**LISTS))
    assert table[EXTERNAL_ID_COLUMN].tolist() == ["train/Apple/a1.jpg", "train/Apple/a2.jpg", "train/Pear/p1.jpg",
                                                  "val/Apple/a3.jpg", "test/Pear/p2.jpg", "test/Pear/p3.png"]
    assert table["id"].tolist() == [1, 2, 3, 4, 5, 6]  # paths are no decimal ids: numbered in table order
    assert table[SPLIT_GIVEN_COLUMN].tolist() == ["train", "train", "train", "val", "test", "test"]
    assert table["class_id"].tolist() == ["0", "0", "1", "0", "1", "1"]  # the spaces after the commas are gone
    assert table["image_path"].tolist() == [str(folder / "dataset" / p) for p in table[EXTERNAL_ID_COLUMN]]
    assert report.csv_rows == report.items == 6
    split, split_report = split_train_val_test(table, "class_id", 0.5, 0.5, 0, min_per_class=2)
    assert split.tolist() == table[SPLIT_GIVEN_COLUMN].tolist()  # the dataset's own split wins
    assert split_report["split"] == "given by the catalogue"


def test_split_files_with_different_columns_leave_what_a_file_lacks_empty(tmp_path):
    # a competition's test.csv often has no label column: those rows have no label (counted, kept)
    folder = tmp_path / "shop"
    write(folder / "train.csv", "sku,photo,category\n1,a.jpg,shoes\n2,b.jpg,hats\n")
    write(folder / "test.csv", "sku,photo\n3,c.jpg\n")
    for name in "abc":
        photo(folder / f"{name}.jpg")
    description = describe(table=[{"path": "train.csv", "split": "train"}, {"path": "test.csv", "split": "test"}],
                           id="sku", photos=["photo"], labels=["category"])
    table, report = load_catalogue(folder, description)
    assert table["category"].tolist() == ["shoes", "hats", ""]
    assert report.rows_without_label == [3]
    write(folder / "test.csv", "photo\nc.jpg\n")  # no id column in this file: its rows have no id
    with pytest.raises(CatalogueError, match=r"^test\.csv, line 2, column 'sku': the id is empty"):
        load_catalogue(folder, description)


def test_a_split_column_gives_the_split_through_split_values(tmp_path):
    folder = make_shop(tmp_path / "shop")
    write(folder / "items.csv", "sku,name,category,colour,photo,part\n10,Red shoe,shoes,red,img/10.jpg,TRAIN\n"
                                "11,Blue shoe,shoes,blue,img/11.png,query\n12,Cap,hats,,img/12.jpg,other\n")
    description = describe(**SHOP, split="part", split_values={"TRAIN": "train", "query": "test"})
    table, report = load_catalogue(folder, description)
    assert table[SPLIT_GIVEN_COLUMN].tolist() == ["train", "test", ""]  # a value it does not map: no split
    assert "part" not in report.extra_columns


def test_parquet_table_keeps_whole_numbers_whole_next_to_a_missing_value(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "shop"
    folder.mkdir()
    pq.write_table(pa.table({"sku": pa.array([7, 8, 9], pa.int64()), "category": ["shoes", None, "hats"],
                             "size": pa.array([42, None, 38], pa.int64()), "weight": [0.5, 1.25, None]}),
                   folder / "items.parquet")
    for sku in (7, 8, 9):
        photo(folder / f"photos/{sku}.jpg")
    description = describe(table="items.parquet", id="sku", photos=["photos/{sku}.jpg"], labels=["category"],
                           attributes=["size", "weight"])
    table, report = load_catalogue(folder, description)
    assert table["id"].tolist() == [7, 8, 9]
    assert table["size"].tolist() == ["42", "", "38"]  # not 42.0: the catalogue's own text
    assert table["weight"].tolist() == ["0.5", "1.25", ""]
    assert table["category"].tolist() == ["shoes", "", "hats"]
    assert report.rows_without_label == [8]  # counted and kept
    assert names(table) == ["7.jpg", "8.jpg", "9.jpg"]


def test_a_headerless_list_separated_by_tabs_is_split_into_its_named_columns(tmp_path):
    folder = tmp_path / "shop"
    write(folder / "train.txt", "img/a.jpg\tApple, green\t0\nimg/b.jpg\tPear\t1\n")
    for name in "ab":
        photo(folder / f"img/{name}.jpg")
    table, report = load_catalogue(folder, describe(table="train.txt", header=False,
                                                    column_names=["path", "name", "class"], photos=["path"],
                                                    labels=["class"]))
    assert table["name"].tolist() == ["Apple, green", "Pear"] and table["class"].tolist() == ["0", "1"]
    assert names(table) == ["a.jpg", "b.jpg"] and report.malformed_lines == []


def test_json_lines_table(tmp_path):
    folder = tmp_path / "shop"
    rows = [{"sku": "A-1", "category": "shoes", "size": 42, "photo": "p/a1.jpg", "tags": ["x"]},
            {"sku": "B-2", "category": "shoes", "size": None, "photo": "p/b2.png"},
            {"sku": "C-3", "category": None, "size": 38, "photo": "p/c3.jpg"}]
    write(folder / "items.jsonl", json.dumps(rows[0]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[1:]) + "\n")
    for row in rows:
        photo(folder / row["photo"])
    description = describe(table="items.jsonl", id="sku", photos=["photo"], labels=["category"],
                           attributes=["size"])
    table, report = load_catalogue(folder, description)
    assert table[EXTERNAL_ID_COLUMN].tolist() == ["A-1", "B-2", "C-3"]
    assert table["id"].tolist() == [1, 2, 3]
    assert table["size"].tolist() == ["42", "", "38"]
    assert table["category"].tolist() == ["shoes", "shoes", ""]
    assert report.rows_without_label == ["C-3"]  # the catalogue's own id when ids are not decimal
    assert report.extra_columns == ["tags"]
    assert names(table) == ["a1.jpg", "b2.png", "c3.jpg"]


def test_json_lines_refusals_name_the_real_line_after_a_blank_one(tmp_path):
    folder = tmp_path / "shop"
    write(folder / "items.jsonl", '{"sku": "A", "photo": "a.jpg"}\n\n{"sku": "", "photo": "b.jpg"}\n')
    photo(folder / "a.jpg")
    photo(folder / "b.jpg")
    with pytest.raises(CatalogueError, match=r"items\.jsonl, line 3, column 'sku': the id is empty"):
        load_catalogue(folder, describe(table="items.jsonl", id="sku", photos=["photo"]))
    write(folder / "items.jsonl", '{"sku": "A", "photo": "a.jpg"}\n{"sku": "B", "photo": \n')
    with pytest.raises(CatalogueError, match=r"items\.jsonl.* line 2"):
        load_catalogue(folder, describe(table="items.jsonl", id="sku", photos=["photo"]))


def make_joined(folder: Path, classes: str) -> Path:
    write(folder / "items.csv", "sku,class_id,photo\n1,0,a.jpg\n2,1,b.jpg\n3,9,c.jpg\n4,1,d.jpg\n")
    write(folder / "meta/classes.csv", classes)
    for name in "abcd":
        photo(folder / f"{name}.jpg")
    return folder


JOINED = dict(table="items.csv", id="sku", photos=["photo"], labels=["class"], attributes=["coarse"],
              joins=[{"table": "meta/classes.csv", "keys": {"class_id": "Class ID"},
                      "columns": {"Class Name": "class", "Coarse Name": "coarse"}}])


def test_a_join_brings_in_columns_by_key(tmp_path):
    folder = make_joined(tmp_path / "shop", "Class Name,Class ID,Coarse Name,Unused\nApple,0,Fruit,x\n"
                                            "Pear,1,Fruit,y\nPear again,1,Fruit,z\n")  # a repeated key: first kept
    table, report = load_catalogue(folder, describe(**JOINED))
    assert table["id"].tolist() == [1, 2, 3, 4]  # the table's order, whatever the other table's
    assert table["class"].tolist() == ["Apple", "Pear", "", "Pear"]  # 9 is no class: no label
    assert table["coarse"].tolist() == ["Fruit", "Fruit", "", "Fruit"]
    assert "Unused" not in table
    assert report.rows_without_label == [3]
    assert report.extra_columns == ["class_id"]


def test_a_join_to_a_headerless_table(tmp_path):
    folder = make_joined(tmp_path / "shop", "0, Apple, Fruit\n1, Pear, Fruit\n")
    description = describe(**{**JOINED, "joins": [{"table": "meta/classes.csv", "keys": {"class_id": "cid"},
                                                   "columns": {"name": "class", "group": "coarse"},
                                                   "header": False, "column_names": ["cid", "name", "group"]}]})
    table, _ = load_catalogue(folder, description)
    assert table["class"].tolist() == ["Apple", "Pear", "", "Pear"]


def test_a_join_key_the_other_table_lacks_is_refused_naming_that_table_and_column(tmp_path):
    folder = make_joined(tmp_path / "shop", "Class Name,ID,Coarse Name\nApple,0,Fruit\n")
    with pytest.raises(CatalogueError, match=r"meta/classes\.csv has no column 'Class ID' \(join key\)"):
        load_catalogue(folder, describe(**JOINED))


def test_non_decimal_ids_are_kept_as_external_id_and_items_numbered(tmp_path):
    folder = tmp_path / "shop"
    write(folder / "items.csv", "sku,photo\nSKU-9,a.jpg\n007,b.jpg\n7,c.jpg\n")
    for name in "abc":
        photo(folder / f"{name}.jpg")
    table, _ = load_catalogue(folder, describe(table="items.csv", id="sku", photos=["photo"]))
    assert table["id"].tolist() == [1, 2, 3]
    assert table[EXTERNAL_ID_COLUMN].tolist() == ["SKU-9", "007", "7"]


def test_ids_with_leading_zeros_stay_text_and_photo_templates_read_them_as_written(tmp_path):
    # "007" as int64 would be 7 (and "007" and "7" one id): an id with a leading zero is no decimal id
    folder = tmp_path / "shop"
    write(folder / "items.csv", "sku,name\n007,Bond\n010,Ten\n")
    photo(folder / "img/007.jpg")
    photo(folder / "img/010.jpg")
    table, report = load_catalogue(folder, describe(table="items.csv", id="sku", photos=["img/{sku}.jpg"]))
    assert table[EXTERNAL_ID_COLUMN].tolist() == ["007", "010"]
    assert table["id"].tolist() == [1, 2]
    assert names(table) == ["007.jpg", "010.jpg"]
    assert report.rows_without_image == []


def test_a_photo_template_over_an_id_column_named_id_reads_the_catalogues_id_not_the_number(tmp_path):
    folder = tmp_path / "shop"
    write(folder / "items.csv", "id,name\nX9,Nine\nX3,Three\n")
    photo(folder / "images/X9.jpg")
    photo(folder / "images/X3.jpg")
    table, report = load_catalogue(folder, describe(table="items.csv", id="id", photos=["images/{id}.jpg"]))
    assert names(table) == ["X9.jpg", "X3.jpg"]
    assert table["id"].tolist() == [1, 2]
    assert report.images_without_row == []


def test_several_photo_columns_the_first_existing_one_is_the_photo(tmp_path):
    folder = tmp_path / "shop"
    write(folder / "items.csv", "sku,front,back,side\n1,f1.jpg,b1.jpg,s1.jpg\n2,f2.jpg,b2.jpg,\n"
                                "3,,b3.jpg,s3.png\n4,f4.jpg,b4.jpg,\n")
    for name in ("f1.jpg", "b1.jpg", "b2.jpg", "s3.png", "extra.jpg"):
        photo(folder / name)
    table, report = load_catalogue(folder, describe(table="items.csv", id="sku", photos=["front", "back", "side"]))
    assert table["id"].tolist() == [1, 2, 3]
    assert names(table) == ["f1.jpg", "b2.jpg", "s3.png"]  # 2: no front file; 3: no front path, no back file
    assert report.rows_without_image == [4]
    assert report.images_without_row == ["extra.jpg"]  # b1.jpg is named by a row, even if not its first photo


def test_images_without_row_are_listed_in_folder_order_whatever_the_hashing(tmp_path):
    folder = tmp_path / "shop"
    skus = ["k", "c", "x", "a", "q", "f", "m"]
    write(folder / "items.csv", "sku\n" + "\n".join(skus) + "\n")
    for sku in skus:
        photo(folder / sku / "front.jpg")
        photo(folder / sku / f"spare-{sku}.png")  # no row names it
    table, report = load_catalogue(folder, describe(table="items.csv", id="sku", photos=["{sku}/front.jpg"]))
    assert len(table) == 7
    assert report.images_without_row == [f"spare-{sku}.png" for sku in sorted(skus)]


# ---------------------------------------------------------------- folders and flat layouts


def test_folders_layout_nested_classes_and_split_folders(tmp_path):
    root = tmp_path / "photos"
    for path in ("train/Fruit/Apple/a1.jpg", "train/Fruit/Apple/a2.png", "train/Bread/b1.jpg",
                 "val/Fruit/Apple/a3.jpg", "test/Bread/b2.jpg", ".cache/x.jpg", "train/Bread/.hidden.jpg"):
        photo(root / path)
    write(root / "train/Bread/notes.txt", "not a photo")
    description = load_description(write(tmp_path / "folders.yaml", "layout: folders\n"))
    assert description.label == FOLDER_CLASS and description.attributes == (FOLDER_PARENT,)
    table, report = load_catalogue(root, description)
    assert table["path"].tolist() == ["test/Bread/b2.jpg", "train/Bread/b1.jpg", "train/Fruit/Apple/a1.jpg",
                                      "train/Fruit/Apple/a2.png", "val/Fruit/Apple/a3.jpg"]
    assert table[FOLDER_CLASS].tolist() == ["Bread", "Bread", "Apple", "Apple", "Apple"]
    assert table[FOLDER_PARENT].tolist() == ["", "", "Fruit", "Fruit", "Fruit"]
    assert table[SPLIT_GIVEN_COLUMN].tolist() == ["test", "train", "train", "train", "val"]
    assert table[EXTERNAL_ID_COLUMN].tolist() == table["path"].tolist()
    assert table["id"].tolist() == [1, 2, 3, 4, 5]
    assert table["image_path"].tolist() == [str(root / p) for p in table["path"]]
    assert report.items == report.csv_rows == 5
    assert report.rows_without_label == []
    split, _ = split_train_val_test(table, FOLDER_CLASS, 0.5, 0.5, 0, min_per_class=2)
    assert split.tolist() == ["test", "train", "train", "train", "val"]


def test_folders_layout_without_split_folders(tmp_path):
    root = tmp_path / "photos"
    for path in ("Apple/a1.jpg", "Apple/a2.jpg", "training/t1.png", "loose.jpg"):
        photo(root / path)
    (root / "Apple/empty.jpg").write_bytes(b"")
    (root / "Apple/broken.jpg").write_bytes(b"<html>gone</html>")
    table, report = load_catalogue(root, folders_description())
    assert table["path"].tolist() == ["loose.jpg", "Apple/a1.jpg", "Apple/a2.jpg", "Apple/broken.jpg",
                                      "training/t1.png"]
    assert table[FOLDER_CLASS].tolist() == ["", "Apple", "Apple", "Apple", "training"]  # only train/val/test split
    assert (table[SPLIT_GIVEN_COLUMN] == "").all()
    assert report.empty_images == ["empty.jpg"]
    assert report.rows_without_label == ["loose.jpg"]  # a photo outside any class folder: kept, counted
    kept = check_images(table, report)
    assert kept["path"].tolist() == ["loose.jpg", "Apple/a1.jpg", "Apple/a2.jpg", "training/t1.png"]
    assert [u["file"] for u in report.unreadable_images] == ["broken.jpg"]
    split, _ = split_train_val_test(kept, FOLDER_CLASS, 0.5, 0.0, 0, min_per_class=2)
    assert split[[0, 3]].tolist() == [GALLERY_SPLIT, GALLERY_SPLIT]  # no class; a class of one photo
    assert sorted(split[[1, 2]]) == ["test", "train"]


def test_flat_layout_every_photo_an_item_without_labels(tmp_path):
    root = tmp_path / "photos"
    for path in ("b.jpg", "a.png", "train/c.jpg"):
        photo(root / path)
    description = load_description(write(tmp_path / "flat.yaml", "layout: flat\n"))
    assert description.label is None
    table, report = load_catalogue(root, description)
    assert table["path"].tolist() == ["a.png", "b.jpg", "train/c.jpg"]
    assert FOLDER_CLASS not in table
    assert (table[SPLIT_GIVEN_COLUMN] == "").all()  # a train folder gives no split without class folders
    assert table["id"].tolist() == [1, 2, 3]
    assert report.rows_without_label == []
    split, split_report = split_train_val_test(table, None, 0.34, 0.0, 0, min_per_class=2)
    assert sorted(split) == ["test", "train", "train"]
    assert split_report["gallery_rows"] == 0


def test_a_folder_without_photos_is_refused(tmp_path):
    write(tmp_path / "photos/readme.txt", "nothing here")
    with pytest.raises(CatalogueError, match=r"catalogue folder .*photos holds no photo"):
        load_catalogue(tmp_path / "photos", folders_description())


# ---------------------------------------------------------------- the real Grocery Store dataset


def test_grocery_store_through_its_description():
    if not (GROCERY / "dataset/train.txt").is_file():
        pytest.fail(f"the Grocery Store dataset is not at {GROCERY}", pytrace=False)
    description = load_description(REPO / "catalogues/grocery-store.yaml")
    table, report = load_catalogue(GROCERY, description)
    assert report.items == len(table) == report.csv_rows == 5421
    assert table[SPLIT_GIVEN_COLUMN].value_counts().to_dict() == {"train": 2640, "test": 2485, "val": 296}
    assert table["class"].nunique() == 81
    # the dataset's README says 42 coarse classes; classes.csv and the photos have 43 (ids 0-42)
    assert table["coarse_class"].nunique() == 43
    assert (table["class"] != "").all() and (table["coarse_class"] != "").all()  # every class id joined
    assert table.loc[0, "class"] == "Golden-Delicious" and table.loc[0, "coarse_class"] == "Apple"
    assert report.rows_without_image == report.rows_without_label == report.images_without_row == []
    assert report.malformed_lines == [] and report.empty_images == []
    assert table[EXTERNAL_ID_COLUMN].is_unique and table["id"].tolist() == list(range(1, 5422))
    assert table["image_path"].map(lambda p: Path(p).is_file()).all()
    split, split_report = split_train_val_test(table, "class", 0.2, 0.1, 0, min_per_class=10)
    assert split.value_counts().to_dict() == {"train": 2640, "test": 2485, "val": 296}
    assert split_report["gallery_rows"] == 0


# ---------------------------------------------------------------- refusals: file, line or row, column


def test_a_column_the_description_names_but_the_table_lacks(tmp_path):
    folder = make_shop(tmp_path / "shop")
    with pytest.raises(CatalogueError) as error:
        load_catalogue(folder, describe(**{**SHOP, "attributes": ["colour", "brand"]}))
    message = str(error.value)  # the whole table lacks it: there is no line to name but the header's columns
    assert message.startswith("items.csv has no column 'brand' (attributes) that shop.yaml names")
    assert "its columns: sku, name, category, colour, photo" in message


def test_duplicate_ids_are_refused(tmp_path):
    folder = make_shop(tmp_path / "shop")
    write(folder / "items.csv", "sku,name,category,colour,photo\n10,a,x,,img/10.jpg\n11,b,x,,img/11.png\n"
                                "10,c,x,,img/12.jpg\n")
    with pytest.raises(CatalogueError, match=r"^items\.csv, lines 2, 4, column 'sku': the id '10' is used 2 times"):
        load_catalogue(folder, describe(**SHOP))


def test_duplicate_ids_across_split_files_name_each_file(tmp_path):
    folder = make_lists(tmp_path / "grocery")
    write(folder / "dataset/test.txt", "test/Pear/p2.jpg, 1, 0\ntrain/Pear/p1.jpg, 1, 0\n")
    with pytest.raises(CatalogueError) as error:
        load_catalogue(folder, describe(**LISTS))
    message = str(error.value)
    assert message.startswith("dataset/train.txt, line 3; dataset/test.txt, line 2, column 'photo'")
    assert "'train/Pear/p1.jpg' is used 2 times" in message


def test_an_empty_id_is_refused(tmp_path):
    folder = make_shop(tmp_path / "shop")
    write(folder / "items.csv", "sku,name,category,colour,photo\n10,a,x,,img/10.jpg\n ,b,x,,img/11.png\n")
    with pytest.raises(CatalogueError, match=r"^items\.csv, line 3, column 'sku': the id is empty"):
        load_catalogue(folder, describe(**SHOP))


def test_an_empty_id_in_a_later_split_file_names_that_file(tmp_path):
    folder = make_lists(tmp_path / "grocery")
    write(folder / "dataset/val.txt", "val/Apple/a3.jpg, 0, 0\n, 0, 0\n")
    with pytest.raises(CatalogueError, match=r"^dataset/val\.txt, line 2, column 'photo': the id is empty"):
        load_catalogue(folder, describe(**LISTS))


@pytest.mark.parametrize("path", ["../../etc/passwd", "img/../../outside.jpg"])
def test_a_photo_path_leaving_the_catalogue_folder_is_refused(tmp_path, path):
    folder = make_shop(tmp_path / "shop")
    photo(tmp_path / "outside.jpg")
    write(folder / "items.csv", f"sku,name,category,colour,photo\n10,a,x,,img/10.jpg\n11,b,x,,{path}\n")
    with pytest.raises(CatalogueError) as error:
        load_catalogue(folder, describe(**SHOP))
    message = str(error.value)
    assert message.startswith("row 3 of items.csv, column 'photo':")
    assert f"the path {path!r} leaves the catalogue folder" in message


def test_a_photo_template_leaving_the_folder_through_an_id_is_refused_in_a_later_file(tmp_path):
    folder = make_lists(tmp_path / "grocery")
    write(folder / "dataset/test.txt", "test/Pear/p2.jpg, 1, 0\n../../../etc/passwd, 1, 0\n")
    with pytest.raises(CatalogueError, match=r"^row 2 of dataset/test\.txt, column 'photo': the path "
                                             r"'\.\./\.\./\.\./etc/passwd' leaves"):
        load_catalogue(folder, describe(**LISTS))


def test_a_photo_link_pointing_out_of_the_folder_is_refused(tmp_path):
    folder = make_shop(tmp_path / "shop")
    (folder / "img/11.png").unlink()
    (folder / "img/11.png").symlink_to(photo(tmp_path / "elsewhere/11.png"))
    with pytest.raises(CatalogueError, match=r"^row 3 of items\.csv, column 'photo': the path 'img/11\.png' leaves"):
        load_catalogue(folder, describe(**SHOP))


def test_a_table_path_leaving_the_catalogue_folder_is_refused(tmp_path):
    make_shop(tmp_path / "shop")
    with pytest.raises(CatalogueError, match=r"column 'table': the path '\.\./items\.csv' leaves"):
        load_catalogue(tmp_path / "shop", describe(**{**SHOP, "table": "../items.csv"}))


def test_an_empty_table_is_refused(tmp_path):
    folder = make_shop(tmp_path / "shop")
    write(folder / "items.csv", "sku,name,category,colour,photo\n")
    with pytest.raises(CatalogueError, match=r"^items\.csv has no rows"):
        load_catalogue(folder, describe(**SHOP))
    write(folder / "items.csv", "")
    with pytest.raises(CatalogueError, match=r"^items\.csv is empty"):
        load_catalogue(folder, describe(**SHOP))


def test_empty_split_lists_are_refused(tmp_path):
    folder = make_lists(tmp_path / "grocery")
    for name in ("train", "val", "test"):
        write(folder / f"dataset/{name}.txt", "\n")
    with pytest.raises(CatalogueError, match=r"has no rows: a catalogue needs at least one item"):
        load_catalogue(folder, describe(**LISTS))


def test_rows_without_a_photo_file_and_empty_photos_are_set_aside_and_counted(tmp_path):
    folder = make_shop(tmp_path / "shop")
    (folder / "img/11.png").unlink()
    (folder / "img/12.jpg").write_bytes(b"")
    table, report = load_catalogue(folder, describe(**SHOP))
    assert table["id"].tolist() == [10]
    assert report.rows_without_image == [11]
    assert report.empty_images == ["12.jpg"]
    assert report.items == 1 and report.csv_rows == 3
