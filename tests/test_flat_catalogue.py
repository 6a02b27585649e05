"""A catalogue that is only a folder of photos (no table, no labels) builds with `dvc repro` and answers photo
searches: trained without labels (the instance sub-space), scored by the instance protocol, no text search."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, SHARED, project_skeleton, ran_stages, run

from lookalike.search.engine import Searcher

PHOTOS = 40


@pytest.fixture(scope="module")
def flat_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flat")
    project, photos = root / "project", root / "photos"
    project_skeleton(project)
    photos.mkdir()
    for source in sorted((SHARED / "images").iterdir())[:PHOTOS]:  # renamed: nothing to read from the file name
        shutil.copy(source, photos / f"photo-{source.stem}.jpg")
    (project / "catalogues/photos.yaml").write_text("layout: flat\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(catalogue_dir=str(photos), catalogue="catalogues/photos.yaml")
    params["subset"].update(size=1000, test_fraction=0.2, val_fraction=0.2)
    params["backbone"]["image_size"] = 96
    params["features"].update(batch_size=16, augmented_views=2)
    params["model"]["subspaces"] = {"photo": {"column": "@instance", "dim": params["model"]["embedding_dim"],
                                              "weight": 1.0}}
    params["similarity"] = {}
    params["train"].update(steps=60, eval_every=20, finetune_blocks=0)
    params["mlflow"]["tracking_uri"] = "sqlite:///mlflow.db"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], project)
    run(["dvc", "init", "-q"], project)
    output = run(["dvc", "repro"], project)
    assert {"sample_subset", "features", "train", "embed", "index", "evaluate"} <= ran_stages(output), output[-3000:]
    return project


def test_a_folder_of_photos_builds_without_labels_and_reports_the_instance_protocol(flat_project: Path) -> None:
    report = json.loads((flat_project / "data/subset_report.json").read_text())
    assert report["subset"]["rows"] == PHOTOS and report["subset"]["labels"] == 0
    metrics = json.loads((flat_project / "metrics/metrics.json").read_text())
    assert metrics["relevance"] == "instance"
    assert metrics["queries"] == report["subset"]["splits"]["test"] > 0
    for model in ("trained", "pretrained"):  # altered copies of held-out photos find their own photo
        assert 0.0 <= metrics[model]["instance_recall_at_1"] <= metrics[model]["instance_recall_at_5"] <= 1.0
        assert metrics[model]["instance_recall_at_5"] > 0.5
    assert json.loads((flat_project / "metrics/text.json").read_text())["skipped"]


def test_a_folder_of_photos_answers_photo_searches_with_its_own_file_first(flat_project: Path) -> None:
    searcher = Searcher.load(flat_project / "artifacts", root=flat_project)
    assert "text_tower" not in searcher.manifest["files"]  # no words: no text search pinned
    assert len(searcher.items) == PHOTOS
    items = searcher.items.set_index("id")
    for row in (0, 17, 39):
        photo = Path(searcher.image_paths[row])
        response = searcher.search(photo.read_bytes(), k=3)
        first = response.matches[0]
        assert items.loc[first.id, "external_id"] == photo.name  # the file is the item's id
        assert first.score == pytest.approx(1.0, abs=1e-3)
        assert len({m.id for m in response.matches}) == 3
    assert np.allclose(np.linalg.norm(searcher.embeddings, axis=1), 1.0, atol=1e-3)
