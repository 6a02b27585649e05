"""The shopper page (app/app.py) under streamlit.testing.v1.AppTest.

Covers the three ways to ask (upload, catalogue pick or browse, "more like this"), K and
the filters, bad uploads, and the stop page for missing or mismatched artifacts.

The Searcher loads once for this whole module: st.cache_resource is process-wide and
AppTest runs the script inside this process, so only the first run pays for TensorFlow;
``test_searcher_loads_once_per_process`` counts the real loads to keep it that way.
"""

from __future__ import annotations

import importlib
import io
import json
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import streamlit as st
from bad_inputs import bad_input_corpus
from PIL import Image
from streamlit.testing.v1 import AppTest

from lookalike.model.preprocessing import InvalidImageError, load_image
from lookalike.search.engine import Searcher

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "app"
APP = APP_DIR / "app.py"
ARTIFACTS = ROOT / "artifacts"
IMAGES = (ROOT / "../shared/data/fashion-5k/images").resolve()
RUN_TIMEOUT = 180  # ceiling for one script run (the first one loads the model on a busy CI box); never asserted
QUERY_ID = 10007  # a women's T-shirt
DEFAULT_K = 5


# --- fixtures and helpers ---

@pytest.fixture(scope="module", autouse=True)
def searcher_loads() -> Iterator[list[str]]:
    """Every real Searcher.load of this module's AppTest runs, by folder (the cache starts empty here)."""
    st.cache_resource.clear()
    folders: list[str] = []
    original = Searcher.load.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Searcher], artifacts_dir: str | Path | None = None, *args: object, **kwargs: object):
        folders.append(str(artifacts_dir))
        return original(cls, artifacts_dir, *args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(Searcher, "load", classmethod(counting))
    yield folders
    patch.undo()


@pytest.fixture(autouse=True)
def no_live_catalogue(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The pinned build alone, whatever live database a service left in the working tree (tests/test_app_live.py
    covers the page over a live catalogue)."""
    monkeypatch.setenv("LOOKALIKE_LIVE_DB", str(tmp_path / "no-live.db"))


@pytest.fixture(scope="module")
def page_logic() -> ModuleType:
    """app/page_logic.py under the name the app itself imports it by (app/ is on sys.path for both)."""
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))
    return importlib.import_module("page_logic")


@pytest.fixture(scope="module")
def items() -> pd.DataFrame:
    """The pinned catalogue table, to check what the page says about each result."""
    return pd.read_csv(ARTIFACTS / "items.csv").set_index("id")


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """A fresh session on the pinned artifacts, after its first run."""
    monkeypatch.delenv("LOOKALIKE_ARTIFACTS", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def photo(item_id: int = QUERY_ID) -> bytes:
    return (IMAGES / f"{item_id}.jpg").read_bytes()


def converted(item_id: int, fmt: str) -> bytes:
    """A catalogue photo re-encoded as PNG, WebP, BMP or a two-frame animated GIF."""
    image = Image.open(IMAGES / f"{item_id}.jpg").convert("RGB")
    buffer = io.BytesIO()
    if fmt == "GIF":
        image.save(buffer, "GIF", save_all=True, append_images=[image.rotate(90)], duration=100, loop=0)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims absurd dimensions (a decompression bomb in miniature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


def upload(at: AppTest, name: str, data: bytes, mime: str = "image/jpeg") -> AppTest:
    at.file_uploader(key="upload").set_value((name, data, mime))
    at.run()
    assert not at.exception, at.exception
    return at


def has_results(at: AppTest) -> bool:
    try:
        at.get_by_key("results")
    except KeyError:
        return False
    return True


def result_ids(at: AppTest) -> list[int]:
    """Ids of the result cards, in rank order, read from their "more like this" buttons."""
    buttons = at.get_by_key("results").button
    return [int(b.key.removeprefix("more-")) for b in buttons if b.key.startswith("more-")]


def result_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.get_by_key("results").caption]


def query_item_caption(at: AppTest) -> str:
    return at.get_by_key("query-item").caption[0].value


def sidebar_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.sidebar.markdown)


def assert_labelled(at: AppTest, items: pd.DataFrame, ids: list[int]) -> None:
    """Each card shows an image, the name, type · colour · gender · #id and a similarity score."""
    block = at.get_by_key("results")
    assert len(block.image) == len(ids)
    captions, names = result_captions(at), [m.value for m in block.markdown]
    progress = [p.text for p in block.get("progress")]
    for item_id, caption, name, score in zip(ids, captions, names, progress, strict=True):
        row = items.loc[item_id]
        assert caption == f"{row.articleType} · {row.baseColour} · {row.gender} · #{item_id}"
        assert row.productDisplayName in name
        assert score.startswith("Similarity ")


def set_filters(at: AppTest, **chosen: list[str]) -> AppTest:
    for column, values in chosen.items():
        at.multiselect(key=f"filter_{column}").set_value(values)
    at.run()
    assert not at.exception, at.exception
    return at


# --- settings the page reads ---

def test_settings_come_from_params_with_safe_defaults(page_logic: ModuleType, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("search:\n  k: 7\n  max_upload_mb: 2.5\n")
    settings = page_logic.read_settings(params)
    assert (settings.default_k, settings.max_bytes, settings.widget_max_mb) == (7, 2_500_000, 3)
    params.write_text("search:\n  k: zero\n  max_upload_mb: -1\n")
    assert page_logic.read_settings(params) == page_logic.PageSettings()
    assert page_logic.read_settings(tmp_path / "absent.yaml") == page_logic.PageSettings(5, 10.0)
    assert page_logic.read_settings().max_upload_mb == 10  # the repository's params.yaml


def test_artifacts_folder_is_overridable(page_logic: ModuleType, tmp_path: Path) -> None:
    assert page_logic.artifacts_dir({}) == ARTIFACTS
    assert page_logic.artifacts_dir({"LOOKALIKE_ARTIFACTS": str(tmp_path)}) == tmp_path.resolve()
    assert page_logic.metrics_path(ARTIFACTS) == ROOT / "metrics" / "metrics.json"


# --- the page ---

def test_first_visit_invites_a_query_and_names_the_artifacts(app: AppTest) -> None:
    manifest = json.loads((ARTIFACTS / "manifest.json").read_text())
    metrics = json.loads((ROOT / "metrics" / "metrics.json").read_text())
    assert app.title[0].value == "Lookalike"
    assert "Upload a photo" in app.info[0].value
    assert app.slider(key="k").value == DEFAULT_K
    about = sidebar_text(app)
    assert manifest["files"]["model"]["sha256"][:12] in about
    assert manifest["files"]["index"]["sha256"][:12] in about
    assert manifest["created_at"][:10] in about
    assert f"{metrics['trained']['precision_at_5']:.1%}" in about
    assert not has_results(app)
    assert not app.error


def test_upload_shows_the_photo_and_k_labelled_results(app: AppTest, items: pd.DataFrame) -> None:
    upload(app, "my-shirt.jpg", photo())
    ids = result_ids(app)
    assert len(ids) == DEFAULT_K
    assert len(set(ids)) == DEFAULT_K
    assert ids[0] == QUERY_ID  # the README: an uploaded catalogue photo finds that product first
    assert_labelled(app, items, ids)
    assert app.subheader[0].value == "Lookalikes from the catalogue"
    assert app.get_by_key("query-photo").caption[0].value == "Your photo"
    assert len(app.get_by_key("query-photo").image) == 1
    timing = next(c.value for c in app.caption if c.value.startswith("Query time"))
    assert "embedding" in timing
    assert "search" in timing
    assert "ms" in timing


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("WEBP", "image/webp"), ("BMP", "image/bmp"),
                                           ("GIF", "image/gif")])
def test_other_image_formats_are_accepted(app: AppTest, fmt: str, mime: str) -> None:
    upload(app, f"photo.{fmt.lower()}", converted(QUERY_ID, fmt), mime)
    assert not app.error
    assert len(result_ids(app)) == DEFAULT_K


def test_catalogue_pick_shows_related_products_never_the_item_itself(app: AppTest, items: pd.DataFrame) -> None:
    picker = app.selectbox(key="pick")
    name = items.loc[QUERY_ID, "productDisplayName"]
    assert f"{QUERY_ID} · {name}" in picker.options  # the label carries both id and name, so typing either finds it
    picker.set_value(QUERY_ID)
    app.run()
    assert not app.exception
    assert app.subheader[0].value == "Related products"
    assert query_item_caption(app).endswith(f"#{QUERY_ID}")
    ids = result_ids(app)
    assert len(ids) == DEFAULT_K
    assert QUERY_ID not in ids
    assert_labelled(app, items, ids)
    assert "embedding precomputed" in next(c.value for c in app.caption if c.value.startswith("Query time"))

    app.button(key=f"more-{ids[0]}").click()  # wander off, then back to the picked product
    app.run()
    assert query_item_caption(app).endswith(f"#{ids[0]}")
    app.button(key="show_picked").click()
    app.run()
    assert query_item_caption(app).endswith(f"#{QUERY_ID}")


def test_browse_grid_pages_and_picks(app: AppTest) -> None:
    first_page = [b.key for b in app.get_by_key("browse").button]
    assert len(first_page) == 16
    app.pagination[0].set_value(2)
    app.run()
    second_page = [b.key for b in app.get_by_key("browse").button]
    assert second_page
    assert not set(second_page) & set(first_page)
    picked = int(second_page[0].removeprefix("browse-"))
    app.button(key=second_page[0]).click()
    app.run()
    assert app.subheader[0].value == "Related products"
    assert query_item_caption(app).endswith(f"#{picked}")
    assert picked not in result_ids(app)


def test_more_like_this_follows_a_result_and_the_photo_can_come_back(app: AppTest) -> None:
    upload(app, "my-shirt.jpg", photo())
    clicked = result_ids(app)[1]
    app.button(key=f"more-{clicked}").click()
    app.run()
    assert app.subheader[0].value == "Related products"
    assert query_item_caption(app).endswith(f"#{clicked}")
    ids = result_ids(app)
    assert len(ids) == DEFAULT_K
    assert clicked not in ids

    app.button(key=f"more-{ids[0]}").click()  # and on again from there
    app.run()
    assert query_item_caption(app).endswith(f"#{ids[0]}")
    assert ids[0] not in result_ids(app)

    app.button(key="search_photo_again").click()
    app.run()
    assert app.subheader[0].value == "Lookalikes from the catalogue"
    assert QUERY_ID in result_ids(app)


def test_k_slider_sets_the_number_of_results(app: AppTest) -> None:
    upload(app, "my-shirt.jpg", photo())
    app.slider(key="k").set_value(8)
    app.run()
    assert len(result_ids(app)) == 8


@pytest.mark.parametrize("query", ["upload", "item"])
def test_filters_give_the_top_k_among_matching_items(app: AppTest, items: pd.DataFrame, query: str) -> None:
    """A T-shirt query filtered to men's footwear: none of the unfiltered top K pass, yet K results come back."""
    if query == "upload":
        upload(app, "my-shirt.jpg", photo())
    else:
        app.selectbox(key="pick").set_value(QUERY_ID)
    app.slider(key="k").set_value(7)
    set_filters(app, gender=["Men"], masterCategory=["Footwear"])
    ids = result_ids(app)
    assert len(ids) == 7
    assert (items.loc[ids, "gender"] == "Men").all()
    assert (items.loc[ids, "masterCategory"] == "Footwear").all()
    assert "Top 7 of" in " ".join(c.value for c in app.caption)

    set_filters(app, gender=[], masterCategory=[], articleType=["Watches"], baseColour=["Black", "Silver"])
    ids = result_ids(app)
    assert len(ids) == 7
    assert (items.loc[ids, "articleType"] == "Watches").all()
    assert items.loc[ids, "baseColour"].isin(["Black", "Silver"]).all()

    app.button(key="clear_filters").click()
    app.run()
    assert all(not app.multiselect(key=f"filter_{c}").value for c in ("gender", "articleType", "baseColour"))
    assert len(result_ids(app)) == 7 and "Top 7 of" not in " ".join(c.value for c in app.caption)


def test_filters_with_fewer_than_k_matches_say_so(app: AppTest, items: pd.DataFrame) -> None:
    matching = items[(items.gender == "Girls") & (items.articleType == "Tshirts")].index.tolist()
    assert 0 < len(matching) < DEFAULT_K
    upload(app, "my-shirt.jpg", photo())
    set_filters(app, gender=["Girls"], articleType=["Tshirts"])
    assert sorted(result_ids(app)) == sorted(matching)
    assert f"Only {len(matching)} products match" in app.warning[0].value

    app.button(key=f"more-{matching[0]}").click()  # the item itself is one of the matches: one fewer left
    app.run()
    assert result_ids(app) == [i for i in matching if i != matching[0]]

    assert not ((items.gender == "Girls") & (items.articleType == "Watches")).any()
    set_filters(app, articleType=["Watches"])
    assert "No products match your filters" in app.warning[0].value
    assert not has_results(app)


def _truncated() -> bytes:
    data = photo()
    return data[: len(data) // 2]


BAD_UPLOADS = {
    "not-an-image": ("notes.jpg", lambda: b"this is a shopping list, not a photo\n"),
    "truncated": ("half.jpg", _truncated),
    "empty": ("empty.png", lambda: b""),
    "absurd-dimensions": ("huge.png", lambda: png_claiming(30_000, 30_000)),
}


@pytest.mark.parametrize("case", [*BAD_UPLOADS, "over-the-size-cap"])
def test_bad_upload_shows_the_reason_and_the_next_upload_works(app: AppTest, page_logic: ModuleType,
                                                               case: str) -> None:
    settings = page_logic.read_settings()
    if case == "over-the-size-cap":  # a real JPEG, padded past search.max_upload_mb (JPEG ignores trailing bytes)
        name, data = "big.jpg", photo() + b"\0" * (settings.max_bytes + 500_000)
    else:
        name, make = BAD_UPLOADS[case]
        data = make()
    with pytest.raises(InvalidImageError) as expected:
        load_image(data, max_bytes=settings.max_bytes)

    upload(app, name, data)
    assert len(app.error) == 1
    assert page_logic.escape_markdown(str(expected.value)) in app.error[0].value
    assert name in app.error[0].value
    assert not has_results(app)

    upload(app, "my-shirt.jpg", photo())
    assert not app.error
    assert len(result_ids(app)) == DEFAULT_K


@pytest.mark.parametrize("case", list(bad_input_corpus(10_000_000)))
def test_every_file_of_the_bad_input_corpus_gets_an_answer_or_a_message(app: AppTest, page_logic: ModuleType,
                                                                         case: str) -> None:
    settings = page_logic.read_settings()
    data, answers = bad_input_corpus(settings.max_bytes)[case]
    upload(app, "upload.jpg", data)  # the uploader checks the extension; the content is what is tested
    if answers:
        assert not app.error and len(result_ids(app)) == DEFAULT_K
    else:
        assert len(app.error) == 1 and "upload.jpg" in app.error[0].value
        assert not has_results(app)
    upload(app, "my-shirt.jpg", photo())
    assert not app.error
    assert len(result_ids(app)) == DEFAULT_K


def _linked_copy(target: Path, skip: str | None = None, change: str | None = None) -> Path:
    """The pinned artifacts as symlinks (cheap), minus one file or with one file altered."""
    target.mkdir()
    for source in ARTIFACTS.iterdir():
        if source.name == skip or not source.is_file():
            continue
        if source.name == change:
            (target / source.name).write_bytes(source.read_bytes() + b"\n")
        else:
            (target / source.name).symlink_to(source)
    return target


@pytest.mark.parametrize(("case", "kind", "detail"), [
    ("no-folder", "missing", "no manifest"),
    ("no-manifest", "missing", "no manifest"),
    ("file-gone", "incomplete", "is missing"),
    ("file-changed", "mismatched", "does not match the manifest"),
])
def test_broken_artifacts_get_a_clear_page(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: str, kind: str,
                                           detail: str) -> None:
    folder = {
        "no-folder": lambda: tmp_path / "nowhere",
        "no-manifest": lambda: _linked_copy(tmp_path / "artifacts", skip="manifest.json"),
        "file-gone": lambda: _linked_copy(tmp_path / "artifacts", skip="faiss.index"),
        "file-changed": lambda: _linked_copy(tmp_path / "artifacts", change="items.csv"),
    }[case]()
    monkeypatch.setenv("LOOKALIKE_ARTIFACTS", str(folder))
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert f"the search artifacts are {kind}" in message
    assert detail in message
    assert at.code[0].value == "dvc repro"
    assert str(folder) in " ".join(m.value for m in at.markdown)
    assert not at.file_uploader
    assert not at.sidebar.slider


def test_searcher_loads_once_per_process(searcher_loads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions and reruns share one loaded model: after all of the above, still a single load."""
    monkeypatch.delenv("LOOKALIKE_ARTIFACTS", raising=False)
    for _ in range(2):
        at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
        upload(at, "my-shirt.jpg", photo())
        at.slider(key="k").set_value(3)
        at.run()
        assert len(result_ids(at)) == 3
    assert searcher_loads.count(str(ARTIFACTS)) == 1


def test_alike_by_changes_the_results_as_the_library_ranks_them(app: AppTest) -> None:
    app.selectbox(key="pick").set_value(QUERY_ID)
    app.run()
    control = app.segmented_control(key="alike")
    assert control.options == ["Overall look", "Same colour", "Same type", "Same style", "Whole picture"]
    assert control.value == "overall"
    searcher = Searcher.load(ARTIFACTS)
    by_mode = {}
    for mode in ("colour", "type", "overall"):
        app.segmented_control(key="alike").set_value(mode)  # the widget of the latest run
        app.run()
        assert not app.exception
        by_mode[mode] = result_ids(app)
        assert by_mode[mode] == [m.id for m in searcher.similar_items(QUERY_ID, DEFAULT_K, similarity=mode).matches]
    assert by_mode["colour"] != by_mode["type"]
    about = next(m.value for m in app.sidebar.markdown if "Same type and colour" in m.value)
    metrics = json.loads((ROOT / "metrics/metrics.json").read_text())
    assert f"{metrics['trained']['type_colour_precision_at_5']:.1%}" in about
