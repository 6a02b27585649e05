"""The `lookalike` command line: every subcommand on the tiny project, and one-line errors."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from grocery_build import grocery_build
from PIL import Image

from lookalike.cli import COMMANDS, main
from lookalike.search.duplicates import GROUP_COLUMNS

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("query", "similar", "related", "evaluate-folder", "duplicates", "serve", "fold", "compact")


def one_error_line(captured: str) -> str:
    lines = captured.strip().splitlines()
    assert len(lines) == 1, captured
    assert lines[0].startswith("error: ") and "Traceback" not in captured, captured
    return lines[0]


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in COMMANDS and name in out
    assert main(["duplicates", "--help"]) == 0
    assert "--threshold" in capsys.readouterr().out


def test_help_runs_as_a_module_without_loading_tensorflow() -> None:
    code = ("import sys; from lookalike.cli import main; rc = main(['--help']); "
            "assert 'tensorflow' not in sys.modules; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "evaluate-folder" in result.stdout


@pytest.mark.parametrize("argv, expected", [
    ([], "required"),
    (["bogus"], "invalid choice"),
    (["similar", "not-a-number"], "invalid int value"),
    (["query", "photo.jpg", "--k", "0"], "must be at least 1"),
    (["related"], "--out"),
])
def test_usage_errors_are_one_line(argv: list[str], expected: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert expected in one_error_line(captured.err) and captured.out == ""


def test_query_and_similar(tiny_project: Path, capsys: pytest.CaptureFixture) -> None:
    artifacts = str(tiny_project / "artifacts")
    items = pd.read_csv(tiny_project / "artifacts/items.csv")
    item_id = int(items["id"].iat[5])
    image = tiny_project / str(np.load(tiny_project / "artifacts/image_paths.npy")[5])
    image = image if image.is_file() else Path(str(np.load(tiny_project / "artifacts/image_paths.npy")[5]))
    assert main(["--artifacts", artifacts, "query", str(image), "--k", "3", "--json"]) == 0
    response = json.loads(capsys.readouterr().out)
    assert [m["rank"] for m in response["matches"]] == [1, 2, 3]
    assert response["matches"][0]["id"] == item_id and response["matches"][0]["score"] == pytest.approx(1, abs=1e-4)
    assert response["live_changes_included"] is False and "live changes" in response["notice"]
    # options after the subcommand name work too
    assert main(["similar", str(item_id), "--k", "4", "--artifacts", artifacts, "--json"]) == 0
    similar = json.loads(capsys.readouterr().out)["matches"]
    assert len(similar) == 4 and item_id not in [m["id"] for m in similar]
    assert main(["--artifacts", artifacts, "similar", str(item_id)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 + 1 and lines[-1].endswith(")")  # five results and the timing line
    assert "live changes" in lines[-1] and "not included" in lines[-1]  # says what it leaves out


def test_matches_show_the_builds_own_label_and_title(tiny_project: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """A grocery build's matches read as its class and name, whatever the fashion columns were."""
    artifacts = grocery_build(tiny_project / "artifacts", tmp_path / "grocery")
    items = pd.read_csv(artifacts / "items.csv", dtype=str).set_index("id")
    ids = items.index.tolist()
    assert main(["--artifacts", str(artifacts), "similar", ids[5], "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[:3]
    for line in lines:
        rank, score, item_id, rest = line.split(maxsplit=3)
        assert rest.startswith(items.loc[item_id, "class"]) and rest.endswith(items.loc[item_id, "name"])
    assert main(["--artifacts", str(artifacts), "duplicates", "--out", str(tmp_path / "d.csv"), "--build-only",
                 "--threshold", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "near-duplicate groups" in printed and "baseColour" not in printed  # no colour column: no colourways
    table = pd.read_csv(tmp_path / "d.csv")
    assert tuple(table.columns) == GROUP_COLUMNS + ("name", "coarse_class", "class")


def test_related_and_evaluate_folder(tiny_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    artifacts = str(tiny_project / "artifacts")
    out = tmp_path / "related.csv"
    assert main(["--artifacts", artifacts, "related", "--k", "2", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["id", "rank", "related_id", "score"] and len(table) == 60 * 2
    assert "wrote 120 rows" in capsys.readouterr().out
    metrics = tmp_path / "folder.json"
    assert main(["--artifacts", artifacts, "evaluate-folder", str(tiny_project.parent / "catalogue"),
                 "--out", str(metrics)]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(metrics.read_text())
    assert printed == written
    assert written["images"] == 60 and 0.0 <= written["trained"]["precision_at_5"] <= 1.0
    assert "pretrained" not in written


def _reencoded(path: Path, quality: int = 70) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _recoloured(path: Path) -> bytes:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    background = (pixels > 235).all(axis=2, keepdims=True)
    buffer = io.BytesIO()
    Image.fromarray(np.where(background, pixels, pixels[:, :, [2, 0, 1]]).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_duplicates_command_reports_build_and_live_copies_not_colourways(tiny_project: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    from lookalike.live import LiveCatalogue, LiveStore
    from lookalike.search.engine import Searcher

    searcher = Searcher.load(tiny_project / "artifacts", root=tiny_project)
    db = tmp_path / "live.db"
    catalogue = LiveCatalogue.open(searcher, LiveStore(db), near_duplicate_cosine=0.3)
    from lookalike.search.duplicates import photo_thumbnail, pixel_difference

    def change(row: int) -> float:  # the photo whose colourway differs most: a product with a colour
        return pixel_difference(photo_thumbnail(searcher.resolve_path(row)),
                                photo_thumbnail(_recoloured(searcher.resolve_path(row))))

    row = max(range(len(searcher.items)), key=change)
    original = searcher.resolve_path(row)
    meta = {"articleType": "Tshirts", "baseColour": "Blue"}
    catalogue.put("COPY", _reencoded(original), meta)
    catalogue.put("COLOURWAY", _recoloured(original), {**meta, "baseColour": "Purple"})
    catalogue.store.close()
    out = tmp_path / "dups.csv"
    argv = ["--artifacts", str(tiny_project / "artifacts"), "duplicates", "--out", str(out), "--live-db", str(db)]
    assert main([*argv, "--threshold", "0.3"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out, dtype={"id": str, "closest_id": str})
    # the build's title and card columns (its colour among them): the fashion catalogue's
    assert tuple(table.columns) == GROUP_COLUMNS + ("productDisplayName", "articleType", "baseColour", "gender")
    colour = dict(zip(table["id"], table["baseColour"], strict=True))
    other_colour = sum(colour[i] != colour[c] for i, c in zip(table["id"], table["closest_id"], strict=True))
    assert "live changes through 2" in printed and f"{other_colour} with another baseColour" in printed
    build_id = str(searcher.items["id"].iat[row])
    copies = table.loc[table["id"].isin(["COPY", build_id])]
    assert len(copies) == 2 and copies["group"].nunique() == 1
    assert "COLOURWAY" not in set(table["id"])  # far above 0.3 in cosine, but another picture
    assert main([*argv, "--build-only"]) == 0
    assert "COPY" not in set(pd.read_csv(out, dtype={"id": str})["id"])
    assert main([*argv, "--threshold", "1.5"]) == 2
    assert "(0, 1]" in one_error_line(capsys.readouterr().err)


def test_duplicates_reads_the_published_build_not_the_folder_mid_run(tiny_project: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny_project / "artifacts", artifacts)
    published = json.loads((artifacts / "current.json").read_text())["build"]
    (artifacts / "embeddings.npy").write_bytes(b"half written by a stage DVC is rerunning")
    out = tmp_path / "dups.csv"
    assert main(["--artifacts", str(artifacts), "duplicates", "--out", str(out), "--build-only"]) == 0
    assert f"build {published}" in capsys.readouterr().out


@pytest.mark.parametrize("error", [KeyError("a bug"), ValueError("a bug"), OSError("a bug")])
def test_an_internal_error_is_not_called_a_user_error(tiny_project: Path, tmp_path: Path, error: Exception,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    import lookalike.search.duplicates

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(lookalike.search.duplicates, "load_published", broken)
    argv = ["--artifacts", str(tiny_project / "artifacts"), "duplicates", "--out", str(tmp_path / "d.csv"),
            "--build-only"]
    assert main(argv) == 1
    assert one_error_line(capsys.readouterr().err).startswith(f"error: unexpected {type(error).__name__}")


def test_user_errors_are_one_line_with_status_2(tiny_project: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    artifacts = str(tiny_project / "artifacts")
    cases = [
        (["--artifacts", artifacts, "query", str(tmp_path / "missing.jpg")], "image file not found"),
        (["--artifacts", artifacts, "similar", "123456789"], "no catalogue item with id 123456789"),
        (["--artifacts", str(tmp_path / "nothing"), "similar", "1"], "no manifest"),
        (["--artifacts", str(tmp_path / "nothing"), "duplicates", "--out", str(tmp_path / "d.csv")], "no manifest"),
    ]
    (tmp_path / "not-an-image.jpg").write_text("hello")
    cases.append((["--artifacts", artifacts, "query", str(tmp_path / "not-an-image.jpg")], "not an image"))
    for argv, expected in cases:
        assert main(argv) == 2, argv
        assert expected in one_error_line(capsys.readouterr().err)


def test_unexpected_error_is_one_line_without_traceback(tiny_project: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    from lookalike.search.engine import Searcher

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line of detail")

    monkeypatch.setattr(Searcher, "load", broken)
    assert main(["--artifacts", str(tiny_project / "artifacts"), "similar", "1"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == "error: unexpected RuntimeError: disk on fire second line of detail " \
                   "(rerun with --verbose for details)"
    assert main(["--verbose", "--artifacts", str(tiny_project / "artifacts"), "similar", "1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: unexpected RuntimeError")


def test_a_real_process_prints_one_line_on_stderr(tmp_path: Path) -> None:
    """No TensorFlow start-up lines, no traceback: exactly the error line."""
    result = subprocess.run([sys.executable, "-m", "lookalike.cli", "--artifacts", str(tmp_path), "query", "x.jpg"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: no manifest at {tmp_path / 'manifest.json'}: "
                                          "the pipeline has not been run (dvc repro)"], result.stderr


def test_console_script_is_installed_by_setup() -> None:
    """scripts/setup.sh installs the package editable: `lookalike` sits beside this Python."""
    script = Path(sys.executable).parent / "lookalike"
    assert script.is_file(), f"{script} missing: run bash scripts/setup.sh (or pip install -e .)"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "duplicates" in result.stdout, result.stderr
