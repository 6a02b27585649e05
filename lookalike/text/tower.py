"""Words -> a unit vector in the image embedding's space: tokenisation and the text tower's query path.

A catalogue item's words are the columns its catalogue's description names as ``words`` (:func:`word_columns`:
the title first), never columns named here. The tower reads two bags of tokens: the catalogue's own words
(a vocabulary from the train split, trained from scratch) and, optionally, pretrained static token embeddings
(wordllama's bundled table and tokenizer, frozen), each pooled by a learned per-token weight (an attention
pool), then a small MLP with a linear skip maps them to the image embedding's dimension. A query word of 4+
letters the vocabulary lacks ("blak") is first replaced by the nearest vocabulary word (:mod:`lookalike.text.spelling`,
the rule the lexical index follows), since the tower would otherwise read it as unknown tokens. Training lives in
:mod:`lookalike.text.training` (TensorFlow); this module is numpy only (and RapidFuzz for misspelt words), so
a query imports no TensorFlow and takes well under a millisecond to embed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from lookalike.text.spelling import Speller, correctable

if TYPE_CHECKING:
    from lookalike.catalogue.description import CatalogueDescription, CatalogueRoles

MAX_QUERY_CHARS = 500  # a query longer than this is refused, not truncated silently
MAX_TOKENS = 64  # per channel: more words than a title ever has are cut off
MISSING = {"", "na", "nan", "none", "null"}  # field values that carry no words
TOWER_FORMAT = 1
_WORD = re.compile(r"[^\W_]+")


class TextQueryError(ValueError):
    """A text query that cannot be searched (empty, too long, no usable words); the message says why."""


def normalise(text: str) -> str:
    """NFKC, lower case, diacritics off, whitespace collapsed: titles and queries meet in one form."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", str(text)).lower())
    kept: list[str] = []
    for ch in decomposed:  # accents off Latin letters only ("café" -> "cafe"); "ド" keeps its mark
        if unicodedata.combining(ch) and kept and kept[-1].isascii():
            continue
        kept.append(ch)
    return " ".join(unicodedata.normalize("NFC", "".join(kept)).split())


def words(text: str) -> list[str]:
    """The letters-and-digits words of ``text``, normalised ("T-Shirt" -> ["t", "shirt"])."""
    return _WORD.findall(normalise(text))


def field_value(value: Any) -> str:
    """A field's text, or "" when the catalogue says nothing ("NA", NaN, None)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = " ".join(str(value).split())
    return "" if text.lower() in MISSING else text


def word_columns(roles: CatalogueRoles | CatalogueDescription) -> tuple[str, ...]:
    """The columns an item's words come from: the roles' ``words``, the title first when it is one of them (the
    stage reads them from the description, a query from the build's manifest, so both index the same words;
    training treats the first as the title)."""
    columns = tuple(dict.fromkeys(roles.words))
    if roles.title in columns:
        columns = (roles.title, *(c for c in columns if c != roles.title))
    return columns


def item_phrases(row: Any, fields: Sequence[str]) -> list[str]:
    """The item's non-empty word fields, in ``fields`` order (a Series, dict or namedtuple row)."""
    get = row.get if hasattr(row, "get") else lambda name, default="": getattr(row, name, default)
    return [text for name in fields if (text := field_value(get(name, "")))]


def item_text(row: Any, fields: Sequence[str]) -> str:
    """All of an item's words as one string (what the lexical index and the tower read)."""
    return " ".join(item_phrases(row, fields))


def check_query(text: Any) -> str:
    """The query normalised, or :class:`TextQueryError` for anything that is not a searchable string."""
    if not isinstance(text, str):
        raise TextQueryError(f"the text query must be a string, not {type(text).__name__}")
    if len(text) > MAX_QUERY_CHARS:
        raise TextQueryError(f"the text query has {len(text)} characters; at most {MAX_QUERY_CHARS} are accepted")
    if "\x00" in text:
        raise TextQueryError("the text query contains a NUL character")
    cleaned = normalise(text)
    if not words(cleaned):
        raise TextQueryError("the text query has no words (letters or digits) to search for")
    return cleaned


# ---------------------------------------------------------------- token ids


def build_vocabulary(texts: Iterable[str], min_count: int = 1) -> list[str]:
    """Catalogue words seen at least ``min_count`` times, most frequent first (id = position + 1; 0 pads)."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in words(text):
            counts[word] = counts.get(word, 0) + 1
    return [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


def pad_ids(rows: Sequence[Sequence[int]], length: int = MAX_TOKENS) -> np.ndarray:
    """int32 (n, L) with 0 padding, L = the longest row (at least 1, at most ``length``)."""
    width = max(1, min(length, max((len(r) for r in rows), default=1)))
    out = np.zeros((len(rows), width), dtype=np.int32)
    for i, row in enumerate(rows):
        row = list(row)[:width]
        out[i, : len(row)] = row
    return out


class PretrainedTokenizer:
    """The pretrained table's tokenizer (a Hugging Face tokenizers JSON file); imported only when used."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer  # Rust, no model download: the file is the whole tokenizer

        self.path = Path(path)
        self._tokenizer = Tokenizer.from_file(str(path))

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each normalised text, without special tokens."""
        encoded = self._tokenizer.encode_batch([normalise(t) for t in texts], add_special_tokens=False)
        return [e.ids[:MAX_TOKENS] for e in encoded]


# ---------------------------------------------------------------- the tower (numpy)


def _pool(table: np.ndarray, logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Attention pool: softmax of each token's learned weight over the non-pad tokens; zero if none."""
    mask = ids > 0
    weights = np.where(mask, logits[ids], -np.inf)
    top = np.max(weights, axis=1, keepdims=True)
    weights = np.where(mask, np.exp(weights - np.where(np.isfinite(top), top, 0.0)), 0.0)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    return np.einsum("nl,nld->nd", weights, table[ids].astype(np.float32))


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


@dataclass
class TextTower:
    """The exported tower: plain arrays, loaded from one .npz (and a tokenizer file for the pretrained channel).

    ``weights`` keys: ``vocab`` (str, V), ``word_table`` (V+1, d_w), ``word_logits`` (V+1,) for the catalogue
    channel; ``pre_table`` (T, d_p) float16 and ``pre_logits`` (T,) for the pretrained channel when present;
    ``w1``, ``b1``, ``w2``, ``b2``, ``skip`` for the MLP: y = relu(x w1 + b1) w2 + b2 + x skip.
    A tower trained into one sub-space of the stored vectors (``text.target``) has ``place`` (int: where the
    sub-space starts, the stored vector's length) and ``place_scale`` (1 / the sub-space's length in a stored vector):
    :meth:`encode` writes its output there, so a query vector's inner product with a stored vector is their cosine
    in that sub-space (:meth:`placed`).
    """

    weights: dict[str, np.ndarray]
    tokenizer: PretrainedTokenizer | None = None

    def __post_init__(self) -> None:
        self.vocab = {str(w): i + 1 for i, w in enumerate(self.weights["vocab"].tolist())}
        # the tower stores no word counts, but :func:`build_vocabulary` keeps the most frequent first: a tie between
        # equally near words goes to the one earlier in the vocabulary
        self.speller = Speller({w: len(self.vocab) - i for w, i in self.vocab.items()})
        self.uses_pretrained = "pre_table" in self.weights
        if self.uses_pretrained and self.tokenizer is None:
            raise ValueError("the tower has a pretrained channel but no tokenizer was given")
        self.dimension = int(self.weights["w2"].shape[1])  # of the stored vectors its queries are compared with
        self.scale = 1.0  # the length of its query vectors (in a sub-space: the inverse of the sub-space's share)
        self.offset = 0
        if "place" in self.weights:
            self.offset, self.dimension = (int(v) for v in self.weights["place"])
            self.scale = float(self.weights["place_scale"])
            if not (0 <= self.offset and self.offset + int(self.weights["w2"].shape[1]) <= self.dimension
                    and np.isfinite(self.scale) and self.scale >= 1.0):
                raise ValueError(f"the tower's place {self.weights['place'].tolist()} (scale {self.scale}) does not "
                                 "fit its output")

    def placed(self, offset: int, dimension: int, scale: float) -> TextTower:
        """This tower writing its output at ``offset`` of a ``dimension``-long stored vector, times ``scale``: for a
        tower trained on one sub-space, whose unit sub-vectors are 1 / ``scale`` long in the stored vectors."""
        weights = {**self.weights, "place": np.array([offset, dimension], np.int64),
                   "place_scale": np.array(scale, np.float64)}
        return TextTower(weights, self.tokenizer)

    @classmethod
    def load(cls, path: str | Path | BinaryIO, tokenizer_path: str | Path | None = None) -> TextTower:
        """Read a tower written by :meth:`save` (no pickles), from its file or its bytes (as checked against a
        manifest)."""
        with np.load(path, allow_pickle=False) as data:
            weights = {name: data[name] for name in data.files}
        if int(weights.get("format", np.array(0))) != TOWER_FORMAT:
            raise ValueError(f"{path} is not a text tower of format {TOWER_FORMAT}")
        tokenizer = PretrainedTokenizer(tokenizer_path) if "pre_table" in weights and tokenizer_path else None
        return cls(weights, tokenizer)

    def save(self, path: str | Path) -> None:
        from lookalike.artifacts import atomic_path

        with atomic_path(path) as tmp, tmp.open("wb") as stream:
            np.savez(stream, format=np.array(TOWER_FORMAT), **self.weights)

    def word_ids(self, texts: Sequence[str]) -> np.ndarray:
        return pad_ids([[self.vocab[w] for w in words(t) if w in self.vocab] for t in texts])

    def pretrained_ids(self, texts: Sequence[str]) -> np.ndarray | None:
        return pad_ids(self.tokenizer.ids(texts)) if self.tokenizer is not None else None

    def _spelt(self, word: str) -> str:
        if word in self.vocab or not correctable(word):
            return word
        return self.speller.closest(word) or word

    def corrected(self, text: str) -> str:
        """``text`` normalised, each word of 4+ letters the vocabulary lacks replaced by the vocabulary word nearest
        it (:class:`~lookalike.text.spelling.Speller`; kept as typed when none is near). The rest of the text,
        punctuation included, is left as it was, so the pretrained tokenizer reads a query without typos as before."""
        return _WORD.sub(lambda match: self._spelt(match.group()), normalise(text))

    def known_tokens(self, text: str) -> int:
        """How many tokens of ``text`` the tower can read (0: it has nothing to go on), its misspelt words corrected
        as :meth:`encode` corrects them."""
        text = self.corrected(text)
        count = int((self.word_ids([text]) > 0).sum())
        if self.tokenizer is not None:
            count += len(self.tokenizer.ids([text])[0])
        return count

    def features(self, word_ids: np.ndarray, pre_ids: np.ndarray | None) -> np.ndarray:
        """The pooled input to the MLP: catalogue-word pool, then the pretrained pool when present."""
        parts = [_pool(self.weights["word_table"], self.weights["word_logits"], word_ids)]
        if self.uses_pretrained:
            parts.append(_pool(self.weights["pre_table"], self.weights["pre_logits"], pre_ids))
        return np.concatenate(parts, axis=1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        w = self.weights
        hidden = np.maximum(x @ w["w1"] + w["b1"], 0.0)
        return unit(hidden @ w["w2"] + w["b2"] + x @ w["skip"])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, dim) vectors, one per query text, whose inner product with the build's image embeddings is
        the cosine in the space the tower was trained into (unit vectors when that is the whole stored vector); a
        misspelt word is read as its correction (:meth:`corrected`). Training reads its own views' token ids, so
        only queries (the service's, the evaluation's and the val score's) come through here."""
        texts = [self.corrected(t) for t in texts]
        vectors = self.forward(self.features(self.word_ids(texts), self.pretrained_ids(texts)))
        if "place" not in self.weights:
            return vectors
        out = np.zeros((len(vectors), self.dimension), np.float32)
        out[:, self.offset : self.offset + vectors.shape[1]] = vectors * np.float32(self.scale)
        return out


def pretrained_files() -> tuple[Path, Path]:
    """(weights, tokenizer) bundled in the wordllama wheel, found without importing the package.

    Nothing downloads: both files ship inside the wheel (requirements.txt pins it).
    """
    import importlib.util

    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the wordllama package is not installed (pip install -r requirements.txt)")
    root = Path(next(iter(spec.submodule_search_locations)))
    weights = root / "weights" / "l2_supercat_256.safetensors"
    tokenizer = root / "tokenizers" / "l2_supercat_tokenizer_config.json"
    for path in (weights, tokenizer):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the installed wordllama package")
    return weights, tokenizer


def read_safetensors(path: str | Path, key: str) -> np.ndarray:
    """One tensor of a .safetensors file (8-byte header size, JSON header, raw little-endian data)."""
    dtypes = {"F16": np.float16, "F32": np.float32, "BF16": None}
    with Path(path).open("rb") as stream:
        size = int.from_bytes(stream.read(8), "little")
        header = json.loads(stream.read(size))
        entry = header[key]
        dtype = dtypes.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {key} has unsupported dtype {entry['dtype']}")
        start, end = entry["data_offsets"]
        stream.seek(8 + size + start)
        return np.frombuffer(stream.read(end - start), dtype=np.dtype(dtype).newbyteorder("<")).reshape(
            entry["shape"])
