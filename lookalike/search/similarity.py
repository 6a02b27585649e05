"""What "alike" means, chosen per query: one index, several questions.

A build's vectors are concatenated unit sub-vectors, one per attribute (the fashion build's: type, colour,
look, and two more: ``model.subspaces``), each scaled by the root of its stored weight w_i and the whole
renormalised (:func:`lookalike.model.network.build_head`). The inner product of two stored vectors is then
sum_i w_i cos_i / sum_i w_i. A query asks another question by re-weighting only its own sub-vectors:
its sub-vector i is sqrt(w_i) u_i / Z like any stored one, so scaling it by v_i / w_i makes the inner
product with every stored vector sum_i v_i cos_i (up to one constant): "same colour" or "same type" is a
query-side change, and the index, the live items and their filters serve every mode unchanged.

    similarity = Similarity.from_manifest(manifest)
    query = similarity.query_vector(vector, "colour")       # a mode name
    query = similarity.query_vector(vector, "type:1,colour:0.5")   # or explicit weights
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OVERALL = "overall"


class SimilarityError(ValueError):
    """A similarity the build cannot answer (unknown mode or sub-space, bad weight): the message is for a person."""


@dataclass(frozen=True)
class Similarity:
    """The sub-space layout of a build (name -> (dim, stored weight), in vector order) and its named modes."""

    subspaces: tuple[tuple[str, int, float], ...]
    modes: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_params(cls, model: dict, similarity: dict | None = None) -> Similarity:
        subspaces = tuple((name, int(spec["dim"]), float(spec["weight"])) for name, spec in model["subspaces"].items())
        return cls(subspaces, {name: {k: float(v) for k, v in weights.items()}
                               for name, weights in (similarity or {}).items() if name != OVERALL})

    @classmethod
    def from_manifest(cls, manifest: dict) -> Similarity:
        """The manifest's layout; a build from before sub-spaces is one "type" sub-space of its whole dimension."""
        entry = manifest.get("params", {}).get("similarity")
        if not entry:
            return cls((("type", int(manifest["dimension"]), 1.0),))
        return cls(tuple((s["name"], int(s["dim"]), float(s["weight"])) for s in entry["subspaces"]),
                   {name: dict(weights) for name, weights in entry["modes"].items()})

    def to_manifest(self) -> dict:
        return {"subspaces": [{"name": n, "dim": d, "weight": w} for n, d, w in self.subspaces],
                "modes": self.modes}

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.subspaces]

    def span(self, name: str) -> tuple[int, int, float]:
        """Where sub-space ``name`` lies in a stored vector: (start, stop, its length there, sqrt(w / sum w))."""
        start, total = 0, sum(weight for _, _, weight in self.subspaces)
        for sub, dim, weight in self.subspaces:
            if sub == name:
                return start, start + dim, float(np.sqrt(weight / total))
            start += dim
        raise SimilarityError(f"unknown sub-space {name!r}: this build has {', '.join(self.names)}")

    @property
    def mode_names(self) -> list[str]:
        """Every mode a query may name: "overall" first."""
        return [OVERALL, *self.modes]

    def describe(self) -> dict[str, dict[str, float]]:
        """mode -> the weights it applies (for the API's documentation and /v1/stats)."""
        return {OVERALL: {name: weight for name, _, weight in self.subspaces}, **self.modes}

    def weights(self, similarity: str | dict[str, float] | None) -> dict[str, float] | None:
        """The weights a mode name, a "name:weight,..." string or a mapping asks for; None for the stored mix."""
        if similarity is None or (isinstance(similarity, str) and similarity.strip() in ("", OVERALL)):
            return None
        if isinstance(similarity, str):
            text = similarity.strip()
            if text in self.modes:
                return self.modes[text]
            if ":" not in text:
                raise SimilarityError(f"unknown similarity {text!r}: use one of {', '.join(self.mode_names)}, or "
                                      f"weights such as 'type:1,colour:0.5' over {', '.join(self.names)}")
            pairs: dict[str, float] = {}
            for part in text.split(","):
                name, _, value = part.partition(":")
                try:
                    pairs[name.strip()] = float(value)
                except ValueError:
                    raise SimilarityError(f"similarity weight {part.strip()!r} is not name:number") from None
            similarity = pairs
        unknown = sorted(set(similarity) - set(self.names))
        if unknown:
            raise SimilarityError(f"unknown sub-space {', '.join(map(repr, unknown))}: this build has "
                                  f"{', '.join(self.names)}")
        values = {name: float(w) for name, w in similarity.items()}
        if not all(np.isfinite(w) and 0 <= w <= 1000 for w in values.values()) or not any(values.values()):
            raise SimilarityError("similarity weights must be numbers from 0 to 1000, at least one above 0")
        return values

    def query_vector(self, vector: np.ndarray, similarity: str | dict[str, float] | None = None) -> np.ndarray:
        """float32 (dim,) unit query asking ``similarity`` of the stored vectors; the vector itself for "overall"."""
        weights = self.weights(similarity)
        vector = np.asarray(vector, np.float32)
        if weights is None:
            return vector
        scale = np.concatenate([np.full(dim, weights.get(name, 0.0) / stored, np.float32)
                                for name, dim, stored in self.subspaces])
        if scale.shape != vector.shape[-1:]:
            raise SimilarityError(f"the build's vectors have {vector.shape[-1]} dimensions, its sub-spaces "
                                  f"{len(scale)}")
        query = vector * scale
        return (query / max(float(np.linalg.norm(query)), 1e-12)).astype(np.float32)
