"""bench.memory writes its large catalogue with the pinned build's embedding dimension, not a fixed one."""

from __future__ import annotations

import json

import numpy as np

from bench import memory


def test_the_large_catalogue_keeps_the_pinned_builds_dimension(tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(6, 8)).astype(np.float32)
    np.save(artifacts / "embeddings.npy", embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True))
    np.save(artifacts / "image_paths.npy", np.array([f"images/{i}.jpg" for i in range(6)]))
    (artifacts / "items.csv").write_text("id,name\n" + "".join(f"{i},item {i}\n" for i in range(6)))
    (artifacts / "manifest.json").write_text(json.dumps({"count": 6, "dimension": 8, "files": {},
                                                         "params": {"index": {"type": "flat"}}}))
    monkeypatch.setattr(memory, "ROOT", tmp_path)
    memory.write_catalogue(tmp_path / "large", 20, {"type": "flat"}, seed=0)
    manifest = json.loads((tmp_path / "large/manifest.json").read_text())
    assert (manifest["count"], manifest["dimension"]) == (20, 8)
    assert np.load(tmp_path / "large/embeddings.npy").shape == (20, 8)
