"""The one rule for a misspelt query word: the nearest catalogue spelling, for the lexical index and the tower.

A word the catalogue never spells ("blak", "sandles") matches nothing lexically and is an unknown token to the
tower, so both replace it by the catalogue word nearest it. One rule for both, so a query means the same word to
either ranking. Words of :data:`SHORTEST_CORRECTED`+ letters are corrected; a shorter one is only completed, by
the one letter left out ("pnk" -> "pink", "ble" -> "blue": a letter left out is the commonest slip), never changed
("rad" stays: too many words lie one substitution from a three-letter word). The distance is RapidFuzz's OSA
(a swapped pair of letters is one edit); the candidates are grouped by length, so a lookup reads only the words
within reach, never the whole vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from rapidfuzz import process
from rapidfuzz.distance import OSA, Indel

SHORTEST_CORRECTED = 4  # a typed word of fewer letters is only completed by one letter left out, never changed
SHORTEST_COMPLETED = 3  # a typed word of fewer letters is left as typed
LONG_WORD = 6  # a typed word this long may be two edits (OSA: a swapped pair is one) from the word meant, else one
CACHE = 4096  # typed words remembered with their nearest spelling (a query repeats the same few words)


def correctable(word: str) -> bool:
    """Whether a typed word is one the rule may change: letters only, :data:`SHORTEST_COMPLETED` or more."""
    return len(word) >= SHORTEST_COMPLETED and word.isalpha()


class Speller:
    """The nearest of a fixed set of spellings to a typed word; thread-safe, made again when the spellings change.

    ``frequency``: each spelling and how common it is (rows holding it, or any rank where higher is more
    common); a tie between equally near spellings goes to the more common one, then the first alphabetically.
    """

    def __init__(self, frequency: Mapping[str, int]):
        self._frequency = dict(frequency)
        by_length: dict[int, list[str]] = {}
        for spelling in self._frequency:
            by_length.setdefault(len(spelling), []).append(spelling)
        self._by_length = by_length
        self._cached = lru_cache(maxsize=CACHE)(self._nearest)  # bounded: typed words are not

    def __contains__(self, word: object) -> bool:
        return word in self._frequency

    def __len__(self) -> int:
        return len(self._frequency)

    def closest(self, word: str) -> str | None:
        """The spelling nearest ``word``: fewest edits (OSA), then fewest inserted or dropped letters (Indel: a
        letter left out is the commonest slip), then the most common; ``word`` itself when it is a spelling; None
        for a word the rule leaves alone (:func:`correctable`) or beyond the edits allowed (one, two from
        :data:`LONG_WORD` letters; a three-letter word only completed by one letter)."""
        return self._cached(word)

    def _nearest(self, word: str) -> str | None:
        if word in self._frequency:
            return word
        if not correctable(word):
            return None
        if len(word) < SHORTEST_CORRECTED:  # only completed: the spellings one letter longer holding it in order
            found = [(-self._frequency[s], s) for s in self._by_length.get(len(word) + 1, ())
                     if Indel.distance(word, s) == 1]
            return min(found)[1] if found else None
        edits = 2 if len(word) >= LONG_WORD else 1
        best: tuple[int, int, int, str] | None = None
        for length in range(len(word) - edits, len(word) + edits + 1):  # only lengths within reach
            for spelling, distance, _ in process.extract(word, self._by_length.get(length, ()),
                                                         scorer=OSA.distance, score_cutoff=edits, limit=None):
                key = (int(distance), int(Indel.distance(word, spelling)), -self._frequency[spelling], spelling)
                best = key if best is None or key < best else best
        return None if best is None else best[-1]
