"""Stage text: the build's image embeddings + the items' words -> the text tower, and its evaluation.

Trains the tower into the image embedding space (lookalike/text/training.py; the train split, val for
early stopping): the whole stored vector, or the sub-space ``text.target`` names (the fashion build's "picture",
the pretrained features on their principal axes, where one product is told from another of its type and colour).
Writes artifacts/text_tower.npz (plain numpy arrays: no TensorFlow at query time) and,
when it reads pretrained token embeddings, artifacts/text_tokenizer.json (copied from the pinned wordllama
wheel); the index stage pins both in the build's manifest. Then scores lexical, learned and hybrid
rankings on the test split (lookalike/text/evaluation.py) into metrics/text.json. A catalogue whose
description names no words (a folder of photos) gets empty files: its build has no text search. Which columns are an
item's words, its title and each attribute query set comes from the catalogue's description
(``data.catalogue``; :func:`lookalike.text.evaluation.text_columns`), the same roles the index stage writes
into the build's manifest for text search at query time.
"""

from __future__ import annotations

import shutil

import numpy as np

from lookalike.artifacts import write_json, write_with
from lookalike.catalogue.reading import read_table
from lookalike.params import PROJECT_ROOT, STORED_TARGET, catalogue_description, load_params, text_target
from lookalike.search.similarity import Similarity
from lookalike.text.evaluation import evaluate_text_search, text_columns
from lookalike.text.lexical import FUSIONS
from lookalike.text.tower import TextTower, pretrained_files, unit
from lookalike.text.training import train_text_tower

TOWER_FILE = "text_tower.npz"
TOKENIZER_FILE = "text_tokenizer.json"


def main() -> None:
    params = load_params()
    config = params["text"]
    if config["fusion"] not in FUSIONS:  # before training, not after it
        raise SystemExit(f"params.yaml: text.fusion = {config['fusion']!r}: must be one of {', '.join(FUSIONS)}")
    description = catalogue_description(params)
    artifacts = PROJECT_ROOT / "artifacts"
    items = read_table(artifacts / "items.csv")
    embeddings = np.load(artifacts / "embeddings.npy")
    if len(items) != len(embeddings):
        raise SystemExit(f"{len(items)} items but {len(embeddings)} embeddings: rerun embed (dvc repro)")
    columns = text_columns(description, items)
    tokenizer = artifacts / TOKENIZER_FILE
    if not columns.words:  # a folder of photos: nothing to read words from; the build answers photos only
        for file in (artifacts / TOWER_FILE, tokenizer):  # DVC wants every declared output: empty says "none"
            write_with(file, lambda tmp: tmp.write_bytes(b""))
        write_json(PROJECT_ROOT / "metrics/text.json", {"skipped": "the catalogue's description names no words"})
        print("no text tower: the catalogue's description names no words")
        return
    print(f"words: {', '.join(columns.words) or 'none'}; title queries: "
          f"{columns.title if columns.title_queries else 'none'}; attribute queries: "
          + ", ".join(f"{name} ({' + '.join(asked)})" for name, asked in columns.attributes.items()), flush=True)
    target = text_target(params)
    if target == STORED_TARGET:
        tower, report = train_text_tower(items, embeddings, config, columns, seed=int(config["seed"]))
    else:  # one sub-space: trained on its unit sub-vectors, placed back where it lies in a stored vector
        start, stop, length = Similarity.from_params(params["model"]).span(target)
        tower, report = train_text_tower(items, unit(embeddings[:, start:stop]), config, columns,
                                         seed=int(config["seed"]))
        tower = tower.placed(start, embeddings.shape[1], 1.0 / length)
    tower.save(artifacts / TOWER_FILE)
    if tower.uses_pretrained:
        write_with(tokenizer, lambda tmp: shutil.copyfile(pretrained_files()[1], tmp))
    else:  # DVC wants every declared output: an empty file says "no pretrained channel"
        write_with(tokenizer, lambda tmp: tmp.write_bytes(b""))
    tower = TextTower.load(artifacts / TOWER_FILE, tokenizer if tower.uses_pretrained else None)
    result = evaluate_text_search(tower, items, embeddings, config, columns, seed=int(config["seed"]))
    result["training"] = {k: v for k, v in report.items() if k != "history"}
    result["training"]["history"] = report["history"]
    for gallery in ("hidden", "half", "visible"):
        for ranking, values in result[gallery].items():
            print(f"{gallery:>7} {ranking:>7}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
    write_json(PROJECT_ROOT / "metrics/text.json", result)


if __name__ == "__main__":
    main()
