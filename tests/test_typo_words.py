"""Typo-tolerant words on the lexical side: a query word the index does not hold is corrected to its
closest catalogue word before BM25 and coverage, so "blak tshrt" still finds the black t-shirt."""

from __future__ import annotations

import threading

import numpy as np

from lookalike.text.lexical import LexicalIndex

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
