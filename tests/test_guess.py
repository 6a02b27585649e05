"""lookalike describe: a first description of a catalogue nobody described, each guess said, that builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PIL import Image

from lookalike.catalogue.description import load_description
from lookalike.catalogue.guess import description_yaml, guess_description, point_params_at
from lookalike.catalogue.reading import CatalogueError, load_catalogue
from lookalike.cli import main


def photo(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 16), colour).save(path)


def test_a_kaggle_like_table_is_guessed_and_the_guess_reads_every_row(tmp_path):
    lines = ["id,gender,productType,colour,year,name"]
    for i in range(1, 41):
        kind = ("Shirts", "Shoes", "Bags", "Watches")[i % 4]
        lines.append(f"{i},{'Men' if i % 2 else 'Women'},{kind},{('Red', 'Blue')[i % 2]},2012,Plain {kind} number {i}")
        photo(tmp_path / "images" / f"{i}.jpg")
    lines.append("41,Men,Shirts,Red,2012,A shirt, with a comma")  # the rest of the line is the name
    photo(tmp_path / "images" / "41.jpg")
    (tmp_path / "styles.csv").write_text("\n".join(lines) + "\n")
    description, notes = guess_description(tmp_path)
    assert description.id == "id"
    assert description.photos == ("images/{id}.jpg",)
    assert description.labels == ("productType",)
    assert description.colour == "colour"
    assert description.title == "name"
    assert description.free_text_column == "name"
    assert "year" not in description.words  # numbers are no words
    assert any(note.startswith("labels: [productType]") for note in notes)
    table, report = load_catalogue(tmp_path, description)
    assert len(table) == 41 and report.repaired_lines == [42]
    assert table.set_index("id").loc[41, "name"] == "A shirt, with a comma"


def test_a_table_with_a_column_of_photo_paths(tmp_path):
    rows = ["sku,category,picture"] + [f"A{i},{('Tea', 'Coffee')[i % 2]},pics/{i}.png" for i in range(12)]
    for i in range(12):
        photo(tmp_path / "pics" / f"{i}.png")
    (tmp_path / "items.csv").write_text("\n".join(rows) + "\n")
    description, _ = guess_description(tmp_path)
    assert (description.id, description.photos, description.labels) == ("sku", ("picture",), ("category",))
    table, _ = load_catalogue(tmp_path, description)
    assert sorted(table["external_id"]) == sorted(f"A{i}" for i in range(12))


@pytest.mark.parametrize(("name", "separator"), [("items.tsv", "\t"), ("items.csv", ";"), ("items.csv", "\t")])
def test_a_table_separated_by_tabs_or_semicolons_is_guessed_and_read(tmp_path, name, separator):
    rows = [separator.join(["sku", "name", "category", "price", "picture"])] + [
        separator.join([f"A{i}", f"Shirt, size {i}", ("Tea", "Coffee")[i % 2], f"{i},50", f"pics/{i}.png"])
        for i in range(12)]
    for i in range(12):
        photo(tmp_path / "pics" / f"{i}.png")
    (tmp_path / name).write_text("\n".join(rows) + "\n")
    description, _ = guess_description(tmp_path)
    assert (description.id, description.photos, description.labels) == ("sku", ("picture",), ("category",))
    table, report = load_catalogue(tmp_path, description)
    assert len(table) == 12 and report.malformed_lines == [] and report.repaired_lines == []
    first = table.set_index("external_id").loc["A1"]
    assert (first["name"], first["price"]) == ("Shirt, size 1", "1,50")  # commas inside fields stay text


def test_folders_and_loose_photos_are_told_apart(tmp_path):
    for name in ("a/1.jpg", "a/2.jpg", "b/3.jpg", "b/4.jpg"):
        photo(tmp_path / "classes" / name)
    for name in ("x.jpg", "y.jpg", "z.png"):
        photo(tmp_path / "loose" / name)
    assert guess_description(tmp_path / "classes")[0].layout == "folders"
    loose, notes = guess_description(tmp_path / "loose")
    assert loose.layout == "flat" and loose.labels == () and "3 photos" in notes[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogueError, match="no table .* and no photo"):
        guess_description(tmp_path / "empty")


def test_the_written_description_says_each_guess_and_loads_back(tmp_path):
    for name in ("a/1.jpg", "b/2.jpg"):
        photo(tmp_path / "cat" / name)
    description, notes = guess_description(tmp_path / "cat")
    text = description_yaml(description, notes, tmp_path / "cat")
    assert text.startswith("# Catalogue description guessed by `lookalike describe")
    assert "#   layout: folders" in text
    (tmp_path / "d.yaml").write_text(text)
    assert load_description(tmp_path / "d.yaml").roles() == description.roles()


def test_describe_use_points_params_at_the_catalogue_keeping_its_comments(tmp_path, capsys):
    for name in ("x.jpg", "y.jpg"):
        photo(tmp_path / "photos" / name)
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  catalogue_dir: old/folder  # where\n  catalogue: catalogues/old.yaml  # what\n"
                      "subset:\n  size: 5\n")
    point_params_at(params, str(tmp_path / "photos"), "catalogues/photos.yaml")
    assert params.read_text() == (f"data:\n  catalogue_dir: {tmp_path / 'photos'}  # where\n"
                                  "  catalogue: catalogues/photos.yaml  # what\nsubset:\n  size: 5\n")
    assert yaml.safe_load(params.read_text())["subset"]["size"] == 5
    out = tmp_path / "photos.yaml"
    assert main(["describe", str(tmp_path / "photos"), "--out", str(out)]) == 0
    assert load_description(out).layout == "flat"
    assert "wrote" in capsys.readouterr().out
