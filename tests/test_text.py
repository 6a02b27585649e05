"""Text search: tokenisation, the numpy tower, lexical BM25, fusion, query composition, bad queries.

Everything here runs on small hand-made data (no build, no TensorFlow); the training test is in
tests/test_text_training.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.artifacts import ArtifactMismatchError, make_manifest, verify_manifest, write_json
from lookalike.catalogue.description import (
    CatalogueDescription,
    CatalogueRoles,
    description_from_dict,
    load_description,
)
from lookalike.catalogue.reading import load_catalogue
from lookalike.search.engine import Searcher
from lookalike.search.index import build_index
from lookalike.text.evaluation import (
    attribute_queries,
    evaluate_text_search,
    precision_at,
    text_columns,
    title_metrics,
)
from lookalike.text.lexical import LexicalIndex, reciprocal_rank_fusion, score_fusion
from lookalike.text.search import Query, TextSearch, compose
from lookalike.text.tower import (
    MAX_QUERY_CHARS,
    TextQueryError,
    TextTower,
    build_vocabulary,
    check_query,
    item_phrases,
    normalise,
    word_columns,
    words,
)

ROOT = Path(__file__).resolve().parents[1]
DIM = 8
COLOURS = ("Red", "Blue", "Black", "White")
TYPES = ("Dresses", "Shoes")
FASHION_WORDS = ("productDisplayName", "articleType", "baseColour", "gender", "usage", "season")
FASHION_ROLES = CatalogueRoles(labels=("articleType",), attributes=("baseColour", "gender", "subCategory"),
                               colour="baseColour", filters=("articleType", "baseColour"),
                               words=("articleType", "baseColour", "productDisplayName", "gender", "usage", "season"),
                               title="productDisplayName", metadata=("productDisplayName",))


def test_normalise_and_words_meet_titles_and_queries_in_one_form() -> None:
    assert normalise("  Café\u00a0T-SHIRT  ") == "cafe t-shirt"
    assert words("Nike Men's Air-Max 90") == ["nike", "men", "s", "air", "max", "90"]
    assert words("ＲＥＤ dress") == ["red", "dress"]  # full-width letters (NFKC)
    assert item_phrases({"productDisplayName": "Nike Tee", "articleType": "Tshirts", "baseColour": "NA",
                         "gender": float("nan"), "usage": " Casual ", "season": ""}, FASHION_WORDS) == [
        "Nike Tee", "Tshirts", "Casual"]


def test_word_columns_are_the_roles_words_title_first() -> None:
    assert word_columns(FASHION_ROLES) == FASHION_WORDS  # the title moves first, the rest keep their order
    assert word_columns(CatalogueRoles(words=("class", "coarse_class"), title="id")) == ("class", "coarse_class")
    assert word_columns(CatalogueRoles(labels=("articleType",))) == ()  # a build from before roles: no words


@pytest.mark.parametrize("query, message", [
    ("", "no words"), ("   ", "no words"), ("!!! ???", "no words"), ("a" * (MAX_QUERY_CHARS + 1), "characters"),
    ("red\x00dress", "NUL"), (None, "string"), (42, "string"), (["red"], "string")])
def test_check_query_refuses_what_cannot_be_searched(query, message: str) -> None:
    with pytest.raises(TextQueryError, match=message):
        check_query(query)


def test_check_query_accepts_any_language_and_emoji_with_words() -> None:
    assert check_query("Кроссовки 👟 белые") == "кроссовки 👟 белые"
    assert check_query("赤いドレス") == "赤いドレス"


# ---------------------------------------------------------------- a hand-made catalogue and tower


def _direction(i: int, n: int = DIM) -> np.ndarray:
    vector = np.zeros(n, np.float32)
    vector[i] = 1.0
    return vector


def catalogue() -> tuple[pd.DataFrame, np.ndarray]:
    """Items: each colour x type, photo vector = colour direction + type direction; the last item has no words."""
    rows, vectors = [], []
    for c, colour in enumerate(COLOURS):
        for t, kind in enumerate(TYPES):
            rows.append({"id": 100 + len(rows), "productDisplayName": f"Acme {colour} {kind[:-1]}",
                         "articleType": kind, "baseColour": colour, "gender": "Women", "usage": "Casual",
                         "season": "Summer", "masterCategory": "Apparel", "subCategory": kind, "split": "test"})
            vectors.append(_direction(c) + _direction(4 + t))
    rows.append({"id": 999, "productDisplayName": "", "articleType": "", "baseColour": "", "gender": "",
                 "usage": "", "season": "", "masterCategory": "", "subCategory": "", "split": "test"})
    vectors.append(_direction(0) + _direction(5))  # a red shoe, photo only
    vectors = np.array(vectors, np.float32)
    return pd.DataFrame(rows), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def hand_tower() -> TextTower:
    """A tower that maps each colour and type word to its direction (identity MLP, no pretrained channel)."""
    vocab = [c.lower() for c in COLOURS] + ["dresses", "dress", "shoes", "shoe", "acme"]
    table = np.zeros((len(vocab) + 1, DIM), np.float32)
    for i, word in enumerate(vocab, start=1):
        if word in ("dresses", "dress"):
            table[i] = _direction(4)
        elif word in ("shoes", "shoe"):
            table[i] = _direction(5)
        elif word != "acme":
            table[i] = _direction(COLOURS.index(word.title()))
    return TextTower({"vocab": np.array(vocab), "word_table": table, "word_logits": np.zeros(len(vocab) + 1),
                      "w1": np.zeros((DIM, 4), np.float32), "b1": np.zeros(4, np.float32),
                      "w2": np.zeros((4, DIM), np.float32), "b2": np.zeros(DIM, np.float32),
                      "skip": np.eye(DIM, dtype=np.float32)})


def test_tower_encodes_unit_vectors_pooled_over_known_words_only() -> None:
    tower = hand_tower()
    vectors = tower.encode(["Red dress", "RED   Dress!!", "red dress unknownword", "zzz"])
    np.testing.assert_allclose(vectors[0], (_direction(0) + _direction(4)) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-6)
    np.testing.assert_allclose(vectors[2], vectors[0], atol=1e-6)  # unknown words do not dilute the pool
    assert np.all(vectors[3] == 0)  # nothing known: a zero vector, never NaN
    assert tower.known_tokens("zzz qqq") == 0 and tower.known_tokens("red zzz") == 1


def test_tower_attention_weights_shift_the_pool_towards_weighted_words() -> None:
    tower = hand_tower()
    tower.weights["word_logits"][tower.vocab["red"]] = np.log(3.0)  # "red" counts three times "dress"
    vector = tower.encode(["red dress"])[0]
    assert vector[0] == pytest.approx(3 * vector[4], rel=1e-5)


def test_tower_save_and_load_give_the_same_vectors(tmp_path: Path) -> None:
    tower = hand_tower()
    tower.save(tmp_path / "tower.npz")
    loaded = TextTower.load(tmp_path / "tower.npz")
    np.testing.assert_array_equal(loaded.encode(["blue shoes", "acme"]), tower.encode(["blue shoes", "acme"]))
    np.savez(tmp_path / "other.npz", format=np.array(99), w2=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not a text tower"):
        TextTower.load(tmp_path / "other.npz")


def test_vocabulary_counts_words_and_drops_rare_ones() -> None:
    assert build_vocabulary(["Red Dress", "red shoe", "Blue shoe"], min_count=2) == ["red", "shoe"]


# ---------------------------------------------------------------- lexical and fusion


def test_bm25_finds_stems_exact_names_first_and_survives_fts_syntax() -> None:
    index = LexicalIndex(["Nike Air Max running shoes", "Puma red dress", "Nike red sneakers", ""])
    rows, scores = index.search("dresses", 5)
    assert rows.tolist() == [1]  # porter stemming: dresses ~ dress
    rows, scores = index.search("nike air max", 5)
    assert rows[0] == 0 and list(scores) == sorted(scores, reverse=True)
    for hostile in ('" OR 1', "NEAR(nike red)", "nike AND", "*", "red)", "-red", "^nike", "NOT nike"):
        index.search(hostile, 5)  # every word quoted: never an FTS5 syntax error
    assert index.search("...", 5)[0].size == 0
    assert index.search("red", 5, allowed_rows=np.array([2]))[0].tolist() == [2]
    assert index.search("nike red", 5, every_word=True)[0].tolist() == [2]


def test_bm25_rows_can_be_replaced_and_emptied() -> None:
    index = LexicalIndex(["red dress", "blue shoe"])
    index.set_rows([1, 2], ["", "green dress"])
    assert index.search("shoe", 5)[0].size == 0
    assert sorted(index.search("dress", 5)[0].tolist()) == [0, 2]


def test_reciprocal_rank_fusion_rewards_agreement_and_keeps_single_list_items() -> None:
    rows, scores = reciprocal_rank_fusion([np.array([1, 2, 3]), np.array([3, 4, -1])], [1.0, 1.0], 10, 60)
    assert rows[0] == 3 and set(rows.tolist()) == {1, 2, 3, 4}
    assert list(scores) == sorted(scores, reverse=True)


def test_score_fusion_adds_relative_bm25_and_keeps_photo_only_items() -> None:
    candidates = np.array([5, 6, 7])
    cosines = np.array([0.9, 0.5, 0.4])  # 5 has no words: no lexical score
    rows, scores = score_fusion(np.array([7, 6]), np.array([4.0, 2.0]), candidates, cosines, 0.5, 3)
    assert rows.tolist() == [5, 7, 6]
    np.testing.assert_allclose(scores, [0.9, 0.9, 0.75])


# ---------------------------------------------------------------- composition and TextSearch


def test_compose_is_a_renormalised_weighted_sum_and_refuses_cancelling_parts() -> None:
    a, b = _direction(0), _direction(1)
    np.testing.assert_allclose(compose([(a, 1.0), (b, 2.0)]), (a + 2 * b) / np.sqrt(5), atol=1e-6)
    np.testing.assert_allclose(compose([(a + b, 1.0), (b, -0.7)]), compose([(a + b, 1.0), (b, -0.7)]))
    assert compose([(a + b, 1.0), (b, -1.0)])[0] > 0.9
    with pytest.raises(TextQueryError, match="cancel"):
        compose([(a, 1.0), (a, -1.0)])
    with pytest.raises(TextQueryError, match="at least one"):
        compose([])


def hand_searcher(items: pd.DataFrame, vectors: np.ndarray, roles: CatalogueRoles | None) -> Searcher:
    """A Searcher over hand-made items; ``roles`` go into its manifest as the index stage writes them (None: a
    build from before roles)."""
    params = {"catalogue": roles.to_manifest()} if roles is not None else {}
    manifest = {"files": {"model": {"sha256": "hand"}}, "dimension": int(vectors.shape[1]), "count": len(items),
                "params": {**params, "preprocess": {}}}
    searcher = Searcher(manifest, None, None, vectors, np.array([f"{i}.jpg" for i in items["id"]]), items,
                        build_index(vectors, {"type": "flat"}))
    searcher._row_of_id = {int(i): r for r, i in enumerate(items["id"])}
    searcher._item_ids = items["id"].to_numpy()
    searcher._metadata_columns = {c: items[c].to_numpy(dtype=object)
                                  for c in (roles.metadata if roles else ()) if c in items}
    return searcher


@pytest.fixture()
def text_search() -> TextSearch:
    items, vectors = catalogue()
    return TextSearch(hand_searcher(items, vectors, FASHION_ROLES), hand_tower(),
                      {"fusion": "score", "lexical_weight": 0.5, "rrf_constant": 60, "depth": 100})


def test_words_alone_find_the_named_item_first_and_photo_only_items_too(text_search: TextSearch) -> None:
    found = text_search.search(Query(text="acme black shoe"), k=3)
    assert found.matches[0].metadata["productDisplayName"] == "Acme Black Shoe"
    red_shoes = [m.id for m in text_search.search(Query(text="red shoes"), k=2).matches]
    assert sorted(red_shoes) == [101, 999]  # the photo without words is found by the tower


def test_rrf_fusion_also_answers(text_search: TextSearch) -> None:
    text_search.fusion["fusion"] = "rrf"
    assert text_search.search(Query(text="acme white dress"), k=1).matches[0].id == 106


def test_photo_or_item_plus_words_moves_along_the_words(text_search: TextSearch) -> None:
    blue_dress = 102
    matches = text_search.search(Query(item_ids=[blue_dress], text="red", text_weight=1.0), k=3).matches
    assert blue_dress not in [m.id for m in matches]  # the named item itself is never returned
    assert matches[0].id == 100  # red dress: same type, the colour the words asked for


def test_negative_words_and_items_push_results_away(text_search: TextSearch) -> None:
    ids = [m.id for m in text_search.search(Query(text="dress", negative_text="red"), k=9).matches]
    assert 100 not in ids  # its own words contain "red"
    ids = [m.id for m in text_search.search(Query(text="shoes", negative_item_ids=[101]), k=9).matches]
    assert 101 not in ids and set(ids[:3]) == {103, 105, 107}
    assert ids[3] == 999 and ids[-1] == 100  # the red shoe photo is the last shoe; the red dress last of all
    filtered = text_search.search(Query(text="red"), k=5, filters={"articleType": ["Dresses"]})
    assert {m.id for m in filtered.matches} <= {100, 102, 104, 106}


@pytest.mark.parametrize("query, message", [
    (Query(), "at least one"), (Query(text="   "), "at least one"), (Query(text="zzz"), "known"),
    (Query(text="red", text_weight=float("nan")), "text_weight"), (Query(text="red", text_weight=-1), "text_weight"),
    (Query(item_ids=[12345]), "no catalogue item"), (Query(item_ids=list(range(21))), "at most"),
    (Query(item_ids="101"), "list"), (Query(text="red", negative_text="!!"), "no words"),
    (Query(text="x" * 600), "characters")])
def test_bad_queries_get_clear_errors(text_search: TextSearch, query: Query, message: str) -> None:
    with pytest.raises(TextQueryError, match=message):
        text_search.search(query, k=3)


def test_k_must_be_a_positive_integer(text_search: TextSearch) -> None:
    for k in (0, -1, 1.5, True):
        with pytest.raises(TextQueryError, match="k must"):
            text_search.search(Query(text="red"), k=k)


def test_a_build_without_a_tower_is_refused_with_a_message(text_search: TextSearch) -> None:
    with pytest.raises(ArtifactMismatchError, match="no text tower"):
        TextSearch.load(text_search.searcher)


# ---------------------------------------------------------------- evaluation arithmetic and the build


def test_title_metrics_and_precision_count_ranks() -> None:
    ranked = np.array([[5, 1, 2], [1, 2, 3], [7, 8, 9]])
    assert title_metrics(ranked, np.array([5, 2, 4])) == pytest.approx(
        {"title_recall_at_1": 1 / 3, "title_recall_at_10": 2 / 3, "title_mrr": (1 + 0.5) / 3})
    masks = [np.array([True, False, True, False]), np.array([False] * 4)]
    assert precision_at(np.array([[0, 2, -1], [1, 3, -1]]), masks, 2) == pytest.approx(0.5)
    items, _ = catalogue()
    assert attribute_queries(items, ("baseColour",), 2) == [(c.lower(), (c,)) for c in sorted(COLOURS)]
    assert attribute_queries(items, ("baseColour",), 3) == []


def test_manifest_checks_the_text_files_it_lists(tmp_path: Path) -> None:
    names = ("model", "embeddings", "image_paths", "items", "index", "runtime_model", "runtime_backbone",
             "text_tower", "text_tokenizer")
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
    write_json(tmp_path / "manifest.json", make_manifest({n: tmp_path / n for n in names}, {}, {}))
    verify_manifest(tmp_path)
    (tmp_path / "text_tower").write_bytes(b"changed")
    with pytest.raises(ArtifactMismatchError, match="text_tower"):
        verify_manifest(tmp_path)


def test_the_query_path_imports_no_tensorflow() -> None:
    code = ("import sys, lookalike.text.search, lookalike.text.evaluation; "
            "print([m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_typo_queries_drop_one_inner_letter_of_longer_words_reproducibly() -> None:
    from lookalike.text.evaluation import with_typos

    assert with_typos("navy blue", 3) == with_typos("navy blue", 3)
    for original, changed in zip("red casual dresses".split(), with_typos("red casual dresses", 0).split(),
                                 strict=True):
        assert changed == original if len(original) < 4 else (len(changed) == len(original) - 1
                                                              and changed[0] == original[0]
                                                              and changed[-1] == original[-1])


def test_coverage_weights_query_words_by_rarity_and_fusion_keeps_photo_only_items() -> None:
    from lookalike.text.lexical import coverage_fusion

    index = LexicalIndex(["acme red dress", "acme blue dress", "acme red shoe", "", "acme shoe"])
    coverage = index.coverage("red dress", np.arange(5))
    assert coverage[0] == pytest.approx(1.0) and coverage[3] == 0.0 and coverage[4] == 0.0
    assert 0 < coverage[1] < 1 and 0 < coverage[2] < 1
    assert index.coverage("acme red", np.array([1]))[0] < index.coverage("acme red", np.array([2]))[0]  # rare words
    rows, scores = coverage_fusion(np.array([3, 0, 1]), np.array([0.9, 0.5, 0.6]), np.array([0.0, 1.0, 0.5]),
                                   0.3, 3)
    assert rows.tolist() == [3, 0, 1]
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.75])


def test_coverage_fusion_answers_through_text_search(text_search: TextSearch) -> None:
    text_search.fusion.update(fusion="coverage", lexical_weight=0.3)
    assert text_search.search(Query(text="acme blue shoe"), k=1).matches[0].id == 103


# ---------------------------------------------------------------- any catalogue: words and queries from roles


GROCERY_ROLES = CatalogueRoles(labels=("class",), attributes=("coarse_class",), filters=("coarse_class", "class"),
                               words=("class", "coarse_class", "description"), title="description",
                               metadata=("description", "class", "coarse_class"))


def grocery() -> tuple[pd.DataFrame, np.ndarray]:
    """A grocery-like table (class, coarse_class, description) whose ``productDisplayName`` holds a decoy word no
    role names: text search must never read it. Photo vector = colour direction + kind direction, as
    :func:`catalogue`, so the hand tower understands the class words."""
    rows, vectors = [], []
    for c, colour in enumerate(COLOURS):
        for t, kind in enumerate(TYPES):
            for n in range(2):
                rows.append({"id": 200 + len(rows), "class": f"{colour} {kind}", "coarse_class": kind,
                             "description": f"Acme {colour} {kind[:-1]} batch{len(rows)}",
                             "productDisplayName": "zebra", "split": ("train", "test")[n]})
                vectors.append(_direction(c) + _direction(4 + t) + 0.05 * _direction(6 + n))
    vectors = np.array(vectors, np.float32)
    return pd.DataFrame(rows), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_text_search_reads_the_words_the_build_roles_name_and_no_fashion_column() -> None:
    items, vectors = grocery()
    text = TextSearch(hand_searcher(items, vectors, GROCERY_ROLES), hand_tower(),
                      {"fusion": "coverage", "lexical_weight": 0.5, "rrf_constant": 60, "depth": 100})
    assert text.words == ("description", "class", "coarse_class")  # the title first
    assert text.lexical.search("zebra", 50)[0].size == 0  # productDisplayName is no role: never indexed
    assert text.lexical.search("batch5", 50)[0].tolist() == [5]  # the description is
    found = text.search(Query(text="blue dress batch5"), k=3)
    assert found.matches[0].id == 205 and found.matches[0].metadata["description"].endswith("batch5")


def test_a_build_from_before_roles_is_ranked_by_the_tower_alone() -> None:
    items, vectors = catalogue()
    text = TextSearch(hand_searcher(items, vectors, None), hand_tower(), {"fusion": "coverage",
                                                                          "lexical_weight": 0.5, "depth": 100})
    assert text.words == () and text.lexical.search("acme", 50)[0].size == 0
    assert sorted(m.id for m in text.search(Query(text="red shoes"), k=2).matches) == [101, 999]


def description(**roles) -> CatalogueDescription:
    return description_from_dict({"layout": "table", "table": "items.csv", "photos": ["photo"], **roles})


def test_text_columns_name_a_grocery_catalogue_own_columns() -> None:
    items, _ = grocery()
    columns = text_columns(description(labels=["class"], attributes=["coarse_class"], title="description",
                                       words=["class", "coarse_class", "description"]), items)
    assert columns.words == ("description", "class", "coarse_class")
    assert columns.attributes == {"coarse_class": ("coarse_class",), "class": ("class",)}  # parent class first
    assert columns.typos == ("class",) and columns.single == ("coarse_class", "class")
    assert columns.title == "description" and columns.title_queries
    # a title that is the label names a class, not an item: no title -> photo queries (attribute queries ask it)
    assert not text_columns(description(labels=["class"], title="class", words=["class"]), items).title_queries
    flat = text_columns(description(), items)  # no roles at all: nothing to ask
    assert flat.words == () and flat.attributes == {} and flat.typos == () and not flat.title_queries


def test_evaluation_scores_the_attribute_queries_of_the_roles_and_never_reads_fashion_columns() -> None:
    items, vectors = grocery()
    columns = text_columns(description(labels=["class"], attributes=["coarse_class"], title="description",
                                       words=["class", "coarse_class", "description"]), items)
    config = {"depth": 10, "min_relevant": 1, "fusion": "coverage", "lexical_weight": 0.5, "rrf_constant": 60}
    result = evaluate_text_search(hand_tower(), items.drop(columns="productDisplayName"), vectors, config, columns)
    assert result["queries"] == {"title": 8, "coarse_class": 2, "class": 8}
    assert list(result["visible"]["hybrid"]) == ["title_recall_at_1", "title_recall_at_10", "title_mrr", *(
        f"{name}_precision_at_{k}" for name in ("coarse_class", "class", "class_typo") for k in (1, 10))]
    assert result["hidden"]["learned"]["class_precision_at_1"] == 1.0  # "red shoes" finds a red shoe photo
    assert result["visible"]["lexical"]["title_recall_at_1"] == 1.0  # "acme red shoe batch3" finds its own item


def test_the_fashion_description_gives_the_committed_metric_names(shared_catalogue_dir: Path) -> None:
    """The keys of metrics/text.json (and scripts/results_table.py, docs/text.md) stay what they were."""
    fashion = load_description(ROOT / "catalogues/kaggle-fashion.yaml")
    table, _ = load_catalogue(shared_catalogue_dir, fashion)
    columns = text_columns(fashion, table)
    assert columns.words == FASHION_WORDS and columns.title == "productDisplayName" and columns.title_queries
    assert columns.attributes == {"colour": ("baseColour",), "subcategory": ("subCategory",),
                                  "articletype": ("articleType",), "colour_articletype": ("baseColour", "articleType"),
                                  "gender_articletype": ("gender", "articleType")}
    committed = json.loads((ROOT / "metrics/text.json").read_text())
    assert list(committed["queries"]) == ["title", *columns.attributes]
    names = [*columns.attributes, *(f"{name}_typo" for name in columns.typos)]
    assert [k for k in committed["hidden"]["hybrid"] if not k.startswith("title")] == [
        f"{name}_precision_at_{k}" for name in names for k in (1, 10)]


# ---------------------------------------------------------------- one fusion: the service ranks as evaluation scores


def random_catalogue(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Items with random photo vectors (no ties) and words from the hand tower's vocabulary; some without words."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        colour, kind = COLOURS[rng.integers(len(COLOURS))], TYPES[rng.integers(len(TYPES))]
        worded = rng.random() < 0.7
        rows.append({"id": 300 + i, "productDisplayName": f"Acme {colour} {kind[:-1]}" if worded and i % 2 else "",
                     "articleType": kind if worded else "", "baseColour": colour if worded else "",
                     "gender": "", "usage": "", "season": "", "split": "test"})
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return pd.DataFrame(rows), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("fusion", ["coverage", "score", "rrf"])
def test_the_service_ranks_words_as_the_evaluation_scores_them(fusion: str, tmp_path: Path) -> None:
    from lookalike.live import LiveCatalogue, LiveStore
    from lookalike.text.evaluation import rank_all, shown_words
    from lookalike.text.search import LiveTextSearch

    items, vectors = random_catalogue()
    settings = {"fusion": fusion, "lexical_weight": 0.4, "rrf_constant": 10, "depth": 12}
    searcher = hand_searcher(items, vectors, FASHION_ROLES)
    text = TextSearch(searcher, hand_tower(), dict(settings))
    live = LiveTextSearch(LiveCatalogue.open(searcher, LiveStore(tmp_path / "live.db")), text)
    lexical = LexicalIndex(shown_words(items, "visible", 0, word_columns(FASHION_ROLES)))
    queries = ["red dress", "acme blue shoe", "black", "white shoes acme", "dresses"]
    expected = rank_all(queries, vectors, hand_tower().encode(queries), lexical, settings["depth"], settings)
    for query, ranked in zip(queries, expected["hybrid"], strict=True):
        want = [int(items["id"][r]) for r in ranked if r >= 0]
        assert [m.id for m in text.search(Query(text=query), k=settings["depth"]).matches] == want, query
        assert [int(m.id) for m in live.search(Query(text=query), k=settings["depth"]).matches] == want, query
    # with negative words the learned ranking is cut after the excluded items: build and live still agree
    for depth in (3, 12):
        text.fusion["depth"] = depth
        query = Query(text="red", negative_text="white")
        build = [m.id for m in text.search(query, k=depth).matches]
        assert len(build) == depth and [int(m.id) for m in live.search(query, k=depth).matches] == build


def test_fuse_refuses_an_unknown_fusion() -> None:
    from lookalike.text.lexical import fuse

    with pytest.raises(ValueError, match="coverage, score, rrf"):
        fuse(np.array([1]), np.array([1.0]), np.array([0]), np.zeros, np.zeros, {"fusion": "max",
                                                                                 "lexical_weight": 1.0}, 3)


def test_the_name_share_puts_an_exact_name_before_longer_names_holding_it() -> None:
    from lookalike.text.lexical import coverage_fusion

    index = LexicalIndex(["acme red dress", "acme red dress long sleeve", "", "red", "acme blue shoe"])
    coverage, named = index.shares("acme red dress", np.arange(5))
    np.testing.assert_allclose(coverage, index.coverage("acme red dress", np.arange(5)))
    assert coverage[0] == pytest.approx(1.0) and coverage[1] == pytest.approx(1.0)
    assert named[0] == pytest.approx(1.0) and 0 < named[1] < 1  # the longer name holds words not asked
    assert named[2] == 0.0 and named[3] == pytest.approx(1.0) and coverage[3] < 1  # "red": every word asked
    assert named[4] < 1 and coverage[4] < 1
    assert index.shares("", np.arange(2)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    # the longer name is nearer by the tower: without the name share it comes first, with it the exact name does
    cosines = np.array([0.50, 0.55])
    assert coverage_fusion(np.array([0, 1]), cosines, coverage[:2], 0.5, 2)[0].tolist() == [1, 0]
    rows, scores = coverage_fusion(np.array([0, 1]), cosines, coverage[:2], 0.5, 2, named[:2], 1.0)
    assert rows.tolist() == [0, 1] and scores[0] == pytest.approx(0.50 + 0.5 + 1.0)


def test_text_search_ranks_an_exact_name_first_by_the_name_weight() -> None:
    items, vectors = catalogue()
    items.loc[0, "productDisplayName"] = "Acme Red Dress Maxi Party"  # the red dress, nearest by the tower
    items.loc[2, ["productDisplayName", "baseColour"]] = ["Acme Red Dress", "Red"]  # another red dress, a bit
    vectors[2] = (vectors[0] + 0.3 * _direction(7)) / np.linalg.norm(vectors[0] + 0.3 * _direction(7))  # further
    fusion = {"fusion": "coverage", "lexical_weight": 0.5, "name_weight": 0.0, "rrf_constant": 60, "depth": 100}
    text = TextSearch(hand_searcher(items, vectors, FASHION_ROLES), hand_tower(), dict(fusion))
    assert [m.id for m in text.search(Query(text="acme red dress maxi party"), k=1).matches] == [100]
    assert [m.id for m in text.search(Query(text="acme red dress"), k=2).matches] == [100, 102]
    text.fusion["name_weight"] = 1.0
    assert [m.id for m in text.search(Query(text="acme red dress"), k=2).matches] == [102, 100]
