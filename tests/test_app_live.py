"""The page shows the service's live catalogue: a product added through the HTTP API is found by
its photo, browsed, picked and followed with "more like this"; a removed build item is in none of them.

A real `lookalike serve` process (tests/test_service.py's Server) runs on the pinned artifacts with its
live database in a temporary folder; the page (AppTest, as in tests/test_app.py) reads that database
through $LOOKALIKE_LIVE_DB, set per test with monkeypatch, so neither the variable nor the database
reaches another test. The library side (PageCatalogue over a LiveCatalogue) is checked in-process.
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import (
    APP,
    APP_DIR,
    ARTIFACTS,
    DEFAULT_K,
    IMAGES,
    RUN_TIMEOUT,
    has_results,
    photo,
    query_item_caption,
    upload,
)
from test_service import AUTH, Server

from lookalike.live import DB_ENV, LiveCatalogue, LiveStore
from lookalike.search.engine import Searcher

TWIN = 1163  # a men's blue T-shirt; the live product is its photo in other colours, and the twin is removed
SKU = "SKU-TEE-042"
SKU_META = {"articleType": "Tshirts", "gender": "Men", "baseColour": "Tangerine", "masterCategory": "Apparel",
            "productDisplayName": "Tangerine crew tee"}  # a colour no build item has
RESTYLED = 31143  # a build item replaced through the API: new photo and name
RESTYLED_META = {"articleType": "Tshirts", "gender": "Women", "baseColour": "White", "masterCategory": "Apparel",
                 "productDisplayName": "Restyled white tee"}


def recoloured(item_id: int) -> bytes:
    """A catalogue photo with its red and blue channels swapped (PNG): a product the build has not seen."""
    red, green, blue = Image.open(IMAGES / f"{item_id}.jpg").convert("RGB").split()
    buffer = io.BytesIO()
    Image.merge("RGB", (blue, green, red)).save(buffer, "PNG")
    return buffer.getvalue()


def mirrored(item_id: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(IMAGES / f"{item_id}.jpg").convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buffer,
                                                                                                         "JPEG")
    return buffer.getvalue()


def put(server: Server, item_id: str, image: bytes, metadata: dict) -> dict:
    response = server.client.put(f"/v1/items/{item_id}", files={"image": ("p.png", image, "image/png")},
                                 data=metadata, headers=AUTH)
    assert response.status_code in (200, 201), response.text
    return response.json()


def delete(server: Server, item_id: str) -> None:
    response = server.client.delete(f"/v1/items/{item_id}", headers=AUTH)
    assert response.status_code == 200, response.text


def card_ids(at: AppTest) -> list[str]:
    """Ids of the result cards in rank order (their "more like this" keys), as the strings the page uses."""
    return [b.key.removeprefix("more-") for b in at.get_by_key("results").button if b.key.startswith("more-")]


def browse_ids(at: AppTest) -> list[str]:
    return [b.key.removeprefix("browse-") for b in at.get_by_key("browse").button]


def products_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if " products" in c.value and "Pick one" in c.value)


def catalogue_size(at: AppTest) -> int:
    about = "\n".join(m.value for m in at.sidebar.markdown)
    return int(about.split("Catalogue: **")[1].split("**")[0].replace(",", ""))


@pytest.fixture(scope="module", autouse=True)
def page_cache() -> Iterator[None]:
    """Afterwards, drop what the page cached in this process (the read-only connection to this module's database)."""
    yield
    st.cache_resource.clear()


@pytest.fixture(scope="module")
def page_logic() -> ModuleType:
    """app/page_logic.py under the name the page imports it by."""
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))
    return importlib.import_module("page_logic")


@pytest.fixture(scope="module")
def items() -> pd.DataFrame:
    return pd.read_csv(ARTIFACTS / "items.csv").set_index("id")


@pytest.fixture(scope="module")
def live_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live-page") / "live.db"


@pytest.fixture(scope="module")
def service(live_db: Path) -> Iterator[Server]:
    """`lookalike serve` on the pinned build with a fresh live database: one product added (a recoloured photo
    of TWIN), TWIN removed, RESTYLED replaced, all through the HTTP API."""
    server = Server(ARTIFACTS, live_db, live_db.parent / "server.log")
    try:
        assert put(server, SKU, recoloured(TWIN), SKU_META)["created"] is True
        delete(server, str(TWIN))
        assert put(server, str(RESTYLED), mirrored(RESTYLED), RESTYLED_META)["created"] is False
        yield server
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text(), server.log.read_text()[-3000:]


@pytest.fixture
def page(service: Server, live_db: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """A fresh session of the page on the pinned artifacts and the service's live database."""
    monkeypatch.delenv("LOOKALIKE_ARTIFACTS", raising=False)
    monkeypatch.setenv(DB_ENV, str(live_db))
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    assert not at.exception, at.exception
    return at


# --- which database the page reads ---

def test_the_page_reads_the_database_lookalike_serve_writes(page_logic: ModuleType, tmp_path: Path) -> None:
    live_db_path = page_logic.live_db_path
    assert live_db_path(ARTIFACTS, {}) == ARTIFACTS.parent / "live" / "live.db"  # serve's default for ./artifacts
    assert live_db_path(tmp_path / "artifacts", {DB_ENV: str(tmp_path / "x.db")}) == tmp_path / "x.db"
    assert live_db_path(tmp_path / "artifacts", {DB_ENV: "shop/live.db"}) == tmp_path / "shop" / "live.db"


def test_without_a_live_database_the_page_shows_the_build_and_creates_none(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           items: pd.DataFrame) -> None:
    absent = tmp_path / "live" / "live.db"
    monkeypatch.delenv("LOOKALIKE_ARTIFACTS", raising=False)
    monkeypatch.setenv(DB_ENV, str(absent))
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    assert not at.exception, at.exception
    assert catalogue_size(at) == len(items)
    assert browse_ids(at) == [str(i) for i in items.index[:16]]
    upload(at, "twin.jpg", photo(TWIN))
    assert card_ids(at)[0] == str(TWIN)  # the build alone: the photo finds its product
    assert not absent.exists() and not absent.parent.exists()


# --- the live catalogue on the page ---

def test_a_product_added_through_the_api_is_found_first_by_its_photo(page: AppTest, items: pd.DataFrame) -> None:
    assert catalogue_size(page) == len(items)  # one added, one removed, one replaced
    upload(page, "new-tee.png", recoloured(TWIN), "image/png")
    ids = card_ids(page)
    assert ids[0] == SKU and len(ids) == DEFAULT_K and str(TWIN) not in ids
    results = page.get_by_key("results")
    assert len(results.image) == DEFAULT_K  # the live product's photo comes from the database
    assert "Tangerine crew tee" in results.markdown[0].value
    assert results.caption[0].value == f"Tshirts · Tangerine · Men · #{SKU}"

    upload(page, "twin.jpg", photo(TWIN))  # the removed product's own photo: never the removed product
    assert str(TWIN) not in card_ids(page) and len(card_ids(page)) == DEFAULT_K


def test_more_like_this_on_the_live_product(page: AppTest) -> None:
    upload(page, "new-tee.png", recoloured(TWIN), "image/png")
    page.button(key=f"more-{SKU}").click()
    page.run()
    assert not page.exception, page.exception
    assert page.subheader[0].value == "Related products"
    assert query_item_caption(page) == f"Tshirts · Tangerine · Men · #{SKU}"
    assert len(page.get_by_key("query-item").image) == 1
    ids = card_ids(page)
    assert len(ids) == DEFAULT_K and SKU not in ids and str(TWIN) not in ids  # TWIN would be first: removed

    page.button(key=f"more-{ids[0]}").click()  # on to a build product, whose neighbours may include the new one
    page.run()
    assert query_item_caption(page).endswith(f"#{ids[0]}")
    assert str(TWIN) not in card_ids(page) and len(card_ids(page)) == DEFAULT_K


def test_the_live_product_is_in_the_picker_and_first_in_the_grid(page: AppTest, items: pd.DataFrame) -> None:
    options = page.selectbox(key="pick").options
    assert f"{SKU} · Tangerine crew tee" in options
    assert f"{RESTYLED} · Restyled white tee" in options
    assert f"{RESTYLED} · {items.loc[RESTYLED, 'productDisplayName']}" not in options
    assert not [o for o in options if o.startswith(f"{TWIN} · ")]
    assert len(options) == len(items)

    assert browse_ids(page)[:2] == [str(RESTYLED), SKU]  # live products first, the latest change first
    page.button(key=f"browse-{SKU}").click()
    page.run()
    assert query_item_caption(page).endswith(f"#{SKU}") and SKU not in card_ids(page)

    page.selectbox(key="pick").set_value(f"{RESTYLED} · Restyled white tee")
    page.run()
    assert not page.exception, page.exception
    assert query_item_caption(page) == f"Tshirts · White · Women · #{RESTYLED}"
    assert any("More like **Restyled white tee**" in m.value for m in page.markdown)


def test_filters_cover_live_products_and_leave_out_the_removed_one(page: AppTest, items: pd.DataFrame) -> None:
    """Men's blue T-shirts: the removed one is neither counted nor listed; a new colour is offered and found."""
    blue = items[(items.gender == "Men") & (items.articleType == "Tshirts") & (items.baseColour == "Blue")]
    assert TWIN in blue.index
    for column, values in {"gender": ["Men"], "articleType": ["Tshirts"], "baseColour": ["Blue"]}.items():
        page.multiselect(key=f"filter_{column}").set_value(values)
    upload(page, "twin.jpg", photo(TWIN))
    assert products_caption(page).startswith(f"{len(blue) - 1:,} products match your filters")
    assert f"Top {DEFAULT_K} of {len(blue) - 1:,} products" in " ".join(c.value for c in page.caption)
    ids = card_ids(page)
    assert len(ids) == DEFAULT_K and str(TWIN) not in ids and set(ids) <= {str(i) for i in blue.index}

    assert "Tangerine" in page.multiselect(key="filter_baseColour").options
    page.multiselect(key="filter_baseColour").set_value(["Tangerine"])
    page.run()
    assert card_ids(page) == [SKU]
    assert "Only 1 products match your filters" in page.warning[0].value
    assert browse_ids(page) == [SKU]


def test_changes_reach_an_open_page_on_its_next_run(page: AppTest, service: Server) -> None:
    late = "SKU-LATE-7"
    upload(page, "new-tee.png", recoloured(TWIN), "image/png")
    put(service, late, recoloured(TWIN), {**SKU_META, "productDisplayName": "Late tee"})  # the same photo
    page.run()
    assert not page.exception, page.exception
    assert set(card_ids(page)[:2]) == {SKU, late}
    assert f"{late} · Late tee" in page.selectbox(key="pick").options
    assert browse_ids(page)[0] == late

    page.button(key=f"more-{late}").click()
    page.run()
    assert card_ids(page)[0] == SKU  # its twin, the same photo

    delete(service, late)  # removed while the page shows it as the query
    page.run()
    assert not page.exception, page.exception
    assert len(page.error) == 1 and f"no product #{late}" in page.error[0].value.replace("\\", "")
    assert not has_results(page)
    assert late not in browse_ids(page)
    assert not [o for o in page.selectbox(key="pick").options if o.startswith(f"{late} · ")]
    page.button(key=f"browse-{SKU}").click()
    page.run()
    assert late not in card_ids(page) and len(card_ids(page)) == DEFAULT_K


# --- the library under the page ---

@pytest.fixture(scope="module")
def searcher() -> Searcher:
    return Searcher.load(ARTIFACTS)


def test_page_catalogue_over_a_live_catalogue(page_logic: ModuleType, searcher: Searcher, tmp_path: Path,
                                              items: pd.DataFrame) -> None:
    """PageCatalogue answers like the build until changes come, then like the live catalogue (candidates too)."""
    PageCatalogue = page_logic.PageCatalogue  # noqa: N806 - the class
    view = page_logic.build_view(searcher)
    build = PageCatalogue(searcher, view)
    writer = LiveCatalogue.open(searcher, LiveStore(tmp_path / "live.db"))
    reader = LiveCatalogue.for_page(searcher, tmp_path / "live.db")
    assert reader is not None and reader.store.readonly
    live = PageCatalogue(searcher, view, reader)
    men = {"gender": ["Men"]}
    image = searcher.decode(photo(TWIN))
    assert [m.id for m in live.search(image, 8, men).matches] == [m.id for m in build.search(image, 8, men).matches]
    assert live.browse_ids(men) == build.browse_ids(men)
    assert live.labels() == build.labels()

    writer.put(SKU, recoloured(TWIN), SKU_META)
    writer.remove(str(TWIN))
    assert SKU not in live.labels()  # not before the page's refresh
    assert reader.refresh() == 2
    results = live.search(image, 8, men)
    before = build.search(image, 8, men)
    assert before.matches[0].id == str(TWIN) and str(TWIN) not in [m.id for m in results.matches]
    assert results.candidates == before.candidates  # one removed, one added, both men's
    assert live.browse_ids(men) == [SKU] + [i for i in build.browse_ids(men) if i != str(TWIN)]
    assert live.product(SKU).photo == recoloured(TWIN) and live.product(SKU).name == "Tangerine crew tee"
    assert live.product("10007").photo == Path(searcher.item(10007).image_path)
    with pytest.raises(KeyError):
        live.product(str(TWIN))
    similar = live.similar(SKU, 5, {"baseColour": ["Tangerine", "Blue"]})
    assert similar.candidates == (items.baseColour == "Blue").sum() - 1  # TWIN gone, SKU itself excluded
    assert SKU not in [m.id for m in similar.matches] and str(TWIN) not in [m.id for m in similar.matches]
    assert "Tangerine" in live.options()["baseColour"] and "Tangerine" not in build.options()["baseColour"]


def test_the_page_reads_a_postgresql_journal_url_as_it_is(page_logic: ModuleType, tmp_path: Path) -> None:
    url = "postgresql://lookalike@db.internal:5432/lookalike?sslmode=require"
    assert page_logic.live_db_path(tmp_path / "artifacts", {DB_ENV: url}) == url
