"""The shopper page shows each catalogue's own columns: filters, names and card lines come from the build's roles.

A grocery build (tests/grocery_build.py: the tiny fashion build with its columns renamed ``class``,
``coarse_class``, ``name``) under AppTest, as tests/test_app.py runs the page, plus the plain helpers that name a
column and a product.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import streamlit as st
from grocery_build import grocery_build
from streamlit.testing.v1 import AppTest

from lookalike.catalogue.description import CatalogueRoles
from lookalike.live import DB_ENV

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "app"
APP = APP_DIR / "app.py"
RUN_TIMEOUT = 180
FASHION_WORDS = ("Gender", "gender", "articleType", "Article type", "baseColour", "Base colour", "Product type")


@pytest.fixture(scope="module")
def page_logic() -> ModuleType:
    """app/page_logic.py under the name the page imports it by."""
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))
    return importlib.import_module("page_logic")


@pytest.fixture(scope="module", autouse=True)
def page_cache() -> Iterator[None]:
    """The page's process-wide caches (the loaded builds) empty before and after this module."""
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture(scope="module")
def grocery(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grocery build's artifacts folder."""
    return grocery_build(tiny_project / "artifacts", tmp_path_factory.mktemp("grocery") / "artifacts")


def open_page(artifacts: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AppTest:
    """A fresh session of the page on ``artifacts``, without a live database."""
    monkeypatch.setenv("LOOKALIKE_ARTIFACTS", str(artifacts))
    monkeypatch.setenv(DB_ENV, str(tmp_path / "no-live.db"))
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def page(grocery: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AppTest:
    return open_page(grocery, monkeypatch, tmp_path)


def page_text(at: AppTest) -> str:
    """Every label, option, caption and line of text the page shows."""
    texts = [w.label for w in (*at.multiselect, *at.selectbox, *at.slider, *at.button, *at.text_input)]
    texts += [t.value for t in (*at.markdown, *at.caption, *at.subheader, *at.title, *at.info, *at.warning)]
    texts += [str(o) for w in at.multiselect for o in w.options]
    return "\n".join(texts)


def test_a_grocery_page_filters_and_shows_its_own_columns(page: AppTest, grocery: Path) -> None:
    items = pd.read_csv(grocery / "items.csv", dtype=str).set_index("id")
    assert [(w.key, w.label) for w in page.sidebar.multiselect] == [("filter_coarse_class", "Coarse class"),
                                                                    ("filter_class", "Class")]
    assert page.multiselect(key="filter_coarse_class").options == sorted(set(items["coarse_class"]))
    footwear = items.index[items["coarse_class"] == "Footwear"].tolist()
    query = items.index[items["coarse_class"] == "Apparel"][0]
    page.multiselect(key="filter_coarse_class").set_value(["Footwear"])
    page.selectbox(key="pick").set_value(query)
    page.run()
    assert not page.exception, page.exception
    results = page.get_by_key("results")
    ids = [b.key.removeprefix("more-") for b in results.button if b.key.startswith("more-")]
    assert ids and set(ids) <= set(footwear)
    for item_id, name, caption in zip(ids, [m.value for m in results.markdown], [c.value for c in results.caption],
                                      strict=True):
        assert items.loc[item_id, "name"] in name  # the title column
        assert caption == f"Footwear · {items.loc[item_id, 'class']} · #{item_id}"  # the card columns
    assert page.get_by_key("query-item").caption[0].value == \
        f"Apparel · {items.loc[query, 'class']} · #{query}"
    shown = page_text(page)
    assert not [word for word in FASHION_WORDS if word in shown], shown
    page.button(key="clear_filters").click()
    page.run()
    assert page.multiselect(key="filter_coarse_class").value == []


def test_the_fashion_page_still_reads_as_fashion(tiny_project: Path, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """The fashion description's filters, product names and type · colour · gender lines."""
    at = open_page(tiny_project / "artifacts", monkeypatch, tmp_path)
    items = pd.read_csv(tiny_project / "artifacts/items.csv", dtype=str).set_index("id")
    assert [w.label for w in at.sidebar.multiselect] == ["Gender", "Master category", "Article type", "Base colour"]
    query = items.index[3]
    at.selectbox(key="pick").set_value(query)
    at.run()
    assert not at.exception, at.exception
    row = items.loc[query]
    assert at.get_by_key("query-item").caption[0].value == \
        f"{row.articleType} · {row.baseColour} · {row.gender} · #{query}"
    assert f"More like **{row.productDisplayName}**." in [m.value for m in at.markdown]
    assert f"{query} · {row.productDisplayName}" in at.selectbox(key="pick").options


@pytest.mark.parametrize("column, label", [
    ("articleType", "Article type"), ("coarse_class", "Coarse class"), ("gender", "Gender"),
    ("masterCategory", "Master category"), ("baseColour", "Base colour"), ("class", "Class"),
    ("pack-size", "Pack size"), ("SKUCode", "SKU code"), ("country_of_origin", "Country of origin"),
    ("EAN", "EAN"), ("", ""),
])
def test_a_columns_label_is_made_from_its_name(page_logic: ModuleType, column: str, label: str) -> None:
    assert page_logic.column_label(column) == label


def test_names_and_card_lines_come_from_the_roles(page_logic: ModuleType) -> None:
    metadata = {"name": "Granny Smith", "class": "Apple", "coarse_class": "Fruit", "gender": "Men"}
    assert page_logic.display_name(metadata, "name", "17") == "Granny Smith"
    assert page_logic.display_name(metadata, None, "17") == "17"  # no title column: the id
    assert page_logic.display_name({"name": "nan"}, "name", "17") == "17"  # a row without one: the id
    assert page_logic.describe(metadata, ("coarse_class", "class")) == "Fruit · Apple"
    assert page_logic.describe(metadata, ("coarse_class", "colour", "class")) == "Fruit · Apple"
    assert page_logic.describe(metadata, ()) == ""
    assert page_logic.item_label("17", "Granny Smith") == "17 · Granny Smith"
    assert page_logic.item_label("17", "17") == "17"
    product = page_logic.Product("17", metadata, None, name="Granny Smith", line="Fruit · Apple")
    assert page_logic.caption(product) == "Fruit · Apple · #17"
    assert page_logic.caption(page_logic.Product("17", {}, None)) == "#17"
    assert page_logic.BuildView([], [], {}, {}).roles == CatalogueRoles()
