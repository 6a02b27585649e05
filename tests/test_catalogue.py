"""lookalike.catalogue.reading through the Kaggle fashion description (catalogues/kaggle-fashion.yaml): the
quirks of the Kaggle styles.csv, on tiny hand-written catalogues, and the real fashion-5k sample."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lookalike.catalogue.description import CatalogueDescription, description_from_dict, load_description
from lookalike.catalogue.reading import (
    EXTERNAL_ID_COLUMN,
    CatalogueError,
    check_images,
    images_set_aside,
    load_catalogue,
)

REPO = Path(__file__).resolve().parent.parent
FASHION = REPO / "catalogues" / "kaggle-fashion.yaml"
HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"


@pytest.fixture(scope="module")
def fashion() -> CatalogueDescription:
    return load_description(FASHION)


def row(item_id: int | str, article: str = "Tshirts", colour: str = "Blue", year: str = "2012", usage: str = "Casual",
        name: str = "Plain Tee") -> str:
    return f"{item_id},Men,Apparel,Topwear,{article},{colour},Summer,{year},{usage},{name}"


def write_csv(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "styles.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_catalogue(folder: Path, lines: list[str], image_names: list[str] | None = None) -> Path:
    """styles.csv and images/; ``image_names`` None: a (non-empty, undecoded) photo for every row's id."""
    write_csv(folder, lines)
    images = folder / "images"
    images.mkdir()
    if image_names is None:
        image_names = [f"{line.split(',', 1)[0]}.jpg" for line in lines[1:] if line.split(",", 1)[0]]
    for name in image_names:
        (images / name).write_bytes(b"not decoded by load_catalogue")
    return folder


def read(tmp_path: Path, lines: list[str], description: CatalogueDescription) -> tuple[pd.DataFrame, object]:
    return load_catalogue(make_catalogue(tmp_path / "cat", lines), description)


# ---------------------------------------------------------------- the styles.csv quirks


def test_unquoted_commas_in_display_name_are_repaired_on_the_first_nine_commas(tmp_path, fashion):
    table, report = read(tmp_path, [HEADER, row(1), row(2, name="Puma Men, Women Tee, Red"), row(3)], fashion)
    assert report.repaired_lines == [3]  # 1-based: header is line 1
    assert report.malformed_lines == []
    assert len(table) == 3
    repaired = table.set_index("id").loc[2]
    assert repaired["productDisplayName"] == "Puma Men, Women Tee, Red"
    assert repaired["usage"] == "Casual"
    assert repaired["articleType"] == "Tshirts"


def test_without_a_free_text_column_a_line_with_unquoted_commas_is_malformed_not_repaired(tmp_path, fashion):
    plain = description_from_dict({**fashion.to_dict(), "free_text_column": None}, "plain.yaml")
    table, report = read(tmp_path, [HEADER, row(1), row(2, name="Men, Tee")], plain)
    assert report.repaired_lines == []
    assert report.malformed_lines == [3]
    assert table["id"].tolist() == [1]


def test_quoted_display_name_with_commas_is_parsed_not_repaired(tmp_path, fashion):
    table, report = read(tmp_path, [HEADER, row(1, name='"Tee, blue"')], fashion)
    assert report.repaired_lines == []
    assert table.loc[0, "productDisplayName"] == "Tee, blue"


def test_literal_na_is_kept_as_text(tmp_path, fashion):
    table, report = read(tmp_path, [HEADER, row(1, colour="NA", usage="NA", name="NA")], fashion)
    for column in ("baseColour", "usage", "productDisplayName"):
        assert table.loc[0, column] == "NA", column
        assert not table[column].isna().any()
    assert report.rows_without_label == []


def test_year_is_text_like_every_catalogue_column(tmp_path, fashion):
    # the reader no longer types columns: an empty year stays "" (no nullable Int64 column any more)
    table, _ = read(tmp_path, [HEADER, row(1, year="2012"), row(2, year="")], fashion)
    years = table.set_index("id")["year"]
    assert years.loc[1] == "2012"
    assert years.loc[2] == ""
    assert all(isinstance(value, str) for value in table["year"])


def test_decimal_ids_are_the_catalogues_own_int64_ids(tmp_path, fashion):
    table, _ = read(tmp_path, [HEADER, row(7), row(11)], fashion)
    assert table["id"].dtype == "int64"
    assert table["id"].tolist() == [7, 11]
    assert EXTERNAL_ID_COLUMN not in table


def test_empty_text_fields_stay_empty_strings(tmp_path, fashion):
    table, _ = read(tmp_path, [HEADER, "1,Men,Apparel,Topwear,Tshirts,Blue,,2012,,Tee"], fashion)
    assert table.loc[0, "season"] == ""
    assert table.loc[0, "usage"] == ""


def test_duplicate_ids_are_refused_naming_file_lines_column_and_id(tmp_path, fashion):
    # before descriptions the first row was kept and the rest counted; now every item needs its own id
    lines = [HEADER, row(1, name="first"), row(2), row(1, name="second"), row(1, name="third")]
    with pytest.raises(CatalogueError) as error:
        read(tmp_path, lines, fashion)
    message = str(error.value)
    assert "styles.csv, lines 2, 4, 5, column 'id'" in message
    assert "'1' is used 3 times" in message


def test_lines_with_too_few_fields_are_counted_as_malformed(tmp_path, fashion):
    table, report = read(tmp_path, [HEADER, row(1), "2,Men,Apparel,Topwear", row(3)], fashion)
    assert report.malformed_lines == [3]
    assert table["id"].tolist() == [1, 3]
    assert report.csv_rows == 2


def test_non_numeric_id_is_kept_as_external_id_and_items_are_numbered(tmp_path, fashion):
    # before descriptions such a line was malformed; now any id is an id, kept as text when not decimal
    table, report = read(tmp_path, [HEADER, row(5), row("x2")], fashion)
    assert report.malformed_lines == []
    assert table["id"].tolist() == [1, 2]  # numbered in table order
    assert table[EXTERNAL_ID_COLUMN].tolist() == ["5", "x2"]
    assert table["image_path"].map(lambda p: Path(p).name).tolist() == ["5.jpg", "x2.jpg"]


def test_line_numbers_stay_right_after_a_skipped_line(tmp_path, fashion):
    # line 2: ok, line 3: too few fields (skipped), line 4: an empty id
    lines = [HEADER, row(1), "2,Men", row(3).replace("3,", ",", 1)]
    with pytest.raises(CatalogueError, match=r"styles\.csv, line 4, column 'id': the id is empty"):
        read(tmp_path, lines, fashion)


def test_missing_label_column_raises_naming_the_file_and_the_column(tmp_path, fashion):
    header = HEADER.replace("articleType", "type")
    with pytest.raises(CatalogueError, match=r"styles\.csv has no column 'articleType' \(labels\)"):
        read(tmp_path, [header, row(1)], fashion)


def test_missing_custom_label_column_raises_naming_it(tmp_path, fashion):
    custom = description_from_dict({**fashion.to_dict(), "labels": ["colourFamily"]}, "custom.yaml")
    with pytest.raises(CatalogueError, match=r"no column 'colourFamily' \(labels\) that custom\.yaml names"):
        read(tmp_path, [HEADER, row(1)], custom)


def test_missing_id_column_raises_naming_it(tmp_path, fashion):
    header = HEADER.replace("id,", "sku,", 1)
    with pytest.raises(CatalogueError, match=r"styles\.csv has no column 'id' \(id\)"):
        read(tmp_path, [header, row(1)], fashion)


def test_empty_csv_raises(tmp_path, fashion):
    folder = make_catalogue(tmp_path / "cat", [HEADER], [])
    (folder / "styles.csv").write_bytes(b"")
    with pytest.raises(CatalogueError, match=r"styles\.csv is empty"):
        load_catalogue(folder, fashion)


def test_header_only_csv_raises(tmp_path, fashion):
    with pytest.raises(CatalogueError, match=r"styles\.csv has no rows"):
        read(tmp_path, [HEADER], fashion)


def test_extra_columns_are_reported_and_kept(tmp_path):
    description = description_from_dict({"table": "styles.csv", "id": "id", "photos": "images/{id}.jpg",
                                         "labels": ["articleType"], "title": "productDisplayName"})
    lines = ["id,articleType,brand,productDisplayName,score", "1,Tshirts,Puma,Tee,3"]
    table, report = read(tmp_path, lines, description)
    assert report.extra_columns == ["brand", "score"]
    assert table.loc[0, "brand"] == "Puma"
    assert table.loc[0, "score"] == "3"


def test_csv_with_utf8_byte_order_mark_is_read(tmp_path, fashion):
    folder = make_catalogue(tmp_path / "cat", [HEADER, row(1)])
    (folder / "styles.csv").write_bytes(("\ufeff" + HEADER + "\n" + row(1) + "\n").encode("utf-8"))
    table, _ = load_catalogue(folder, fashion)
    assert table["id"].tolist() == [1]


def test_missing_csv_raises(tmp_path, fashion):
    (tmp_path / "cat").mkdir()
    with pytest.raises(CatalogueError, match=r"catalogue table not found: styles\.csv"):
        load_catalogue(tmp_path / "cat", fashion)


# ---------------------------------------------------------------- photos, labels and the report


def test_rows_without_image_and_images_without_row_are_reported(tmp_path, fashion):
    folder = make_catalogue(tmp_path / "cat", [HEADER, row(1), row(2), row(3)],
                            ["1.jpg", "3.jpg", "99.jpg", "cover.jpg", "notes.txt"])
    table, report = load_catalogue(folder, fashion)
    assert table["id"].tolist() == [1, 3]
    assert report.rows_without_image == [2]
    assert sorted(report.images_without_row) == ["99.jpg", "cover.jpg"]  # .txt is not an image
    assert report.items == 2
    assert report.csv_rows == 3


def test_image_path_follows_the_photo_template(tmp_path, fashion):
    folder = make_catalogue(tmp_path / "cat", [HEADER, row(5), row(6)], ["5.jpg", "6.png"])
    table, report = load_catalogue(folder, fashion)
    assert table["image_path"].tolist() == [str(folder / "images" / "5.jpg")]
    assert report.rows_without_image == [6]  # images/{id}.jpg: a .png is not its photo
    assert report.images_without_row == ["6.png"]


def test_rows_with_empty_or_na_label_are_counted_and_kept(tmp_path, fashion):
    # before descriptions they were dropped; now they are indexed and found, never trained on nor queries
    table, report = read(tmp_path, [HEADER, row(1), row(2, article=""), row(3, article="NA")], fashion)
    assert table["id"].tolist() == [1, 2, 3]
    assert report.rows_without_label == [2, 3]
    assert "2 rows without label" in report.summary()


def test_missing_folder_raises(tmp_path, fashion):
    with pytest.raises(CatalogueError, match="catalogue folder not found"):
        load_catalogue(tmp_path / "nowhere", fashion)


def test_missing_images_dir_leaves_no_item_and_raises(tmp_path, fashion):
    write_csv(tmp_path / "cat", [HEADER, row(1)])
    with pytest.raises(CatalogueError, match=r"no item of styles\.csv has a photo file .*1 rows without image"):
        load_catalogue(tmp_path / "cat", fashion)


def test_no_row_with_image_raises(tmp_path, fashion):
    folder = make_catalogue(tmp_path / "cat", [HEADER, row(1)], ["2.jpg"])
    with pytest.raises(CatalogueError, match=r"no item of styles\.csv has a photo file"):
        load_catalogue(folder, fashion)


def test_report_summary_and_dict_count_every_case(tmp_path, fashion):
    lines = [HEADER, row(1), row(2, article=""), "3,Men", row(4, name="a, b"), row(5)]
    folder = make_catalogue(tmp_path / "cat", lines, ["1.jpg", "2.jpg", "4.jpg", "77.jpg"])
    _, report = load_catalogue(folder, fashion)
    counts = report.to_dict()
    assert counts["n_duplicate_ids"] == 0
    assert counts["n_malformed_lines"] == 1
    assert counts["n_repaired_lines"] == 1
    assert counts["n_rows_without_image"] == 1
    assert counts["n_rows_without_label"] == 1
    assert counts["n_images_without_row"] == 1
    assert counts["items"] == 3
    assert counts["csv_rows"] == 4
    summary = report.summary()
    assert summary.startswith("3 items with a photo from 4 rows")
    assert "repaired 1 lines" in summary
    assert "skipped 1 malformed lines" in summary
    assert "1 rows without image" in summary
    assert "1 images without row" in summary


# ---------------------------------------------------------------- the real sample


def test_shared_sample_catalogue_quirks(shared_catalogue_dir, fashion):
    table, report = load_catalogue(shared_catalogue_dir, fashion)
    assert report.items == len(table) == 5000
    assert len(report.rows_without_image) == 116
    assert len(report.repaired_lines) == 22
    assert report.malformed_lines == []
    assert report.duplicate_ids == []
    assert report.images_without_row == []
    assert report.empty_images == []
    assert report.rows_without_label == []
    assert report.csv_rows == 5116
    assert report.extra_columns == []  # the description gives every column a role
    for column in ("usage", "baseColour", "productDisplayName"):
        assert (table[column] == "NA").any(), column
    assert table["id"].dtype == "int64" and table["id"].is_unique
    assert all(isinstance(value, str) for value in table["year"])  # text now, no nullable int
    assert table["articleType"].nunique() == 83
    assert table["image_path"].map(lambda p: Path(p).is_file()).all()


# ---------------------------------------------------------------- empty and corrupt image files


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
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


def test_empty_image_files_are_counted_and_their_rows_set_aside(tmp_path, fashion):
    folder = make_image_catalogue(tmp_path / "cat", 6, empty={2, 5}, corrupt=set())
    (folder / "images" / "77.jpg").write_bytes(b"")  # empty and without a row: counted in both lists
    table, report = load_catalogue(folder, fashion)
    assert table["id"].tolist() == [1, 3, 4, 6]
    assert report.empty_images == ["2.jpg", "5.jpg", "77.jpg"]
    assert report.rows_without_image == []  # the row has a file; it is the file that is empty
    assert report.images_without_row == ["77.jpg"]
    assert report.items == 4
    assert report.to_dict()["n_empty_images"] == 3
    assert "3 empty image files" in report.summary()


def test_check_images_sets_aside_undecodable_images_with_the_reason(tmp_path, fashion):
    folder = make_image_catalogue(tmp_path / "cat", 6, empty=set(), corrupt={3})
    (folder / "images" / "4.jpg").write_bytes(b"<html>not found</html>")
    table, report = load_catalogue(folder, fashion)
    assert len(table) == 6  # load_catalogue does not decode
    kept = check_images(table, report)
    assert kept["id"].tolist() == [1, 2, 5, 6]
    assert list(kept.index) == [0, 1, 2, 3]
    assert [(u["id"], u["file"]) for u in report.unreadable_images] == [(3, "3.jpg"), (4, "4.jpg")]
    assert "truncated" in report.unreadable_images[0]["reason"]
    assert "not an image" in report.unreadable_images[1]["reason"]
    assert "2 unreadable images" in report.summary()
    assert report.to_dict()["n_unreadable_images"] == 2


def test_check_images_raises_when_nothing_decodes(tmp_path, fashion):
    folder = make_image_catalogue(tmp_path / "cat", 2, empty=set(), corrupt={1, 2})
    table, report = load_catalogue(folder, fashion)
    with pytest.raises(CatalogueError, match=r"no image of the catalogue can be decoded: 1\.jpg: .*truncated"):
        check_images(table, report)


def test_sample_subset_stage_sets_aside_an_empty_and_a_corrupt_image_and_says_so(tmp_path):
    """The stage end to end on a tiny catalogue: it runs, the two bad files are in the report (not in
    data/subset.csv), and the features stage's line counts them."""
    import json
    import shutil
    import subprocess
    import sys

    import yaml

    project = tmp_path / "project"
    for name in ("lookalike", "stages", "catalogues"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    catalogue = make_image_catalogue(tmp_path / "cat", 24, empty={7}, corrupt={12})
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["catalogue_dir"] = str(catalogue)
    params["data"]["catalogue"] = "catalogues/kaggle-fashion.yaml"
    params["subset"].update(size=1000, min_per_class=2)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "data").mkdir()
    result = subprocess.run([sys.executable, "-m", "stages.sample_subset"], cwd=project, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    # the stage's console: the catalogue line counts the empty file (load_catalogue sets it aside on a stat);
    # the corrupt one is set aside by check_images after that line, so the stage's console has no count of it
    catalogue_line = next(line for line in result.stdout.splitlines() if line.startswith("catalogue "))
    assert "kaggle-fashion.yaml" in catalogue_line
    assert "23 items with a photo from 24 rows" in catalogue_line
    assert "1 empty image files" in catalogue_line
    assert "subset: 22 images, all indexed; 2 labels;" in result.stdout
    subset = pd.read_csv(project / "data/subset.csv")
    assert sorted(subset["id"]) == [i for i in range(1, 25) if i not in (7, 12)]
    assert "split_given" not in subset
    assert set(subset["split"]) == {"train", "val", "test"}
    report = json.loads((project / "data/subset_report.json").read_text())
    assert report["catalogue"]["empty_images"] == ["7.jpg"]
    assert [u["id"] for u in report["catalogue"]["unreadable_images"]] == [12]
    assert report["subset"]["rows"] == 22
    counts, line = images_set_aside(project / "data/subset_report.json")
    assert counts == {"empty_image_files": 1, "unreadable_images": 1}
    assert line.startswith("skipped 1 empty image files and 1 unreadable images")


def test_sample_subset_stage_refuses_a_bad_catalogue_in_one_line_and_writes_nothing(tmp_path):
    """Duplicate ids: the stage exits non-zero with the message naming file, lines and column, no traceback,
    and no subset or report is written (nothing half-built)."""
    import shutil
    import subprocess
    import sys

    import yaml

    project = tmp_path / "project"
    for name in ("lookalike", "stages", "catalogues"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    catalogue = make_image_catalogue(tmp_path / "cat", 6, empty=set(), corrupt=set())
    lines = (catalogue / "styles.csv").read_text().splitlines()
    (catalogue / "styles.csv").write_text("\n".join([*lines, lines[2]]) + "\n")  # id 2 twice
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["catalogue_dir"] = str(catalogue)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "data").mkdir()
    result = subprocess.run([sys.executable, "-m", "stages.sample_subset"], cwd=project, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: styles.csv, lines 3, 8, column 'id'"), error
    assert not (project / "data/subset.csv").exists() and not (project / "data/subset_report.json").exists()
