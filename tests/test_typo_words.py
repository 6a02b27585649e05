"""Typo-tolerant words: a query word the index does not hold is corrected to its closest catalogue word before
BM25 and coverage, so "blak tshrt" still finds the black t-shirt; the tower's queries follow the same rule
(:mod:`lookalike.text.spelling`) over its vocabulary."""

from __future__ import annotations

import threading

import numpy as np

from lookalike.text.lexical import LexicalIndex
from lookalike.text.spelling import Speller
from lookalike.text.tower import TextTower

TEXTS = ["Black Tshirt", "Navy Blue Jeans", "Brown Sandals", "White Tshirt", "Navy Blue Tshirt"]


def test_a_misspelt_word_ranks_the_item_it_meant_first() -> None:
    index = LexicalIndex(TEXTS)
    assert index.search("blak tshirt", 5)[0][0] == 0
    assert index.search("blak tshrt", 5)[0][0] == 0  # every word misspelt
    assert index.search("sandles", 5)[0].tolist() == [2]
    assert index.search("navy bleu jeans", 5)[0][0] == 1  # a swapped pair of letters is one edit
    assert index.search("blak tshirt", 5, every_word=True)[0].tolist() == [0]  # corrected before AND too


def test_coverage_counts_a_corrected_word_as_held() -> None:
    index = LexicalIndex(TEXTS)
    coverage = index.coverage("blak tshirt", np.arange(5))
    assert coverage[0] == coverage.max() and coverage[0] > 0.99
    assert coverage[2] == 0.0
    assert index.coverage("sandles", np.array([2]))[0] > 0.99


def test_a_correct_word_is_never_changed() -> None:
    # "shirt" is one letter from "tshirt", but the index holds it: it must match the shirt alone
    index = LexicalIndex(["Black Tshirt", "Black Shirt", "Navy Blue Jeans", "Brown Sandals"])
    assert index.search("shirt", 5)[0].tolist() == [1]
    assert index.search("blak shirt", 5)[0].tolist() == [1, 0]  # "blak" corrected, "shirt" left as typed
    assert index.search("sandal", 5)[0].tolist() == [3]  # its stem is held (porter: sandals ~ sandal)
    assert index.coverage("shirt", np.array([0, 1])).tolist() == [0.0, 1.0]


def test_short_words_are_not_corrected() -> None:
    index = LexicalIndex(["Red Kurta", "Blue Jeans", "Red Jeans"])
    assert index.search("rad", 5)[0].size == 0  # "red" is one edit away, but three letters are too few to tell
    assert index.search("rad kurts", 5)[0].tolist() == [0]  # four letters are corrected
    assert index.coverage("rad kurts", np.array([0]))[0] < 1.0  # "rad" still counts as a word no item holds


def test_ties_prefer_the_more_frequent_catalogue_word() -> None:
    # "bets" is one letter from "belts" and from "beats"... the index holds "belts" three times, "beats" once
    index = LexicalIndex(["Brown Belts", "Black Belts", "Tan Belts", "Beats Headphones"])
    assert sorted(index.search("bets", 5)[0].tolist()) == [0, 1, 2]


def test_a_word_added_later_becomes_correctable() -> None:
    index = LexicalIndex(["Black Tshirt", "Navy Blue Jeans"])
    assert index.search("sandles", 5)[0].size == 0
    index.set_rows([2], ["Brown Sandals"])
    assert index.search("sandles", 5)[0].tolist() == [2]
    index.set_rows([1], ["Green Sneakers"])  # replaced: "jeans" is no longer a catalogue word, "sneakers" is
    assert index.search("snekers", 5)[0].tolist() == [1]
    assert index.search("jeens", 5)[0].size == 0


def test_corrections_are_safe_from_threads() -> None:
    index = LexicalIndex(TEXTS)
    errors: list[BaseException] = []

    def query(n: int) -> None:
        try:
            for i in range(30):
                if n == 0:
                    index.set_rows([5 + i], [f"Green Sneakers {i}"])
                assert index.search("blak tshrt", 3)[0][0] == 0
                assert index.coverage("sandles", np.array([2]))[0] > 0.99
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)

    threads = [threading.Thread(target=query, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_a_live_index_never_corrects_a_word_its_build_holds_and_corrects_as_the_build_does() -> None:
    """The live items' small index sits beside the build's: "shirt" (a build word no live item holds) must not
    become a live item's "skirt", and "sandles" is matched as the build's "sandals", not a live "candles"."""
    build = LexicalIndex(["Black Shirt", "Brown Sandals", "Brown Sandals"])
    live = LexicalIndex(["Pink Skirt", "Scented Candles", "Tan Sandals"], known=build)
    assert live.search("shirt", 5)[0].size == 0
    assert live.search("sandles", 5)[0].tolist() == [2]
    assert live.coverage("sandles", np.array([1, 2])).tolist() == [0.0, 1.0]
    alone = LexicalIndex(["Pink Skirt", "Scented Candles", "Tan Sandals"])
    assert alone.search("shirt", 5)[0].tolist() == [0]  # what it did without its build's words


# ---------------------------------------------------------------- the rule itself, and the tower's queries


def test_the_speller_picks_the_nearest_spelling() -> None:
    speller = Speller({"black": 5, "sandals": 2, "shorts": 1, "shoes": 10})
    assert speller.closest("blak") == "black"
    assert speller.closest("sendls") == "sandals"  # six letters: two edits are within reach
    assert speller.closest("xxxdals") is None  # three are not
    assert speller.closest("shors") == "shorts"  # a letter left out beats a letter changed, however common
    assert speller.closest("zzzzz") is None


def test_speller_ties_go_to_the_more_frequent_then_the_first_alphabetically() -> None:
    assert Speller({"belts": 3, "beats": 1}).closest("bets") == "belts"
    assert Speller({"belts": 1, "beats": 3}).closest("bets") == "beats"
    assert Speller({"belts": 1, "beats": 1}).closest("bets") == "beats"


def test_speller_leaves_short_words_and_held_words_alone() -> None:
    speller = Speller({"red": 5, "kurta": 1, "shirt": 1, "tshirt": 9})
    assert speller.closest("rad") is None  # three letters: left as typed
    assert speller.closest("kurt") == "kurta"  # four letters are corrected
    assert speller.closest("shirt") == "shirt"  # a spelling is itself, never the more frequent "tshirt"
    assert speller.closest("kurt4") is None  # not letters only
    assert "shirt" in speller and "shrt" not in speller


def small_tower(vocab: list[str]) -> TextTower:
    """Catalogue words only, each its own direction, identity MLP: a word the tower does not read adds nothing."""
    dim = len(vocab)
    table = np.vstack([np.zeros((1, dim)), np.eye(dim)]).astype(np.float32)
    return TextTower({"vocab": np.array(vocab), "word_table": table, "word_logits": np.zeros(dim + 1, np.float32),
                      "w1": np.zeros((dim, 2), np.float32), "b1": np.zeros(2, np.float32),
                      "w2": np.zeros((2, dim), np.float32), "b2": np.zeros(dim, np.float32),
                      "skip": np.eye(dim, dtype=np.float32)})


def test_the_tower_reads_a_misspelt_query_as_the_word_meant() -> None:
    tower = small_tower(["black", "tshirt", "shirt", "navy", "blue", "sandals", "red"])
    np.testing.assert_array_equal(tower.encode(["blak tshrt", "Navy Bleu", "sandles"]),
                                  tower.encode(["black tshirt", "navy blue", "sandals"]))
    assert tower.known_tokens("blak") == 1  # the service refuses a query only when nothing is readable
    assert tower.corrected("Blak T-shrt!") == "black t-shirt!"  # "t" too short; punctuation kept for the tokenizer
    # a word the tower holds is never changed, a short one stays unknown
    assert not np.array_equal(tower.encode(["shirt"]), tower.encode(["tshirt"]))
    assert tower.corrected("rad shirt") == "rad shirt" and tower.known_tokens("rad") == 0


def test_the_tower_breaks_ties_by_vocabulary_order() -> None:
    # the tower keeps no counts; its vocabulary is most frequent first (build_vocabulary)
    assert small_tower(["belts", "beats"]).corrected("bets") == "belts"
    assert small_tower(["beats", "belts"]).corrected("bets") == "beats"


def test_a_three_letter_word_is_completed_by_the_letter_left_out_never_changed() -> None:
    """"pnk" is "pink" with a letter left out (the commonest slip); "rad" is one substitution from "red" and from
    many other words, so it stays as typed; a word the index holds is never completed."""
    index = LexicalIndex(["Pink Kurta", "Navy Blue Jeans", "Red Jeans", "Tan Belt", "Pink Top"])
    assert sorted(index.search("pnk", 5)[0].tolist()) == [0, 4]
    assert index.search("nay ble jeans", 5)[0][0] == 1
    assert index.search("rad", 5)[0].size == 0
    assert index.search("tan", 5)[0].tolist() == [3]
    assert Speller({"pink": 3, "punk": 1}).closest("pnk") == "pink"  # a tie goes to the commoner word
    assert Speller({"pink": 1}).closest("pk") is None  # two letters: left as typed
