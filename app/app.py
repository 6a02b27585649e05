"""Lookalike: the shopper page. Find catalogue products that look like a photo or like another product.

Start it from the repository root with ``streamlit run app/app.py`` (see docs/app.md).
The model, embeddings and index are loaded once per process (st.cache_resource) and
shared by every visitor; each interaction only embeds (for an upload) and searches.
When the service's live database exists, the page shows the same live catalogue: it is
opened read-only once per process and each rerun applies the changes committed since.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypeVar

APP_DIR = Path(__file__).resolve().parent
ROOT = APP_DIR.parent
for _path in (str(APP_DIR), str(ROOT)):  # `streamlit run` puts only app/ on sys.path; lookalike lives in ROOT
    if _path not in sys.path:
        sys.path.insert(0, _path)

import streamlit as st  # noqa: E402
from streamlit import config as st_config  # noqa: E402
from streamlit.delta_generator import DeltaGenerator  # noqa: E402
from streamlit.runtime.uploaded_file_manager import UploadedFile  # noqa: E402

from lookalike.artifacts import ArtifactMismatchError, published_build_id  # noqa: E402
from lookalike.live import LiveCatalogue  # noqa: E402
from lookalike.model.preprocessing import SUPPORTED_FORMATS_TEXT, InvalidImageError  # noqa: E402
from lookalike.search.engine import Searcher  # noqa: E402

# isort: split
from page_logic import (  # noqa: E402  (app/, beside this script)
    ALIKE_LABELS,
    ARTIFACTS_ENV,
    BUILD_COMMAND,
    MAX_K,
    UPLOAD_TYPES,
    ArtifactInfo,
    BuildView,
    PageCatalogue,
    PageSettings,
    Photo,
    Product,
    Results,
    artifact_info,
    artifacts_dir,
    build_view,
    caption,
    column_label,
    escape_markdown,
    label_of,
    live_db_path,
    metrics_path,
    page_count,
    read_settings,
)

log = logging.getLogger("lookalike.app")
T = TypeVar("T")

RESULT_COLUMNS = 5
BROWSE_COLUMNS = 8
BROWSE_ROWS = 2
UNEXPECTED_ERROR = ("Something went wrong on our side and this search could not be finished. Please try again, "
                    "or try another photo.")


@st.cache_resource(show_spinner="Loading the catalogue and the lookalike model…", max_entries=1)
def load_searcher(folder: str, max_bytes: int, build: str | None) -> Searcher:
    """Once per process, folder and published build: every session and rerun shares the model, embeddings and
    index; a newly published build (``build`` changes) is loaded on the next rerun and the old one released."""
    return Searcher.load(folder, root=ROOT, max_bytes=max_bytes)


@st.cache_resource(show_spinner=False, max_entries=1)
def catalogue_view(folder: str, max_bytes: int, build: str, _searcher: Searcher) -> BuildView:
    """Names, picker labels (id -> 'id · name') and filter choices of the build, once per loaded searcher."""
    return build_view(_searcher)


@st.cache_resource(show_spinner="Loading the live catalogue…", max_entries=1)
def load_live(db: str, folder: str, max_bytes: int, build: str, _searcher: Searcher) -> LiveCatalogue:
    """Once per process and database: the service's live catalogue over the loaded build, read-only."""
    live = LiveCatalogue.for_page(_searcher, db)
    if live is None:  # raised, not cached: a database the service creates later is picked up then
        raise FileNotFoundError(f"no live catalogue database at {db}")
    return live


def live_catalogue(folder: Path, settings: PageSettings, searcher: Searcher) -> LiveCatalogue | None:
    """The live catalogue with every change committed so far, or None (no live database: the build alone)."""
    db = live_db_path(folder)
    if isinstance(db, Path) and not db.is_file():  # a PostgreSQL journal: for_page finds out whether it exists
        return None
    try:
        live = load_live(str(db), str(folder), settings.max_bytes, searcher.manifest["build_id"], searcher)
    except FileNotFoundError:
        return None
    live.refresh()
    return live


# --- state changes (widget callbacks run before the script, so the page renders the new query at once) ---

def choose_item(item_id: str) -> None:
    """Make a catalogue item the query: 'more like this', the product picker and the browse grid all land here."""
    st.session_state["query"] = {"kind": "item", "id": str(item_id)}


def choose_picked() -> None:
    """The picker's on_change: a newly picked product becomes the query."""
    picked = st.session_state.get("pick")
    if picked is not None:
        choose_item(picked)


def choose_upload() -> None:
    """Back to the photo still in the uploader after wandering off through 'more like this'."""
    uploaded = st.session_state.get("upload")
    if isinstance(uploaded, UploadedFile):
        st.session_state["query"] = {"kind": "upload", "file_id": uploaded.file_id}


def clear_filters(columns: Sequence[str]) -> None:
    """One click instead of one per filter; runs before the multiselects exist, so their state may be set."""
    for column in columns:
        st.session_state[f"filter_{column}"] = []


# --- page sections ---

def artifacts_problem_page(folder: Path, error: Exception) -> None:
    """A readable stop page instead of a traceback: which folder, what is wrong, and the command that fixes it."""
    kind = error.kind if isinstance(error, ArtifactMismatchError) else "mismatched"
    st.title("Lookalike")
    st.error(f"**Search is unavailable: the search artifacts are {kind}.**\n\n{escape_markdown(str(error))}",
             icon=":material/error:")
    st.markdown(f"The page reads its artifacts from `{folder}`. Build them from the repository root with:")
    st.code(BUILD_COMMAND, language="bash")
    st.caption(f"Then reload this page. To use another folder, set the environment variable `{ARTIFACTS_ENV}`.")
    st.stop()


def sidebar(settings: PageSettings, columns: Sequence[str], options: dict[str, list[str]],
            info: ArtifactInfo) -> tuple[int, dict]:
    """K, the filters (one per filter column of the build, named after the column) and the facts about the model
    in use; returns (k, filters)."""
    with st.sidebar:
        st.header("Refine")
        k = st.slider("Results to show", 1, MAX_K, settings.default_k, key="k")
        filters = {column: st.multiselect(column_label(column), options.get(column, []),
                                          key=f"filter_{column}", placeholder="Any")
                   for column in columns}
        if any(filters.values()):
            st.button("Clear filters", key="clear_filters", on_click=clear_filters, args=(tuple(columns),),
                      icon=":material/filter_alt_off:")
        st.divider()
        st.subheader("About the search")
        precision = "not available" if info.precision_at_5 is None else f"{info.precision_at_5:.1%}"
        look = "not available" if info.look_precision_at_5 is None else f"{info.look_precision_at_5:.1%}"
        st.markdown(
            f"- Catalogue: **{info.items:,}** products\n"
            f"- Model `{info.model_hash}` ({info.backbone})\n"
            f"- Index `{info.index_hash}` ({info.index_type})\n"
            f"- Built {info.created}\n"
            f"- Test precision@5: **{precision}**\n"
            f"- Same type and colour in the top 5: **{look}**",
            help="First 12 characters of the model and index sha256 in artifacts/manifest.json; precision@5 is "
                 "the share of the top 5 results with the query's product type, on held-out test photos; the "
                 "second figure counts only results of the query's type AND colour (the catalogue's own colour "
                 "names: Navy Blue is not Blue).",
        )
    return k, filters


def upload_tab(settings: PageSettings, widget_mb: int) -> UploadedFile | None:
    """The photo uploader; a newly uploaded file becomes the query."""
    uploaded = st.file_uploader(
        "Upload a photo of something you like", type=list(UPLOAD_TYPES), key="upload", max_upload_size=widget_mb,
        help=f"{SUPPORTED_FORMATS_TEXT} (first frame), up to {settings.max_upload_mb:g} MB.")
    current = uploaded.file_id if isinstance(uploaded, UploadedFile) else None
    if current != st.session_state.get("seen_upload"):  # a new file (or a removed one) since the last run
        st.session_state["seen_upload"] = current
        if current is not None:
            st.session_state["query"] = {"kind": "upload", "file_id": current}
        elif (st.session_state.get("query") or {}).get("kind") == "upload":
            st.session_state["query"] = None
    query = st.session_state.get("query") or {}
    if current is not None and query.get("kind") != "upload":
        st.button("Search with this photo again", key="search_photo_again", on_click=choose_upload,
                  icon=":material/image_search:")
    return uploaded if isinstance(uploaded, UploadedFile) else None


def find_tab(labels: dict[str, str]) -> None:
    """Pick a product by id or name; the select box filters as you type."""
    st.selectbox("Product", list(labels), index=None, format_func=partial(label_of, labels), key="pick",
                 on_change=choose_picked, placeholder="Type a product id or part of its name…")
    picked = st.session_state.get("pick")
    query = st.session_state.get("query") or {}
    if picked is not None and query != {"kind": "item", "id": str(picked)}:
        st.button("Show related products", key="show_picked", on_click=choose_item, args=(str(picked),),
                  icon=":material/search:")


def browse_tab(catalogue: PageCatalogue, filters: dict) -> None:
    """A page of catalogue products (respecting the filters), each one click away from its related products."""
    ids = catalogue.browse_ids(filters)
    if not ids:
        st.info("No products match your filters. Clear some in the sidebar.", icon=":material/filter_alt_off:")
        return
    per_page = BROWSE_COLUMNS * BROWSE_ROWS
    pages = page_count(len(ids), per_page)
    st.caption(f"{len(ids):,} products" + (" match your filters" if any(filters.values()) else "") +
               ". Pick one to see related products.")
    grid = st.container(key="browse")
    page = st.pagination(pages, key=f"browse_page_{pages}", max_visible_pages=7)  # new count, back to page 1
    start = (min(max(int(page), 1), pages) - 1) * per_page
    with grid:
        for column, item_id in in_grid(ids[start:start + per_page], BROWSE_COLUMNS):
            product = catalogue.product(item_id)
            with column:
                product_image(product.photo, product.name)
                st.caption(product.name)
                st.button("Related", key=f"browse-{product.id}", on_click=choose_item, args=(product.id,),
                          width="stretch", help=f"Products that look like {product.name}")


def in_grid(things: Sequence[T], columns: int) -> Iterator[tuple[DeltaGenerator, T]]:
    """Lay things out row by row in equal columns; a short last row keeps the same card width."""
    for start in range(0, len(things), columns):
        yield from zip(st.columns(columns), things[start:start + columns], strict=False)


def product_image(photo: Photo, name: str) -> None:
    """A catalogue photo (a file, or a live item's stored image), or a quiet placeholder if there is none."""
    if isinstance(photo, bytes):
        st.image(photo, width="stretch", alt=name)
    elif photo is not None and Path(photo).is_file():
        st.image(str(photo), width="stretch", alt=name)
    else:
        st.markdown(":material/image_not_supported: *photo unavailable*")


def result_card(match: Product) -> None:
    """One result: photo, name (the build's title column), card line (its card columns), similarity and the way
    on ('more like this')."""
    with st.container(key=f"result-{match.rank}", border=True):
        product_image(match.photo, match.name)
        st.markdown(f"**{escape_markdown(match.name)}**")
        st.caption(caption(match))
        st.progress(min(max(match.score, 0.0), 1.0), text=f"Similarity {match.score:.2f}")
        st.button("More like this", key=f"more-{match.id}", on_click=choose_item, args=(match.id,),
                  width="stretch", icon=":material/search:")


def results_section(response: Results, k: int, filters: dict) -> None:
    """The grid of the top K; says so when the filters leave fewer than K candidates."""
    active = {c: v for c, v in filters.items() if v}
    if active:
        candidates = response.candidates
        chosen = " · ".join(", ".join(values) for values in active.values())
        if candidates == 0:
            st.warning(f"No products match your filters ({chosen}). Clear some in the sidebar.",
                       icon=":material/filter_alt_off:")
            return
        if candidates < k:
            st.warning(f"Only {candidates} products match your filters ({chosen}), so you see {candidates} "
                       f"instead of {k}.", icon=":material/info:")
        else:
            st.caption(f"Top {k} of {candidates:,} products matching: {chosen}")
    with st.container(key="results"):
        for column, match in in_grid(response.matches, RESULT_COLUMNS):
            with column:
                result_card(match)


def timing_line(response: Results, embedded: bool) -> str:
    """Query time as shoppers (and whoever tunes the index) read it; a catalogue item needs no embedding."""
    embed = f"embedding {response.embed_ms:.0f} ms" if embedded else "embedding precomputed"
    return f"Query time {response.total_ms:.0f} ms ({embed}, search {response.search_ms:.1f} ms)"


def alike_control(catalogue: PageCatalogue) -> str:
    """What "alike" means for the results below (one index answers every choice); "overall" by default."""
    modes = catalogue.similarity_modes()
    if len(modes) == 1:
        return modes[0]
    chosen = st.segmented_control("Alike by", modes, default=modes[0], key="alike",
                                  format_func=lambda mode: ALIKE_LABELS.get(mode, mode.capitalize()),
                                  help="Overall weighs type, colour and style together; whole picture compares the "
                                       "photos as they look, with no labels (near-identical products first); the "
                                       "others rank by one of them. Applies to uploads and to 'More like this'.")
    return chosen or modes[0]


def upload_query(catalogue: PageCatalogue, uploaded: UploadedFile | None, k: int, filters: dict,
                 similarity: str | None = None) -> None:
    """Search with the uploaded photo; a bad file gets the reason on the page and nothing else changes.

    The upload is decoded once: the preview shows exactly the image the search embeds.
    """
    if uploaded is None:
        return
    try:
        image = catalogue.decode(uploaded.getvalue())
        response = catalogue.search(image, k, filters, similarity)
    except InvalidImageError as error:
        st.error(f"**We couldn't use {escape_markdown(uploaded.name)}:** {escape_markdown(str(error))}.\n\n"
                 "Please try another photo.", icon=":material/broken_image:")
        return
    query_column, info_column = st.columns([1, 4], gap="large")
    with query_column:
        with st.container(key="query-photo", border=True):
            st.image(image, width="stretch", alt="Your photo")
            st.caption("Your photo")
    with info_column:
        st.subheader("Lookalikes from the catalogue")
        st.markdown(f"Products that look like **{escape_markdown(uploaded.name)}**.")
        st.caption(timing_line(response, embedded=True))
    results_section(response, k, filters)


def item_query(catalogue: PageCatalogue, item_id: str, k: int, filters: dict, similarity: str | None = None) -> None:
    """Related products for a catalogue item (never the item itself)."""
    try:
        item = catalogue.product(item_id)
        response = catalogue.similar(item_id, k, filters, similarity)
    except KeyError:  # never in the catalogue, or removed since it was chosen
        st.error(f"There is no product #{escape_markdown(item_id)} in the catalogue.", icon=":material/error:")
        return
    query_column, info_column = st.columns([1, 4], gap="large")
    with query_column:
        with st.container(key="query-item", border=True):
            product_image(item.photo, item.name)
            st.caption(caption(item))
    with info_column:
        st.subheader("Related products")
        st.markdown(f"More like **{escape_markdown(item.name)}**.")
        st.caption(timing_line(response, embedded=False))
    results_section(response, k, filters)


def words_query(catalogue: PageCatalogue, words: str, query: dict | None, uploaded: UploadedFile | None, k: int,
                filters: dict) -> None:
    """Products for the words, or the chosen photo or product refined by them ("in red"): lookalike/text/search.py."""
    from lookalike.text.tower import TextQueryError

    image = item_id = None
    try:
        if query and query["kind"] == "upload" and uploaded is not None:
            image = catalogue.decode(uploaded.getvalue())
        elif query and query["kind"] != "upload":
            item_id = str(query["id"])
        response = catalogue.words(words, k, filters, image=image, item_id=item_id)
    except (TextQueryError, InvalidImageError, KeyError, ArtifactMismatchError) as error:
        st.warning(f"We couldn't search for that: {escape_markdown(str(error).strip(chr(39)))}",
                   icon=":material/search_off:")
        return
    refined = image is not None or item_id is not None
    st.subheader("Refined by your words" if refined else "Products for your words")
    st.caption(timing_line(response, embedded=True))
    results_section(response, k, filters)


@st.cache_resource(show_spinner=False)
def upload_cap_mb(server_mb: int, widget_mb: int) -> int:
    """The uploader's cap: never above what the server accepts, which would fail without our message.

    Cached so the mismatch warning is logged once per process, not on every rerun.
    """
    if server_mb < widget_mb:
        log.warning("server.maxUploadSize is %s MB but search.max_upload_mb in params.yaml allows %s MB: "
                    "uploads are capped at %s MB (see docs/app.md)", server_mb, widget_mb, server_mb)
    return min(server_mb, widget_mb)


def main() -> None:
    """Settings and artifacts first (a stop page if they are broken), then sidebar, the three inputs, results."""
    st.set_page_config(page_title="Lookalike · find similar products", page_icon="👗", layout="wide")
    settings = read_settings()
    folder = artifacts_dir()
    try:
        searcher = load_searcher(str(folder), settings.max_bytes, published_build_id(folder))
    except (ArtifactMismatchError, OSError, ValueError, KeyError) as error:
        artifacts_problem_page(folder, error)
        return
    live = live_catalogue(folder, settings, searcher)
    catalogue = PageCatalogue(searcher, catalogue_view(str(folder), settings.max_bytes, searcher.manifest["build_id"],
                                                       searcher), live)
    info = replace(artifact_info(searcher.manifest, metrics_path(folder)), items=catalogue.size)

    widget_mb = upload_cap_mb(int(st_config.get_option("server.maxUploadSize")), settings.widget_max_mb)

    k, filters = sidebar(settings, catalogue.filter_columns, catalogue.options(), info)
    st.title("Lookalike")
    st.caption("Find products in our catalogue that look like a photo you have, or like a product you already "
               "love. Use the sidebar to narrow the results.")
    st.session_state.setdefault("query", None)
    photo_tab, pick_tab, grid_tab = st.tabs([":material/photo_camera: Upload a photo",
                                             ":material/search: Find a product",
                                             ":material/grid_view: Browse the catalogue"])
    with photo_tab:
        uploaded = upload_tab(settings, widget_mb)
    with pick_tab:
        find_tab(catalogue.labels())
    with grid_tab:
        browse_tab(catalogue, filters)

    st.divider()
    query = st.session_state.get("query")
    words = st.text_input("Search by words", key="words", max_chars=500,
                          placeholder="white sneakers · or, with a photo or product chosen, refine it: in red")
    if words.strip():
        words_query(catalogue, words, query, uploaded, k, filters)
    elif not query:
        st.info("Upload a photo, pick a product or browse the catalogue to see lookalikes here.",
                icon=":material/checkroom:")
    elif query["kind"] == "upload":
        upload_query(catalogue, uploaded, k, filters, alike_control(catalogue))
    else:
        item_query(catalogue, str(query["id"]), k, filters, alike_control(catalogue))


def run_page() -> None:
    """The page, with one friendly line instead of a traceback for anything unexpected (logged in full here).

    Streamlit's own stop and rerun signals are BaseExceptions and pass through untouched.
    """
    try:
        main()
    except Exception:
        log.exception("unexpected error while rendering the page")
        st.error(UNEXPECTED_ERROR, icon=":material/error:")


run_page()
