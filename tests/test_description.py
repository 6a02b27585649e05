"""lookalike.catalogue.description: a description is checked before anything is read, and every problem names
the description's file and the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lookalike.catalogue.description import (
    CatalogueDescription,
    CatalogueRoles,
    DescriptionError,
    Join,
    TableFile,
    description_from_dict,
    folders_description,
    load_description,
    template_fields,
)

REPO = Path(__file__).resolve().parent.parent
MINIMAL = {"table": "items.csv", "photos": ["photo"]}


def refused(raw, *fragments: str) -> str:
    with pytest.raises(DescriptionError) as error:
        description_from_dict(raw, "shop.yaml")
    message = str(error.value)
    assert message.startswith("shop.yaml: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ---------------------------------------------------------------- refusals naming the key


@pytest.mark.parametrize("key", ["lables", "tables", "source", "photo"])
def test_an_unknown_key_is_refused_by_name(key):
    # tables and source are fields of the dataclass, not keys of the YAML (table is; source is the file read)
    message = refused({**MINIMAL, key: "x"}, f"unknown key(s) {key} (known: ")
    assert "table, " in message and "labels" in message


def test_a_layout_that_does_not_exist_is_refused():
    refused({**MINIMAL, "layout": "grid"}, "layout must be one of table, folders, flat, not 'grid'")


@pytest.mark.parametrize("key", ["colour", "look"])
def test_colour_and_look_must_be_labels_or_attributes(key):
    value = "hue" if key == "colour" else ["hue"]
    refused({**MINIMAL, "labels": ["type"], "attributes": ["gender"], key: value}, "'hue'", key,
            "must be one of labels or attributes")
    description_from_dict({**MINIMAL, "labels": ["type"], "attributes": ["hue"], key: value})  # and it may be


def test_a_table_layout_needs_a_table_and_photos():
    refused({"photos": ["photo"]}, "needs 'table'")
    refused({"table": "items.csv"}, "needs 'photos'")


def test_folders_and_flat_layouts_read_no_table():
    refused({"layout": "folders", "table": "items.csv"}, "layout folders reads no table; remove 'table'")
    refused({"layout": "flat", "table": "items.csv"}, "layout flat reads no table")


def test_a_headerless_table_needs_column_names():
    refused({**MINIMAL, "header": False}, "'column_names'")


def test_a_table_files_split_must_be_a_split():
    refused({"table": [{"path": "a.txt", "split": "training"}], "photos": ["p"]}, "table a.txt: split must be one of")
    refused({"table": [{"split": "train"}], "photos": ["p"]}, "each 'table' entry is a path or")


def test_split_values_map_to_train_val_test():
    refused({**MINIMAL, "split": "part", "split_values": {"A": "training"}}, "split_values maps")
    refused({**MINIMAL, "split": "part", "split_values": ["train"]}, "split_values maps")


def test_a_join_needs_table_keys_and_columns():
    refused({**MINIMAL, "joins": [{"table": "b.csv", "on": {"a": "b"}, "columns": {"c": "d"}}]},
            "each join needs table, keys")
    refused({**MINIMAL, "joins": [{"table": "b.csv", "keys": {"a": "b"}}]}, "each join needs")


@pytest.mark.parametrize("key", ["labels", "attributes", "photos", "words"])
def test_column_lists_must_be_names(key):
    refused({**MINIMAL, key: {"a": 1}}, f"'{key}' must be a column name or a list of them")


@pytest.mark.parametrize("key", ["id", "title", "colour"])
def test_single_columns_must_be_a_name(key):
    refused({**MINIMAL, key: ["a", "b"]}, f"'{key}' must be a column name")


def test_a_description_must_be_a_mapping():
    refused(["table", "items.csv"], "expected a mapping of keys")


def test_load_description_names_the_file(tmp_path):
    with pytest.raises(DescriptionError, match="catalogue description not found: .*nowhere.yaml"):
        load_description(tmp_path / "nowhere.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("table: [unclosed\n")
    with pytest.raises(DescriptionError, match=r"bad\.yaml is not valid YAML"):
        load_description(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("table: items.csv\nphotos: [photo]\nlabel: type\n")
    with pytest.raises(DescriptionError, match=r"^.*wrong\.yaml: unknown key\(s\) label "):
        load_description(wrong)


# ---------------------------------------------------------------- what a valid description means


def test_a_single_value_is_a_list_of_one_and_numbers_are_names():
    description = description_from_dict({"table": "items.csv", "photos": "images/{id}.jpg", "labels": "type",
                                         "id": 7, "card": [1, "b"]})
    assert description.photos == ("images/{id}.jpg",)
    assert description.labels == ("type",)
    assert description.id == "7"
    assert description.card == ("1", "b")
    assert description.tables == (TableFile("items.csv"),)


def test_joins_keys_map_this_tables_column_to_the_others():
    description = description_from_dict({**MINIMAL, "joins": [
        {"table": "classes.txt", "keys": {"class_id": 0}, "columns": {"name": "class"}, "header": False,
         "column_names": ["0", "name"]}]})
    assert description.joins == (Join("classes.txt", {"class_id": "0"}, {"name": "class"}, False, ("0", "name")),)


def test_a_folders_description_without_roles_gets_the_folder_roles():
    description = description_from_dict({"layout": "folders"}, "folders.yaml")
    assert replace(description, source="") == folders_description()
    assert description.label == "class" and description.attributes == ("parent_class",)
    own = description_from_dict({"layout": "folders", "labels": ["parent_class"]})
    assert own.labels == ("parent_class",) and own.attributes == ()  # roles given: nothing added


def test_a_flat_description_has_no_label():
    description = description_from_dict({"layout": "flat"})
    assert description.label is None and description.relevance_columns == ()


@pytest.mark.parametrize("name", ["kaggle-fashion.yaml", "grocery-store.yaml"])
def test_the_shipped_descriptions_survive_to_dict_and_back(name):
    description = load_description(REPO / "catalogues" / name)
    again = description_from_dict(description.to_dict(), description.source)
    assert again == description


def test_the_fashion_description_roles():
    description = load_description(REPO / "catalogues/kaggle-fashion.yaml")
    assert description.label == "articleType"
    assert description.colour == "baseColour" and description.look == ("gender",)
    assert description.free_text_column == "productDisplayName"
    assert template_fields(description.photos[0]) == ["id"]
    assert description.relevance_columns[0] == "articleType"
    assert description.metadata_columns()[0] == "productDisplayName"  # the title first
    assert len(description.metadata_columns()) == len(set(description.metadata_columns()))


def test_roles_travel_through_a_manifest():
    description = load_description(REPO / "catalogues/grocery-store.yaml")
    roles = description.roles()
    manifest = {"params": {"catalogue": roles.to_manifest()}}
    assert CatalogueRoles.from_manifest(manifest) == roles
    assert roles.label == "class"
    old = CatalogueRoles.from_manifest({"params": {"label_column": "articleType"}})  # a build before descriptions
    assert old.labels == ("articleType",) and old.metadata == ("articleType",) and old.filters == ()
    assert CatalogueRoles.from_manifest({"params": {}}) == CatalogueRoles()


def test_defaults_are_a_table_with_a_header_and_photos_at_the_root():
    description = CatalogueDescription()
    assert description.layout == "table" and description.header and description.photo_root == "."
