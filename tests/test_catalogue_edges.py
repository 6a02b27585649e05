"""Catalogue edges that once gave a pandas traceback or a silent wrong answer: a join naming a column the table
has, a table column called id beside the description's id or named like a column the reader writes, lines of
several table files (joined ones too), and one rule for the values that are no label for the reader and for
training."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from test_catalogue_layouts import describe, photo, write  # the layouts' own scratch-catalogue helpers

from lookalike.catalogue.description import DescriptionError
from lookalike.catalogue.reading import MISSING_VALUES, CatalogueError, load_catalogue, missing

# ---------------------------------------------------------------- 1. one list of missing labels


SPELLINGS = [*MISSING_VALUES, "  NaN ", "NA", "N/A", "None", "NULL", None]  # letter case and spaces aside


@pytest.mark.parametrize("value", SPELLINGS, ids=repr)
def test_training_reads_every_value_the_reader_calls_missing_as_missing(value):
    from lookalike.model import training

    table = pd.DataFrame({"type": ["Shirts", value, "Shoes"], "colour": ["Blue", "Red", value]})
    assert training.attribute_labels(table, "type").tolist() == ["Shirts", "", "Shoes"]
    assert training.attribute_labels(table, "type+colour").tolist() == ["Shirts|Blue", "", ""]


@pytest.mark.parametrize("value", ["N/A", "na", "None", " null "], ids=repr)
def test_a_missing_label_in_any_letter_case_is_no_label_for_the_reader_and_the_split(tmp_path, value):
    from lookalike.catalogue.subset import label_values

    folder = tmp_path / "shop"
    write(folder / "items.csv", f"sku,category,photo\n1,Shirts,a.jpg\n2,{value},b.jpg\n")
    for name in "ab":
        photo(folder / f"{name}.jpg")
    table, report = load_catalogue(folder, describe(table="items.csv", id="sku", photos=["photo"],
                                                    labels=["category"]))
    assert report.rows_without_label == [2]
    assert label_values(table, "category").tolist() == ["Shirts", ""]


def test_a_word_that_only_looks_like_a_missing_value_is_a_label():
    assert missing(pd.Series(["Nan Blue", "nana", "NA ", "none"])).tolist() == [False, False, True, True]


# ---------------------------------------------------------------- 2. a join naming a column the table has


def make_joined(folder: Path) -> Path:
    write(folder / "items.csv", "sku,class_id,class,photo\n1,0,old,a.jpg\n2,1,old,b.jpg\n3,9,old,c.jpg\n")
    write(folder / "classes.csv", "Class ID,Class Name\n0,Apple\n1,Pear\n")
    for name in "abc":
        photo(folder / f"{name}.jpg")
    return folder


JOINED = dict(table="items.csv", id="sku", photos=["photo"], labels=["class"])


@pytest.mark.parametrize(("theirs", "name"), [("Class Name", "class"), ("Class Name", "class_id"),
                                               ("Class ID", "class_id")])
def test_a_joined_column_named_like_a_column_of_the_table_is_refused_naming_both(tmp_path, theirs, name):
    folder = make_joined(tmp_path / "shop")
    join = {"table": "classes.csv", "keys": {"class_id": "Class ID"}, "columns": {theirs: name}}
    with pytest.raises(CatalogueError) as error:
        load_catalogue(folder, describe(**{**JOINED, "joins": [join]}))
    assert str(error.value) == (f"classes.csv, column '{theirs}': shop.yaml joins it as '{name}', a column the "
                                "catalogue already has: give it another name in the join's columns")


def test_a_second_join_may_not_reuse_a_name_the_first_brought_in(tmp_path):
    folder = make_joined(tmp_path / "shop")
    join = {"table": "classes.csv", "keys": {"class_id": "Class ID"}, "columns": {"Class Name": "fruit"}}
    with pytest.raises(CatalogueError, match=r"^classes\.csv, column 'Class Name': shop\.yaml joins it as 'fruit'"):
        load_catalogue(folder, describe(**{**JOINED, "joins": [join, join]}))


def test_a_join_key_may_also_be_brought_in_as_a_column_of_its_own(tmp_path):
    folder = make_joined(tmp_path / "shop")
    join = {"table": "classes.csv", "keys": {"class_id": "Class ID"},
            "columns": {"Class ID": "known_class_id", "Class Name": "fruit"}}
    table, _ = load_catalogue(folder, describe(**{**JOINED, "joins": [join]}))
    assert table["known_class_id"].tolist() == ["0", "1", ""]  # 9 is in no row of classes.csv
    assert table["fruit"].tolist() == ["Apple", "Pear", ""]
    assert table["class"].tolist() == ["old"] * 3


def test_two_columns_of_a_join_under_one_name_are_refused_by_the_description():
    join = {"table": "classes.csv", "keys": {"class_id": "Class ID"}, "columns": {"Class Name": "x", "Class ID": "x"}}
    with pytest.raises(DescriptionError, match=r"^shop\.yaml: join classes\.csv: columns names 'x' for two columns"):
        describe(**{**JOINED, "joins": [join]})


# ---------------------------------------------------------------- 3. a table column called id beside the id


def make_with_id_column(folder: Path) -> Path:
    write(folder / "items.csv", "id,sku,photo\n1,10,a.jpg\n2,11,b.jpg\n")
    for name in ("a", "b", "img/1", "img/2", "img/10", "img/11"):
        photo(folder / f"{name}.jpg")
    return folder


@pytest.mark.parametrize(("raw", "ours", "role"), [
    (dict(id="sku", photos=["img/{id}.jpg"]), "names 'sku' as the id", "photos"),
    (dict(id="sku", photos=["photo"], attributes=["id"]), "names 'sku' as the id", "attributes"),
    (dict(photos=["photo"], title="id"), "numbers the items (it has no 'id' key)", "title"),
])
def test_a_role_reading_the_tables_id_column_beside_another_id_is_refused_as_ambiguous(tmp_path, raw, ours, role):
    folder = make_with_id_column(tmp_path / "shop")
    with pytest.raises(CatalogueError) as error:
        load_catalogue(folder, describe(table="items.csv", **raw))
    assert str(error.value) == (f"items.csv, column 'id': shop.yaml {ours} but reads this column as {role}: the "
                                "items' id is called id too, so which one is meant is ambiguous; make it the id "
                                "(id: id) or rename the column")


def test_the_named_id_column_is_the_id_and_replacing_an_id_column_without_a_role_is_said(tmp_path, caplog):
    folder = make_with_id_column(tmp_path / "shop")
    with caplog.at_level(logging.WARNING, logger="lookalike.catalogue.reading"):
        table, _ = load_catalogue(folder, describe(table="items.csv", id="sku", photos=["photo"]))
    assert table["id"].tolist() == [10, 11]
    assert [Path(p).name for p in table["image_path"]] == ["a.jpg", "b.jpg"]
    assert caplog.messages == ["items.csv, column 'id': shop.yaml names 'sku' as the id; this column has no role "
                               "and the items' id replaces it"]


def test_an_id_column_that_is_the_id_is_read_without_a_word(tmp_path, caplog):
    folder = make_with_id_column(tmp_path / "shop")
    with caplog.at_level(logging.WARNING, logger="lookalike.catalogue.reading"):
        table, _ = load_catalogue(folder, describe(table="items.csv", id="id", photos=["img/{id}.jpg"],
                                                   attributes=["sku"]))
    assert table["id"].tolist() == [1, 2] and table["sku"].tolist() == ["10", "11"]
    assert caplog.messages == []


# ---------------------------------------------------------------- 4. table columns named like the reader's own


def make_with_columns(folder: Path, header: str, *rows: str) -> Path:
    write(folder / "items.csv", "\n".join([header, *rows]) + "\n")
    for name in "ab":
        photo(folder / f"{name}.jpg")
    return folder


@pytest.mark.parametrize(("header", "rows", "raw", "column", "role", "meaning"), [
    ("sku,image_path,photo", ("1,http://shop/a,a.jpg", "2,http://shop/b,b.jpg"), dict(card=["image_path"]),
     "image_path", "card", "each item's first photo file"),
    ("sku,split_given,photo", ("1,x,a.jpg", "2,y,b.jpg"), dict(labels=["split_given"]),
     "split_given", "labels", "the split each table file gives"),
    ("sku,external_id,photo", ("A,SUP-1,a.jpg", "B,SUP-2,b.jpg"), dict(filters=["external_id"]),
     "external_id", "filters", "the items' own ids where they are not decimal"),
])
def test_a_role_reading_a_column_the_reader_writes_is_refused(tmp_path, header, rows, raw, column, role, meaning):
    folder = make_with_columns(tmp_path / "shop", header, *rows)
    with pytest.raises(CatalogueError) as error:
        load_catalogue(folder, describe(table="items.csv", id="sku", photos=["photo"], **raw))
    assert str(error.value) == (f"items.csv, column '{column}': shop.yaml reads it as {role}, but the reader "
                                f"writes {meaning} under that name, so the role would not read the catalogue's "
                                "values: rename the column")


@pytest.mark.parametrize(("header", "rows", "column"), [
    ("sku,image_path,photo", ("1,http://shop/a,a.jpg", "2,http://shop/b,b.jpg"), "image_path"),
    ("sku,more_image_paths,photo", ("1,zz,a.jpg", "2,,b.jpg"), "more_image_paths"),
    ("sku,external_id,photo", ("A,SUP-1,a.jpg", "B,SUP-2,b.jpg"), "external_id"),
    ("sku,split_given,photo", ("1,train,a.jpg", "2,test,b.jpg"), "split_given"),
])
def test_a_column_the_reader_writes_without_a_role_is_left_out_and_said(tmp_path, caplog, header, rows, column):
    folder = make_with_columns(tmp_path / "shop", header, *rows)
    with caplog.at_level(logging.WARNING, logger="lookalike.catalogue.reading"):
        table, _ = load_catalogue(folder, describe(table="items.csv", id="sku", photos=["photo"]))
    assert [Path(p).name for p in table["image_path"]] == ["a.jpg", "b.jpg"]
    assert "more_image_paths" not in table  # neither item has a second photo
    assert table.get("external_id", pd.Series(["A", "B"])).tolist() == ["A", "B"]  # the skus, not SUP-1
    assert table["split_given"].tolist() == ["", ""]  # one file that gives no split
    assert len(caplog.messages) == 1 and caplog.messages[0].startswith(
        f"items.csv, column '{column}': it has no role in shop.yaml and the reader writes ")


def test_the_photos_may_read_image_path_and_an_external_id_beside_decimal_ids_stays_the_items_own(tmp_path, caplog):
    folder = make_with_columns(tmp_path / "shop", "sku,external_id,image_path,more_image_paths",
                               "1,SKU-A,a.jpg,", "2,SKU-B,b.jpg,")
    with caplog.at_level(logging.WARNING, logger="lookalike.catalogue.reading"):
        table, _ = load_catalogue(folder, describe(table="items.csv", id="sku",
                                                   photos=["image_path", "more_image_paths"]))
    assert table["id"].tolist() == [1, 2] and table["external_id"].tolist() == ["SKU-A", "SKU-B"]
    assert [Path(p).name for p in table["image_path"]] == ["a.jpg", "b.jpg"]
    assert "more_image_paths" not in table  # read as photos, none there: not left as the raw column
    assert caplog.messages == []


# ---------------------------------------------------------------- 5. lines of several table files


def test_skipped_and_repaired_lines_of_several_files_name_their_file(tmp_path):
    folder = tmp_path / "shop"
    write(folder / "train.csv", "sku,photo,name\n1,a.jpg,Shirt, blue\n2,b.jpg\n")
    write(folder / "test.csv", "sku,photo,name\n3,c.jpg,Cap\n4\n5,e.jpg,Shoe, red, left\n")
    for name in "abce":
        photo(folder / f"{name}.jpg")
    description = describe(table=[{"path": "train.csv", "split": "train"}, {"path": "test.csv", "split": "test"}],
                           id="sku", photos=["photo"], free_text_column="name")
    table, report = load_catalogue(folder, description)
    assert table["sku"].tolist() == ["1", "3", "5"]
    assert report.malformed_lines == ["train.csv, line 3", "test.csv, line 3"]
    assert report.repaired_lines == ["train.csv, line 2", "test.csv, line 4"]
    assert report.to_dict()["n_malformed_lines"] == 2


def test_a_single_table_files_lines_stay_numbers(tmp_path):
    folder = tmp_path / "shop"
    write(folder / "items.csv", "sku,photo,name\n1,a.jpg,Shirt, blue\n2,b.jpg\n")
    photo(folder / "a.jpg")
    _, report = load_catalogue(folder, describe(table="items.csv", id="sku", photos=["photo"],
                                                free_text_column="name"))
    assert report.malformed_lines == [3] and report.repaired_lines == [2]


def test_a_joined_tables_malformed_lines_are_counted_and_named_by_file(tmp_path):
    folder = make_joined(tmp_path / "shop")  # items.csv joined with classes.csv by class id
    write(folder / "items.csv", "sku,class_id,photo\n1,0,a.jpg\n2,1\n3,1,c.jpg\n")
    write(folder / "classes.csv", "Class ID,Class Name\n0,Apple\n1,Pear,Green\n")
    join = {"table": "classes.csv", "keys": {"class_id": "Class ID"}, "columns": {"Class Name": "fruit"}}
    table, report = load_catalogue(folder, describe(table="items.csv", id="sku", photos=["photo"],
                                                    labels=["fruit"], joins=[join]))
    assert report.malformed_lines == ["items.csv, line 3", "classes.csv, line 3"]
    assert table["fruit"].tolist() == ["Apple", ""]  # class 1's line was skipped: item 3 has no label
    assert report.rows_without_label == [3]
