"""lookalike.catalogue.reading: the quirks of the Kaggle styles.csv, on tiny hand-written catalogues."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lookalike.catalogue.reading import CatalogueError, check_images, images_set_aside, load_catalogue, read_styles

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"


def row(item_id: int, article: str = "Tshirts", colour: str = "Blue", year: str = "2012", usage: str = "Casual",
        name: str = "Plain Tee") -> str:
    return f"{item_id},Men,Apparel,Topwear,{article},{colour},Summer,{year},{usage},{name}"


def write_csv(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "styles.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_catalogue(folder: Path, lines: list[str], image_names: list[str]) -> Path:
    write_csv(folder, lines)
    images = folder / "images"
    images.mkdir()
    for name in image_names:
        (images / name).write_bytes(b"not decoded by load_catalogue")
    return folder


# ---------------------------------------------------------------- read_styles


def test_unquoted_commas_in_display_name_are_repaired_on_the_first_nine_commas(tmp_path):
    path = write_csv(tmp_path, [HEADER, row(1), row(2, name="Puma Men, Women Tee, Red"), row(3)])
    table, report = read_styles(path)
    assert report.repaired_lines == [3]  # 1-based: header is line 1
    assert len(table) == 3
    repaired = table.set_index("id").loc[2]
    assert repaired["productDisplayName"] == "Puma Men, Women Tee, Red"
    assert repaired["usage"] == "Casual"
    assert repaired["articleType"] == "Tshirts"


def test_quoted_display_name_with_commas_is_parsed_not_repaired(tmp_path):
    path = write_csv(tmp_path, [HEADER, row(1, name='"Tee, blue"')])
    table, report = read_styles(path)
    assert report.repaired_lines == []
    assert table.loc[0, "productDisplayName"] == "Tee, blue"


def test_literal_na_is_kept_as_text(tmp_path):
    path = write_csv(tmp_path, [HEADER, row(1, colour="NA", usage="NA", name="NA")])
    table, _ = read_styles(path)
    assert table.loc[0, "baseColour"] == "NA"
    assert table.loc[0, "usage"] == "NA"
    assert table.loc[0, "productDisplayName"] == "NA"
    for column in ("baseColour", "usage", "productDisplayName"):
        assert not table[column].isna().any()


def test_empty_year_becomes_missing_in_nullable_int_column(tmp_path):
    path = write_csv(tmp_path, [HEADER, row(1, year="2012"), row(2, year="")])
    table, _ = read_styles(path)
    assert table["year"].dtype == pd.Int64Dtype()
    years = table.set_index("id")["year"]
    assert years.loc[1] == 2012
    assert years.loc[2] is pd.NA


def test_id_is_int64(tmp_path):
    table, _ = read_styles(write_csv(tmp_path, [HEADER, row(7), row(11)]))
    assert table["id"].dtype == "int64"
    assert table["id"].tolist() == [7, 11]


def test_empty_text_fields_stay_empty_strings(tmp_path):
    path = write_csv(tmp_path, [HEADER, "1,Men,Apparel,Topwear,Tshirts,Blue,,2012,,Tee"])
    table, _ = read_styles(path)
    assert table.loc[0, "season"] == ""
    assert table.loc[0, "usage"] == ""


def test_duplicate_ids_are_counted_and_first_row_kept(tmp_path):
    path = write_csv(tmp_path, [HEADER, row(1, name="first"), row(2), row(1, name="second"), row(1, name="third")])
    table, report = read_styles(path)
    assert report.duplicate_ids == [1]
    assert table["id"].tolist() == [1, 2]
    assert table.set_index("id").loc[1, "productDisplayName"] == "first"
    assert report.csv_rows == 4


def test_lines_with_too_few_fields_are_counted_as_malformed(tmp_path):
    path = write_csv(tmp_path, [HEADER, row(1), "2,Men,Apparel,Topwear", row(3)])
    table, report = read_styles(path)
    assert report.malformed_lines == [3]
    assert table["id"].tolist() == [1, 3]


def test_non_numeric_id_is_counted_as_malformed(tmp_path):
    path = write_csv(tmp_path, [HEADER, row(1), row(2).replace("2,", "x2,", 1)])
    table, report = read_styles(path)
    assert report.malformed_lines == [3]
    assert table["id"].tolist() == [1]


def test_non_numeric_id_line_number_is_right_after_a_skipped_line(tmp_path):
    # line 2: ok, line 3: too few fields (skipped), line 4: non-numeric id
    path = write_csv(tmp_path, [HEADER, row(1), "2,Men", row(3).replace("3,", "x3,", 1)])
    _, report = read_styles(path)
    assert sorted(report.malformed_lines) == [3, 4]


def test_missing_label_column_raises_naming_the_column(tmp_path):
    path = write_csv(tmp_path, ["id,gender,productDisplayName", "1,Men,Tee"])
    with pytest.raises(CatalogueError, match="articleType"):
        read_styles(path)


def test_missing_custom_label_column_raises_naming_it(tmp_path):
    path = write_csv(tmp_path, [HEADER, row(1)])
    with pytest.raises(CatalogueError, match="colourFamily"):
        read_styles(path, label_column="colourFamily")


def test_missing_id_column_raises_naming_it(tmp_path):
    path = write_csv(tmp_path, ["articleType,productDisplayName", "Tshirts,Tee"])
    with pytest.raises(CatalogueError, match="'id'"):
        read_styles(path)


def test_empty_csv_raises(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(b"")
    with pytest.raises(CatalogueError, match="empty"):
        read_styles(path)


def test_header_only_csv_raises(tmp_path):
    with pytest.raises(CatalogueError, match="no usable rows"):
        read_styles(write_csv(tmp_path, [HEADER]))


def test_extra_columns_are_reported(tmp_path):
    lines = ["id,articleType,brand,productDisplayName,score", "1,Tshirts,Puma,Tee,3"]
    table, report = read_styles(write_csv(tmp_path, lines))
    assert report.extra_columns == ["brand", "score"]
    assert table.loc[0, "brand"] == "Puma"


def test_csv_with_utf8_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(("\ufeff" + HEADER + "\n" + row(1) + "\n").encode("utf-8"))
    table, _ = read_styles(path)
    assert table["id"].tolist() == [1]


def test_missing_csv_raises(tmp_path):
    with pytest.raises(CatalogueError, match="not found"):
        read_styles(tmp_path / "styles.csv")


# ---------------------------------------------------------------- load_catalogue


def test_rows_without_image_and_images_without_row_are_reported(tmp_path):
    folder = make_catalogue(tmp_path / "cat", [HEADER, row(1), row(2), row(3)],
                            ["1.jpg", "3.jpg", "99.jpg", "cover.jpg", "notes.txt"])
    table, report = load_catalogue(folder)
    assert table["id"].tolist() == [1, 3]
    assert report.rows_without_image == [2]
    assert sorted(report.images_without_row) == ["99.jpg", "cover.jpg"]  # .txt is not an image
    assert report.items == 2
    assert report.csv_rows == 3


def test_image_path_points_into_images_folder(tmp_path):
    folder = make_catalogue(tmp_path / "cat", [HEADER, row(5)], ["5.png"])
    table, _ = load_catalogue(folder)
    assert table.loc[0, "image_path"] == str(folder / "images" / "5.png")


def test_rows_with_empty_label_are_reported_and_dropped(tmp_path):
    folder = make_catalogue(tmp_path / "cat", [HEADER, row(1), row(2, article="")], ["1.jpg", "2.jpg"])
    table, report = load_catalogue(folder)
    assert table["id"].tolist() == [1]
    assert report.rows_without_label == [2]


def test_missing_folder_raises(tmp_path):
    with pytest.raises(CatalogueError, match="not found"):
        load_catalogue(tmp_path / "nowhere")


def test_missing_images_dir_raises(tmp_path):
    write_csv(tmp_path / "cat", [HEADER, row(1)])
    with pytest.raises(CatalogueError, match="images"):
        load_catalogue(tmp_path / "cat")


def test_no_row_with_image_raises(tmp_path):
    folder = make_catalogue(tmp_path / "cat", [HEADER, row(1)], ["2.jpg"])
    with pytest.raises(CatalogueError, match="no row"):
        load_catalogue(folder)


def test_report_summary_and_dict_count_every_case(tmp_path):
    folder = make_catalogue(tmp_path / "cat", [HEADER, row(1), row(1), "3,Men", row(4, name="a, b"), row(5)],
                            ["1.jpg", "4.jpg", "77.jpg"])
    _, report = load_catalogue(folder)
    counts = report.to_dict()
    assert counts["n_duplicate_ids"] == 1
    assert counts["n_malformed_lines"] == 1
    assert counts["n_repaired_lines"] == 1
    assert counts["n_rows_without_image"] == 1
    assert counts["n_images_without_row"] == 1
    assert counts["items"] == 2
    assert "repaired 1 lines" in report.summary()


# ---------------------------------------------------------------- the real sample


def test_shared_sample_catalogue_quirks(shared_catalogue_dir):
    table, report = load_catalogue(shared_catalogue_dir)
    assert report.items == len(table) == 5000
    assert len(report.rows_without_image) == 116
    assert len(report.repaired_lines) == 22
    assert report.malformed_lines == []
    assert report.duplicate_ids == []
    assert report.images_without_row == []
    assert report.csv_rows == 5116
    for column in ("usage", "baseColour", "productDisplayName"):
        assert (table[column] == "NA").any(), column
    assert table["year"].dtype == pd.Int64Dtype()
    assert table["articleType"].nunique() == 83


# ---------------------------------------------------------------- empty and corrupt image files


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    import numpy as np

    noise = np.random.default_rng(colour).integers(0, 256, (48, 36, 3), dtype=np.uint8)  # enough scan data to cut
    Image.fromarray(noise // 2 + np.array(colour, np.uint8) // 2).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_image_catalogue(folder: Path, n: int, empty: set[int], corrupt: set[int]) -> Path:
    """n rows of two labels with real JPEGs, except 0-byte files for ``empty`` and broken ones for ``corrupt``."""
    write_csv(folder, [HEADER] + [row(i, article="Shirts" if i % 2 else "Tshirts") for i in range(1, n + 1)])
    (folder / "images").mkdir()
    for i in range(1, n + 1):
        data = _jpeg((10 * i % 255, 80, 160))
        if i in empty:
            data = b""
        elif i in corrupt:
            data = data[: len(data) * 2 // 3]  # a truncated download
        (folder / "images" / f"{i}.jpg").write_bytes(data)
    return folder


def test_empty_image_files_are_counted_and_their_rows_set_aside(tmp_path):
    folder = make_image_catalogue(tmp_path / "cat", 6, empty={2, 5}, corrupt=set())
    (folder / "images" / "77.jpg").write_bytes(b"")  # empty and without a row: counted in both lists
    table, report = load_catalogue(folder)
    assert table["id"].tolist() == [1, 3, 4, 6]
    assert report.empty_images == ["2.jpg", "5.jpg", "77.jpg"]
    assert report.rows_without_image == []  # the row has a file; it is the file that is empty
    assert report.images_without_row == ["77.jpg"]
    assert report.items == 4
    assert report.to_dict()["n_empty_images"] == 3
    assert "3 empty image files" in report.summary()


def test_check_images_sets_aside_undecodable_images_with_the_reason(tmp_path):
    folder = make_image_catalogue(tmp_path / "cat", 6, empty=set(), corrupt={3})
    (folder / "images" / "4.jpg").write_bytes(b"<html>not found</html>")
    table, report = load_catalogue(folder)
    assert len(table) == 6  # load_catalogue does not decode
    kept = check_images(table, report)
    assert kept["id"].tolist() == [1, 2, 5, 6]
    assert [(u["id"], u["file"]) for u in report.unreadable_images] == [(3, "3.jpg"), (4, "4.jpg")]
    assert "truncated" in report.unreadable_images[0]["reason"]
    assert "not an image" in report.unreadable_images[1]["reason"]
    assert "2 unreadable images" in report.summary()


def test_check_images_raises_when_nothing_decodes(tmp_path):
    folder = make_image_catalogue(tmp_path / "cat", 2, empty=set(), corrupt={1, 2})
    table, report = load_catalogue(folder)
    with pytest.raises(CatalogueError, match="no image of the catalogue can be decoded"):
        check_images(table, report)


def test_sample_subset_stage_sets_aside_an_empty_and_a_corrupt_image_and_says_so(tmp_path):
    """The stage end to end on a tiny catalogue: it runs, the two bad files are in the report (not in
    data/subset.csv), and the features stage's line counts them."""
    import shutil
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parent.parent
    project = tmp_path / "project"
    for name in ("lookalike", "stages"):
        shutil.copytree(repo / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    catalogue = make_image_catalogue(tmp_path / "cat", 24, empty={7}, corrupt={12})
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["catalogue_dir"] = str(catalogue)
    params["subset"].update(size=1000, min_per_class=2)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "data").mkdir()
    result = subprocess.run([sys.executable, "-m", "stages.sample_subset"], cwd=project, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 empty files and 1 unreadable images set aside" in result.stdout
    subset = pd.read_csv(project / "data/subset.csv")
    assert sorted(subset["id"]) == [i for i in range(1, 25) if i not in (7, 12)]
    report = yaml.safe_load((project / "data/subset_report.json").read_text())  # JSON is YAML
    assert report["catalogue"]["empty_images"] == ["7.jpg"]
    assert [u["id"] for u in report["catalogue"]["unreadable_images"]] == [12]
    assert report["subset"]["rows"] == 22
    counts, line = images_set_aside(project / "data/subset_report.json")
    assert counts == {"empty_image_files": 1, "unreadable_images": 1}
    assert line.startswith("skipped 1 empty image files and 1 unreadable images")
