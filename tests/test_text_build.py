"""The text stage inside the pipeline: the tiny project's build pins a text tower that answers words."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.artifacts import resolve_build
from lookalike.search.engine import Searcher
from lookalike.text.search import Query, TextSearch
from lookalike.text.tower import TextQueryError, word_columns


def test_the_build_pins_the_tower_and_words_find_catalogue_items(tiny_project: Path) -> None:
    folder, manifest = resolve_build(tiny_project / "artifacts")
    assert {"text_tower", "text_tokenizer"} <= set(manifest["files"])  # hashed with the build, published with it
    assert (folder / manifest["files"]["text_tower"]["path"]).is_file()
    metrics = json.loads((tiny_project / "metrics/text.json").read_text())
    assert set(metrics["hidden"]) == {"lexical", "learned", "hybrid"} and metrics["training"]["best_epoch"] >= 1
    # the query sets the stage derived from the description's roles: the names the committed metrics use
    assert list(metrics["queries"]) == ["title", "colour", "subcategory", "articletype", "colour_articletype",
                                        "gender_articletype"]
    searcher = Searcher.load(tiny_project / "artifacts", root=tiny_project)
    text = TextSearch.load(searcher)
    # the words text search indexes are the ones the build's manifest names, those the stage trained on
    assert text.words == word_columns(searcher.roles) == ("productDisplayName", "articleType", "baseColour", "gender",
                                                          "usage", "season")
    title = next(t for t in searcher.items["productDisplayName"] if t)
    found = text.search(Query(text=title), k=3)
    assert found.matches[0].metadata["productDisplayName"] == title  # the exact name, through BM25
    vector = text.text_vector("shirt")  # in the picture sub-space, at the length that makes scores its cosines
    start, stop, length = searcher.similarity.span("picture")
    assert vector.shape == (searcher.embeddings.shape[1],) and not vector[:start].any() and not vector[stop:].any()
    assert np.isclose(np.linalg.norm(vector), 1 / length, atol=1e-4)


def test_the_loaded_tower_needs_no_tensorflow(tiny_project: Path) -> None:
    code = ("import sys; from lookalike.search.engine import Searcher; "
            "from lookalike.text.search import TextSearch, Query; "
            f"s = Searcher.load({str(tiny_project / 'artifacts')!r}, root={str(tiny_project)!r}); "
            "TextSearch.load(s).search(Query(text='blue shirt'), k=2); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_live_items_are_found_by_their_words_and_removed_ones_never(tiny_project: Path, tmp_path: Path) -> None:
    from lookalike.live import LiveCatalogue, LiveStore
    from lookalike.text.search import LiveTextSearch

    searcher = Searcher.load(tiny_project / "artifacts", root=tiny_project)
    catalogue = LiveCatalogue.open(searcher, LiveStore(tmp_path / "live.db"))
    text = LiveTextSearch.load(catalogue)
    photo = searcher.resolve_path(0).read_bytes()
    catalogue.put("SKU-NEW", photo, {"articleType": str(searcher.items["articleType"][0]),
                                     "productDisplayName": "Zorblax Quilted Weekender"})
    found = text.search(Query(text="zorblax weekender"), k=3)
    assert found.matches[0].id == "SKU-NEW" and found.matches[0].source == "live"
    title = str(searcher.items["productDisplayName"][1])
    build_id = str(int(searcher.items["id"][1]))
    assert build_id in [m.id for m in text.search(Query(text=title), k=3).matches]
    catalogue.remove(build_id)
    for query in (Query(text=title), Query(item_ids=["SKU-NEW"], text=title, text_weight=0.5)):
        assert build_id not in [m.id for m in text.search(query, k=len(searcher.items)).matches]
    like_new = text.search(Query(item_ids=["SKU-NEW"]), k=3)
    assert "SKU-NEW" not in [m.id for m in like_new.matches]  # the named item itself is never returned
    with pytest.raises(TextQueryError, match="no item"):
        text.search(Query(item_ids=["NOPE"]), k=3)


def test_the_page_searches_words_and_refines_a_product_with_them(tiny_project: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))
    try:
        from page_logic import PageCatalogue, build_view
    finally:
        sys.path.pop(0)
    searcher = Searcher.load(tiny_project / "artifacts", root=tiny_project)
    page = PageCatalogue(searcher, build_view(searcher))
    title = str(searcher.items["productDisplayName"][5])
    assert page.words(title, 3, {}).matches[0].metadata["productDisplayName"] == title
    item_id = str(int(searcher.items["id"][5]))
    refined = page.words("black", 3, {}, item_id=item_id)
    assert len(refined.matches) == 3 and item_id not in [m.id for m in refined.matches]
    with pytest.raises(TextQueryError):
        page.words("???", 3, {})
