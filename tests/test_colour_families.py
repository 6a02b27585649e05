"""Colour families: a description merges a column's raw values into families (Navy Blue with Blue), and the look
metrics report P@5 by family beside the raw figures, only where families are declared."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.catalogue.description import DescriptionError, description_from_dict, family_values, load_description
from lookalike.evaluation.metrics import joint_labels, look_metrics

REPO = Path(__file__).resolve().parent.parent
SHOP = {"table": "items.csv", "photos": ["photo"], "labels": ["type"], "attributes": ["colour"], "colour": "colour"}
FAMILY_KEYS = {"type_colour_family_precision_at_5", "colour_family_precision_at_5"}


def refused(families, *fragments: str) -> str:
    with pytest.raises(DescriptionError) as error:
        description_from_dict({**SHOP, "families": families}, "shop.yaml")
    message = str(error.value)
    assert message.startswith("shop.yaml: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ---------------------------------------------------------------- the description


def test_families_are_read_and_map_raw_values_unlisted_ones_being_their_own():
    description = description_from_dict({**SHOP, "families": {"colour": {"Blue": ["Blue", "Navy Blue"],
                                                                          "White": "Off White"}}})
    assert description.families_of("colour") == {"Blue": ("Blue", "Navy Blue"), "White": ("Off White",)}
    assert description.families_of("type") == {} and description.families_of(None) == {}
    found = family_values(["Navy Blue", "Blue", "Off White", "White", "Red", ""], description.families_of("colour"))
    assert found == ["Blue", "Blue", "White", "White", "Red", ""]  # White: named like its family, so in it
    assert description_from_dict(description.to_dict()).families == description.families  # the YAML form


def test_the_fashion_description_declares_colour_families():
    description = load_description(REPO / "catalogues/kaggle-fashion.yaml")
    families = description.families_of(description.colour)
    assert family_values(["Navy Blue", "Off White", "Cream", "Charcoal", "Grey Melange", "Steel", "Silver", "Multi"],
                         families) == ["Blue", "White", "White", "Grey", "Grey", "Grey", "Grey", "Multi"]


def test_a_value_in_two_families_is_refused_naming_file_key_and_both():
    refused({"colour": {"Blue": ["Blue", "Teal"], "Green": ["Green", "Teal"]}},
            "'families.colour'", "'Teal' is in two families, Blue and Green")


def test_a_family_named_like_another_familys_value_is_refused():
    refused({"colour": {"Blue": ["Navy Blue"], "Azure": ["Blue"]}}, "'families.colour'", "family 'Blue'",
            "raw value of family Azure")


@pytest.mark.parametrize(("families", "fragment"), [
    ({"colour": {"White": ["White", None]}}, "'families.colour.White': None is not a string"),
    ({"colour": {"White": ["White", 7]}}, "'families.colour.White': 7 is not a string"),
    ({"colour": {True: ["Yes"]}}, "family name True must be a string"),
    ({"colour": {"White": {"a": 1}}}, "'families.colour.White' must be a list"),
    ({"colour": ["White"]}, "'families.colour' must map each family name"),
    (["colour"], "'families' maps a column to its families"),
    ({"hue": {"White": ["White"]}}, "'families.hue': 'hue' must be one of labels or attributes"),
])
def test_malformed_families_are_refused_by_key(families, fragment):
    refused(families, fragment)


# ---------------------------------------------------------------- the metrics


def table_and_embeddings() -> tuple[pd.DataFrame, np.ndarray]:
    """Query row 0 (Shirts, Navy Blue); by cosine the others rank 1, 3, 4, 2, 5 (angles 0.1 ... 0.5)."""
    table = pd.DataFrame({"type": ["Shirts", "Shirts", "Shirts", "Shirts", "Jeans", "Jeans"],
                          "colour": ["Navy Blue", "Blue", "Navy Blue", "Red", "Blue", "White"]})
    angles = np.array([0.0, 0.1, 0.4, 0.2, 0.3, 0.5])
    return table, np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def test_family_precision_by_hand_differs_from_raw():
    table, embeddings = table_and_embeddings()
    scores = look_metrics(embeddings, table, np.array([0]), "type", "colour",
                          colour_families={"Blue": ["Blue", "Navy Blue"]})
    # ranked [1, 3, 4, 2, 5]. Raw: Shirts|Navy Blue is row 2 alone (rank 4); Navy Blue alone, row 2 too
    assert scores["type_colour_precision_at_5"] == pytest.approx(1 / 5)
    assert scores["colour_precision_at_5"] == pytest.approx(1 / 5)
    # by family: Shirts|Blue is rows 1 and 2 (ranks 1, 4); the Blue family alone rows 1, 4, 2 (ranks 1, 3, 4)
    assert scores["type_colour_family_precision_at_5"] == pytest.approx(2 / 5)
    assert scores["colour_family_precision_at_5"] == pytest.approx(3 / 5)
    assert list(joint_labels(table, ["type", "colour"], {"colour": {"Blue": ["Blue", "Navy Blue"]}})) == [
        "Shirts|Blue", "Shirts|Blue", "Shirts|Blue", "Shirts|Red", "Jeans|Blue", "Jeans|White"]


def test_families_that_merge_nothing_give_the_raw_figures():
    table, embeddings = table_and_embeddings()
    queries = np.arange(6)
    scores = look_metrics(embeddings, table, queries, "type", "colour", colour_families={"Red": ["Red"]})
    assert scores["type_colour_family_precision_at_5"] == pytest.approx(scores["type_colour_precision_at_5"])
    assert scores["colour_family_precision_at_5"] == pytest.approx(scores["colour_precision_at_5"])


def test_no_family_figures_without_declared_colour_families():
    table, embeddings = table_and_embeddings()
    raw = look_metrics(embeddings, table, np.array([0]), "type", "colour")
    assert not FAMILY_KEYS & set(raw) and "colour_precision_at_5" in raw
    assert not FAMILY_KEYS & set(look_metrics(embeddings, table, np.array([0]), "type", "colour", colour_families={}))
    no_colour = look_metrics(embeddings, table, np.array([0]), "type", None,
                             colour_families={"Blue": ["Blue", "Navy Blue"]})
    assert not FAMILY_KEYS & set(no_colour)
    description = description_from_dict(SHOP)  # no families: the evaluate stage passes none
    assert description.families_of(description.colour) == {}


# ---------------------------------------------------------------- the README's table


def test_results_table_shows_the_family_columns_where_present(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import results_table
    finally:
        sys.path.remove(str(REPO / "scripts"))
    base = {"precision_at_5": 0.5, "type_colour_precision_at_5": 0.2, "colour_precision_at_5": 0.3}
    families = {"type_colour_family_precision_at_5": 0.25, "colour_family_precision_at_5": 0.45}
    for name, values in (("with", {**base, **families}), ("without", base)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"trained": values, "pretrained": values, "gain": {k: 0.0 for k in values}}))
    results_table.main(str(tmp_path / "with.json"))
    header, _, *rows = capsys.readouterr().out.splitlines()
    assert header.endswith("| colour P@5 | type+colour family P@5 | colour family P@5 |")
    assert rows[1].startswith("| trained (default) |") and rows[1].endswith("| 0.300 | 0.250 | 0.450 |")
    results_table.main(str(tmp_path / "without.json"))
    assert "family" not in capsys.readouterr().out
