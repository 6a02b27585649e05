"""lookalike query --text/--like/--unlike and weights on the tiny build (lookalike/cli.py, lookalike/text/search.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookalike.search.engine import Searcher


def test_command_line_query_by_words_items_and_photo(tiny_project: Path, capsys: pytest.CaptureFixture) -> None:
    from lookalike.cli import main

    artifacts = str(tiny_project / "artifacts")
    searcher = Searcher.load(tiny_project / "artifacts", root=tiny_project)
    title = str(searcher.items["productDisplayName"][2])
    assert main(["--artifacts", artifacts, "query", "--text", title, "--k", "2", "--json"]) == 0
    found = [m["metadata"]["productDisplayName"] for m in json.loads(capsys.readouterr().out)["matches"]]
    assert title in found  # the titled item is among the first two of 60 (the tiny model gathers a type and colour
    # together tightly, so another black T-shirt of a similar title can come first)
    photo, item_id = str(searcher.resolve_path(3)), int(searcher.items["id"][3])
    assert main(["--artifacts", artifacts, "query", photo, "--text", "red", "--text-weight", "0.3",
                 "--unlike", str(item_id), "--json"]) == 0
    assert item_id not in [m["id"] for m in json.loads(capsys.readouterr().out)["matches"]]
    for argv, message in ((["query"], "give a photo"), (["query", "--text", "???"], "no words"),
                          (["query", "--like", "123456789"], "no catalogue item"),
                          (["query", "--text", "red", "--text-weight", "nan"], "text_weight")):
        assert main(["--artifacts", artifacts, *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1

