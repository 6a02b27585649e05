"""The `lookalike` command line: every subcommand on the tiny project, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.cli import COMMANDS, main
from lookalike.duplicates import OUTPUT_COLUMNS

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("query", "similar", "related", "evaluate-folder", "duplicates")


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
    # options after the subcommand name work too
    assert main(["similar", str(item_id), "--k", "4", "--artifacts", artifacts, "--json"]) == 0
    similar = json.loads(capsys.readouterr().out)["matches"]
    assert len(similar) == 4 and item_id not in [m["id"] for m in similar]
    assert main(["--artifacts", artifacts, "similar", str(item_id)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 + 1 and lines[-1].endswith(")")  # five results and the timing line


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


def test_duplicates_command_writes_every_group(tiny_project: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    artifacts = str(tiny_project / "artifacts")
    embeddings = np.load(tiny_project / "artifacts/embeddings.npy")
    items = pd.read_csv(tiny_project / "artifacts/items.csv")
    cosine = embeddings @ embeddings.T
    np.fill_diagonal(cosine, -1)
    threshold = float(np.round(np.quantile(cosine.max(axis=1), 0.5), 3))  # about half the items have a partner
    out = tmp_path / "dups.csv"
    assert main(["--artifacts", artifacts, "duplicates", "--out", str(out), "--threshold", str(threshold)]) == 0
    assert "near-duplicate groups" in capsys.readouterr().out
    table = pd.read_csv(out)
    assert tuple(table.columns) == OUTPUT_COLUMNS
    expected_members = set(items["id"][cosine.max(axis=1) >= threshold])
    assert set(table["id"]) == expected_members and len(expected_members) > 0
    assert (table["max_cosine"] >= threshold - 1e-6).all()
    assert main(["--artifacts", artifacts, "duplicates", "--out", str(out), "--threshold", "1.5"]) == 2
    assert "(0, 1]" in one_error_line(capsys.readouterr().err)


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
    from lookalike.search import Searcher

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
