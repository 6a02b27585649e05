"""Text search as a long-running service serves it: bounded work per query whatever the catalogue's size, the
build's text search made when the build is loaded (never in a request), a build folder changed under a running
server, items removed mid-query, ``similarity`` beside words and items, and the shared state under threads.

Hand-made builds only (tests/test_text.py's hand tower and catalogue): no pipeline, no TensorFlow.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_text import COLOURS, DIM, FASHION_ROLES, TYPES, catalogue, hand_searcher, hand_tower

import lookalike.text.search as text_search_module
from lookalike.artifacts import sha256_file
from lookalike.live import LiveCatalogue, LiveStore
from lookalike.search.engine import Searcher
from lookalike.service.app import Metrics, create_app, install_error_handlers
from lookalike.service.routes import api_router
from lookalike.service.settings import Settings
from lookalike.service.text_routes import text_router
from lookalike.text.lexical import LexicalIndex
from lookalike.text.search import LiveTextSearch, Query, TextSearch, recent_limit, text_search_for

# the hand vectors: dimensions 0-3 a colour, 4-7 a type; "colour" asks the first four alone
SIMILARITY = {"subspaces": [{"name": "colour", "dim": 4, "weight": 1.0}, {"name": "type", "dim": DIM - 4,
                                                                          "weight": 1.0}],
              "modes": {"colour": {"colour": 1.0}, "type": {"type": 1.0}}}


def hand_build(folder: Path, items: pd.DataFrame, vectors: np.ndarray, depth: int = 10) -> Searcher:
    """A hand-made build as a loaded one looks: its folder holds the text tower its manifest lists and hashes."""
    folder.mkdir(parents=True, exist_ok=True)
    searcher = hand_searcher(items, vectors, FASHION_ROLES)
    hand_tower().save(folder / "text_tower.npz")
    searcher.manifest["files"]["text_tower"] = {"path": "text_tower.npz",
                                                "sha256": sha256_file(folder / "text_tower.npz")}
    searcher.manifest["params"]["text"] = {"fusion": "coverage", "lexical_weight": 0.5, "rrf_constant": 60,
                                           "depth": depth}
    searcher.manifest["params"]["similarity"] = SIMILARITY
    searcher.folder = folder
    return searcher


def hand_catalogue(folder: Path, items: pd.DataFrame | None = None, vectors: np.ndarray | None = None
                   ) -> LiveCatalogue:
    if items is None:
        items, vectors = catalogue()
    return LiveCatalogue.open(hand_build(folder / "build", items, vectors), LiveStore(folder / "live.db"))


def put_live(live: LiveCatalogue, item_id: str, vector: np.ndarray, title: str) -> None:
    """A live item with a given vector (the hand build has no image model): appended to the journal, applied."""
    metadata = {"productDisplayName": title}
    live.store.append("put", item_id, live.build_id, live.model_key, np.asarray(vector, np.float32), metadata,
                      b"photo", "image/png")
    live.refresh()


def text_app(live: LiveCatalogue) -> FastAPI:
    """The text and photo routes over one catalogue, as the service mounts them (no loader: nothing prepared)."""
    app = FastAPI()
    app.state.holder = SimpleNamespace(catalogue=live, failure=None)
    install_error_handlers(app, Metrics())
    app.include_router(text_router(max_k=50, default_k=5))
    app.include_router(api_router(max_k=50, default_k=5, max_upload_bytes=1_000_000))
    return app


def ids(answer) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [m["id"] for m in answer.json()["matches"]]


# ---------------------------------------------------------------- 1. bounded work


def half_black(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """n items, every other one black (its words hold "black"), random photo vectors."""
    rng = np.random.default_rng(seed)
    colours = [("Red", "Blue", "White")[(i // 2) % 3] if i % 2 == 0 else "Black" for i in range(n)]
    rows = [{"id": 1000 + i, "productDisplayName": f"Acme {colours[i]} {TYPES[(i // 4) % 2][:-1]}",
             "articleType": TYPES[(i // 4) % 2], "baseColour": colours[i], "gender": "", "usage": "", "season": "",
             "split": "test"} for i in range(n)]
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return pd.DataFrame(rows), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_word_index_leaves_out_negative_words_itself_and_checks_candidates_by_lookup() -> None:
    index = LexicalIndex(["acme red shoe", "acme red shoe men", "acme blue shoe men", "", "Men's red dress"])
    assert index.search("red shoe", 5, without="men")[0].tolist() == [0]  # SQLite leaves them out: k rows at most
    assert sorted(index.search("red", 5, without="men shoe")[0].tolist()) == [0, 4]  # every negative word held
    assert index.search("red", 5, without="!!")[0].size == 3  # no negative word: nothing left out
    held = index.holding(index.terms("men"), np.arange(5))
    assert held.tolist() == [False, True, True, False, True]
    assert not index.holding(index.terms("   "), np.arange(5)).any()


def recorded_work(folder: Path, n: int) -> tuple[list, list[str]]:
    """The k of every search a negative-word query asks of the index, the lexical index and the live catalogue,
    and the rows the lexical index returned, for a build and a live catalogue of ``n`` items."""
    items, vectors = half_black(n)
    live = hand_catalogue(folder, items, vectors)
    searcher = live.searcher
    build_text = TextSearch.load(searcher)
    live_text = LiveTextSearch(live, build_text)
    work: list = []
    top_rows, lexical_search, search_vector = searcher.top_rows, build_text.lexical.search, live.search_vector

    def recording_top_rows(vector, k, *args, **kwargs):
        work.append(("index", k))
        return top_rows(vector, k, *args, **kwargs)

    def recording_lexical(text, k, *args, **kwargs):
        rows, scores = lexical_search(text, k, *args, **kwargs)
        work.append(("lexical", k, len(rows)))
        return rows, scores

    def recording_search_vector(vector, k, *args, **kwargs):
        work.append(("live", k))
        return search_vector(vector, k, *args, **kwargs)

    searcher.top_rows, build_text.lexical.search = recording_top_rows, recording_lexical
    live.search_vector = recording_search_vector
    found: list[str] = []
    for query in (Query(text="red shoe", negative_text="black"), Query(item_ids=[1000], negative_text="black"),
                  Query(text="blue", negative_text="black", negative_item_ids=[1001, 1003])):
        found += [str(m.id) for m in build_text.search(query, k=5).matches]
        query.item_ids = [str(i) for i in query.item_ids]
        query.negative_item_ids = [str(i) for i in query.negative_item_ids]
        found += [m.id for m in live_text.search(query, k=5).matches]
    colour = dict(zip(items["id"].astype(str), items["baseColour"], strict=True))
    return work, [colour[i] for i in found]


def test_negative_words_cost_the_same_whatever_the_catalogue_size(tmp_path: Path) -> None:
    """A common negative word ("black": half the catalogue) never makes a query fetch every item holding it or search
    with a k near the catalogue's size: the searches asked are the same for 200 and for 2,000 items."""
    small, small_found = recorded_work(tmp_path / "small", 200)
    large, large_found = recorded_work(tmp_path / "large", 2000)
    assert small == large, (small, large)
    assert max(entry[1] for entry in large) < 200  # the request's k (5) and the fusion depth (10) times a constant
    assert all(entry[2] <= entry[1] for entry in large if entry[0] == "lexical")
    # every query still answers k items, build and live, and none holds the negative word
    assert len(small_found) == len(large_found) == 30 and "Black" not in small_found + large_found


# ---------------------------------------------------------------- 2 and 3. made when the build is loaded


class CountingLexicalIndex(LexicalIndex):
    """A lexical index that counts the indexes built over a whole catalogue (an FTS5 build), by thread."""

    built: list[str] = []

    def __init__(self, texts=(), known=None):
        if len(texts):
            CountingLexicalIndex.built.append(threading.current_thread().name)
        super().__init__(texts, known=known)


@pytest.fixture()
def counted_indexes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    CountingLexicalIndex.built = []
    monkeypatch.setattr(text_search_module, "LexicalIndex", CountingLexicalIndex)
    return CountingLexicalIndex.built


@pytest.fixture()
def served(tmp_path: Path):
    """The service (create_app) over a hand-made catalogue its loader returns, loaded; the client and catalogue."""
    live = hand_catalogue(tmp_path)
    app = create_app(Settings.load(root=tmp_path), loader=lambda: live)
    with TestClient(app) as client:
        assert app.state.holder.wait_until_loaded(60)
        yield client, live


def test_the_fts_index_is_built_when_the_build_is_loaded_never_in_a_request(counted_indexes: list[str],
                                                                            served) -> None:
    client, live = served
    assert counted_indexes == ["lookalike-catalogue"]  # by the thread that loads builds, before any query
    assert ids(client.get("/v1/search", params={"q": "red shoe", "k": 3}))[0] == "101"
    assert ids(client.get("/v1/search", params={"q": "blue", "negative": "dress", "k": 3}))
    assert counted_indexes == ["lookalike-catalogue"]  # the requests built none


def test_a_build_folder_pruned_after_loading_still_answers_words(served) -> None:
    client, live = served
    (live.searcher.folder / "text_tower.npz").unlink()  # the build was pruned (or republished) while served
    assert ids(client.get("/v1/search", params={"q": "red shoe", "k": 3}))[0] == "101"


@pytest.mark.parametrize("change", ["pruned", "republished"])
def test_a_text_tower_read_after_its_folder_changed_is_a_clear_503(tmp_path: Path, change: str) -> None:
    """Where nothing loaded the tower with the build (a catalogue mounted without the service's loader), a folder
    pruned or republished since is refused with a 503 that names no server path; never a 500 or another tower."""
    live = hand_catalogue(tmp_path)
    tower_file = live.searcher.folder / "text_tower.npz"
    if change == "pruned":
        tower_file.unlink()
    else:
        other = hand_tower()
        other.weights["skip"] = np.roll(other.weights["skip"], 1, axis=1)  # another build's tower, same shape
        other.save(tower_file)
    with TestClient(text_app(live)) as client:
        answer = client.get("/v1/search", params={"q": "red shoe", "k": 3})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "no_text_model" and str(tmp_path) not in answer.text


def removing_after_ranking(live: LiveCatalogue) -> list[str]:
    """Make the catalogue remove the best learned hit right after each ranking (another request's DELETE landing
    between the ranking and the reading of the records); the ids removed."""
    removed: list[str] = []
    search_vector = live.search_vector

    def ranked_then_removed(vector, k, *args, **kwargs):
        response = search_vector(vector, k, *args, **kwargs)
        best = next((hit.id for hit in response.matches if hit.id in live), None)
        if best is not None:
            live.remove(best)
            removed.append(best)
        return response

    live.search_vector = ranked_then_removed
    return removed


def test_an_item_removed_between_ranking_and_reading_is_skipped_not_a_404(tmp_path: Path) -> None:
    live = hand_catalogue(tmp_path)
    text_search_for(live)
    removed = removing_after_ranking(live)
    with TestClient(text_app(live)) as client:
        for params in ({"q": "red shoe", "k": 5}, {"q": "blue", "like": "102", "k": 5}):
            found = ids(client.get("/v1/search", params=params))
            assert found and removed[-1] not in found, (params, found, removed)
        posted = client.post("/v1/search", data={"item_ids": ["104"], "k": "5"})
        assert removed[-1] not in ids(posted)


@pytest.mark.parametrize(("name_weight", "first"), [(0.0, "100"), (1.0, "LIVE-DRESS")])
def test_a_live_item_named_exactly_as_asked_comes_first_by_the_builds_name_weight(tmp_path: Path, name_weight: float,
                                                                                 first: str) -> None:
    items, vectors = catalogue()
    items.loc[0, "productDisplayName"] = "Acme Red Dress Maxi Party"  # the build's red dress: a longer name
    live = LiveCatalogue.open(hand_build(tmp_path / "build", items, vectors), LiveStore(tmp_path / "live.db"))
    live.searcher.manifest["params"]["text"]["name_weight"] = name_weight
    nearly = vectors[0] + 0.3 * np.eye(DIM, dtype=np.float32)[7]  # a red dress photo, a little further by the tower
    put_live(live, "LIVE-DRESS", nearly / np.linalg.norm(nearly), "Acme Red Dress")
    found = text_search_for(live).search(Query(text="acme red dress"), k=2)
    assert [m.id for m in found.matches] == [first, *{"100", "LIVE-DRESS"} - {first}]


# ---------------------------------------------------------------- 4. similarity beside words and items


def test_similarity_applies_to_items_and_is_refused_with_words(tmp_path: Path) -> None:
    live = hand_catalogue(tmp_path)
    with TestClient(text_app(live)) as client:
        for answer in (client.get("/v1/search", params={"q": "shirt", "similarity": "colour"}),
                       client.get("/v1/search", params={"q": "red", "similarity": "colour"}),
                       client.post("/v1/search", data={"text": "red", "similarity": "colour"}),
                       client.post("/v1/search", data={"item_ids": ["102"], "negative_text": "red",
                                                       "similarity": "type"})):
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"] == "invalid_query" and "cannot be combined with words" in answer.text
        assert ids(client.get("/v1/search", params={"q": "red", "similarity": "overall"})) == ids(
            client.get("/v1/search", params={"q": "red"}))  # the default asks nothing of the words
        # items alone: "like the blue dress, by colour" is the blue shoe first, by type the other dresses
        by_colour = ids(client.post("/v1/search", data={"item_ids": ["102"], "k": "3", "similarity": "colour"}))
        by_type = ids(client.post("/v1/search", data={"item_ids": ["102"], "k": "3", "similarity": "type"}))
        assert by_colour[0] == "103" and set(by_type) == {"100", "104", "106"}
        similar = client.get("/v1/items/102/similar", params={"k": 3, "similarity": "colour"}).json()
        assert by_colour == [m["id"] for m in similar["matches"]]  # as "more like this" by colour
        bad = client.post("/v1/search", data={"item_ids": ["102"], "similarity": "shininess"})
        assert bad.status_code == 422 and "shininess" in bad.json()["detail"]
        schema = client.get("/openapi.json").json()
    get_parameter = next(p for p in schema["paths"]["/v1/search"]["get"]["parameters"] if p["name"] == "similarity")
    assert "cannot be combined with words" in get_parameter["description"]
    form = next(iter(schema["components"]["schemas"][name] for name in schema["components"]["schemas"]
                     if "similarity" in schema["components"]["schemas"][name].get("properties", {})))
    assert "cannot be combined with words" in form["properties"]["similarity"]["description"]


def test_the_library_applies_similarity_to_items_and_refuses_it_with_words(tmp_path: Path) -> None:
    live = hand_catalogue(tmp_path)
    build_text = TextSearch.load(live.searcher)
    assert build_text.search(Query(item_ids=[102]), k=1, similarity="colour").matches[0].id == 103
    assert text_search_for(live).search(Query(item_ids=["102"]), k=1, similarity="colour").matches[0].id == "103"
    for search, item in ((build_text, 102), (text_search_for(live), "102")):
        with pytest.raises(text_search_module.TextQueryError, match="cannot be combined with words"):
            search.search(Query(text="red", item_ids=[item]), k=3, similarity="colour")


# ---------------------------------------------------------------- 5. shared state under threads


def test_the_live_word_index_is_rebuilt_once_when_threads_ask_at_once(tmp_path: Path,
                                                                     counted_indexes: list[str]) -> None:
    """Two queries arriving together after a write rebuild the live items' word index once, never side by side
    (each would otherwise replace the other's half-made state)."""
    live = hand_catalogue(tmp_path)
    text = LiveTextSearch(live, TextSearch.load(live.searcher))
    put_live(live, "SKU-1", catalogue()[1][0], "Zorblax Red Dress")
    assert text.search(Query(text="zorblax red"), k=1).matches[0].id == "SKU-1"
    put_live(live, "SKU-2", catalogue()[1][1], "Zorblax Red Shoe")
    both_inside = threading.Barrier(2, timeout=3)  # passes only if two rebuilds run at once
    built = CountingLexicalIndex.__init__

    def rebuilding(self, texts=(), known=None):
        if len(texts):
            try:
                both_inside.wait()
            except threading.BrokenBarrierError:
                pass
        built(self, texts, known=known)

    CountingLexicalIndex.__init__ = rebuilding
    try:
        counted_indexes.clear()
        answers: list = []
        threads = [threading.Thread(target=lambda: answers.append(text.search(Query(text="zorblax shoe"), k=1)))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        CountingLexicalIndex.__init__ = built
    assert [a.matches[0].id for a in answers] == ["SKU-2", "SKU-2"]
    assert len(counted_indexes) == 1, counted_indexes


def test_loading_one_builds_text_search_never_blocks_another_builds_queries(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A build being loaded beside the served one (a swap) holds no lock the served build's queries need."""
    served_build, next_build = hand_catalogue(tmp_path / "served"), hand_catalogue(tmp_path / "next")
    text_search_for(served_build)
    release, loading = threading.Event(), threading.Event()
    load = TextSearch.load.__func__

    def slow_load(cls, searcher):
        if searcher is next_build.searcher:
            loading.set()
            release.wait(30)
        return load(cls, searcher)

    monkeypatch.setattr(TextSearch, "load", classmethod(slow_load))
    loader = threading.Thread(target=text_search_for, args=(next_build,))
    loader.start()
    try:
        assert loading.wait(30)
        answered: list = []
        query = threading.Thread(target=lambda: answered.append(
            text_search_for(served_build).search(Query(text="red shoe"), k=1)))
        query.start()
        query.join(10)
        assert answered and answered[0].matches[0].id == "101"
    finally:
        release.set()
        loader.join(30)
    assert isinstance(text_search_for(next_build), LiveTextSearch)


def test_queries_stay_consistent_while_live_items_change(tmp_path: Path) -> None:
    """Threads searching words while another writes and removes live items: every answer is whole (no error, no
    duplicate, only ids that were in the catalogue) and the last write is found once the writer is done."""
    live = hand_catalogue(tmp_path)
    text = text_search_for(live)
    vectors = catalogue()[1]
    known = {str(i) for i in live.searcher.items["id"]} | {f"SKU-{n}" for n in range(40)}
    problems: list = []
    done = threading.Event()

    def writer() -> None:
        try:
            for n in range(40):
                put_live(live, f"SKU-{n}", vectors[n % len(vectors)], f"Zorblax {COLOURS[n % 4]} Dress {n}")
                if n % 3 == 2:
                    live.remove(f"SKU-{n - 1}")
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            problems.append(error)
        finally:
            done.set()

    def reader() -> None:
        while not done.is_set():
            try:
                for query in (Query(text="zorblax dress"), Query(text="red", negative_text="blue"),
                              Query(item_ids=["100"], text="zorblax red", text_weight=0.5)):
                    found = [m.id for m in text.search(query, k=8).matches]
                    if len(found) != len(set(found)) or not set(found) <= known:
                        problems.append(found)
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                problems.append(error)
                return

    threads = [threading.Thread(target=writer), *(threading.Thread(target=reader) for _ in range(3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not problems, problems[:3]
    assert "SKU-39" in [m.id for m in text.search(Query(text="zorblax dress 39"), k=20).matches]  # by its words


def test_a_write_remakes_the_word_index_of_the_items_written_since_the_base_only(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    """The live items' word index is a base plus the items written since: a write costs an index of those, not of
    every live item; once they outgrow recent_limit the base is remade. Answers are those of one whole index: an
    item rewritten after the base is found by its new words only, a removed one not at all."""
    live = hand_catalogue(tmp_path)
    text = LiveTextSearch(live, TextSearch.load(live.searcher))
    red_dress = catalogue()[1][0]  # every item here: the words decide
    sizes: list[int] = []
    made = LexicalIndex.__init__

    def counting(self, texts=(), known=None):
        sizes.append(len(texts))
        made(self, texts, known=known)

    monkeypatch.setattr(LexicalIndex, "__init__", counting)
    base = 100
    limit = recent_limit(base + 1)
    for n in range(base):
        put_live(live, f"SKU-{n}", red_dress, f"Zorblax Dress {n}")
    assert text.search(Query(text="zorblax dress 7"), k=1).matches[0].id == "SKU-7"
    assert sizes == [base]  # the first query makes the base of every live item
    put_live(live, "SKU-7", red_dress, "Quuxle Red Dress")  # rewritten after the base
    live.remove("SKU-8")
    put_live(live, "SKU-NEW", red_dress, "Zorblax Dress new")
    found = [m.id for m in text.search(Query(text="zorblax dress"), k=150).matches]
    assert sizes == [base, 2]  # the two items written since the base, not the hundred
    assert "SKU-8" not in found and "SKU-NEW" in found and len(found) == len(set(found))
    assert "SKU-7" not in [m.id for m in text.search(Query(text="zorblax dress 7"), k=1).matches]
    assert [m.id for m in text.search(Query(text="quuxle red dress"), k=1).matches] == ["SKU-7"]
    for n in range(limit):  # enough writes since the base: the next query remakes it whole
        put_live(live, f"SKU-MORE-{n}", red_dress, f"Zorblax Dress more {n}")
    assert [m.id for m in text.search(Query(text="quuxle red dress"), k=1).matches] == ["SKU-7"]
    assert sizes[-1] == base + limit  # 100 - SKU-8 + SKU-NEW + the new ones
    assert "SKU-8" not in [m.id for m in text.search(Query(text="zorblax dress 8"), k=150).matches]
