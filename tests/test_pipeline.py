"""End to end: the six DVC stages on a 60-image slice of the shared sample, in a scratch project.

Checks every output and their agreement, DVC's caching behaviour, that the head
applied to cached features equals the full saved model, and that the search API
finds a catalogue photo itself first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / "../shared/data/fashion-5k").resolve()
STAGES = ("sample_subset", "features", "train", "embed", "index", "evaluate")
SLICE_LABELS = ("Tshirts", "Casual Shoes", "Watches", "Handbags", "Sunglasses", "Kurtas")
PER_LABEL = 10


def _make_slice(folder: Path) -> None:
    """A Kaggle-layout catalogue of 10 images for each of 6 labels, plus the CSV quirks."""
    lines = (SHARED / "styles.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    picked, per_label = [header], dict.fromkeys(SLICE_LABELS, 0)
    (folder / "images").mkdir(parents=True)
    for line in rows:
        fields = line.split(",", 9)
        label, image = fields[4], SHARED / "images" / f"{fields[0]}.jpg"
        if label in per_label and per_label[label] < PER_LABEL and image.is_file():
            per_label[label] += 1
            picked.append(line)
            shutil.copy(image, folder / "images" / image.name)
    picked.append("999999999,Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,Row, with no image")
    (folder / "styles.csv").write_text("\n".join(picked) + "\n")


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def _ran_stages(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of the project with small params, after one `dvc repro`."""
    if not SHARED.is_dir():
        pytest.fail(f"the shared sample is missing: {SHARED}")
    root = tmp_path_factory.mktemp("project")
    for name in ("lookalike", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    catalogue = root.parent / "catalogue"
    _make_slice(catalogue)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["catalogue_dir"] = str(catalogue)
    params["subset"].update(size=60, min_per_class=5, test_fraction=0.2, val_fraction=0.15)
    params["backbone"]["image_size"] = 96
    params["features"].update(batch_size=16, augmented_views=1)
    params["train"].update(steps=60, eval_every=20, classes_per_batch=4, images_per_class=4)
    params["mlflow"]["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], root)
    _run(["dvc", "init", "-q"], root)
    output = _run(["dvc", "repro"], root)
    assert _ran_stages(output) == set(STAGES), output[-3000:]
    return root


def test_every_output_exists_and_agrees(project: Path) -> None:
    artifacts = project / "artifacts"
    embeddings = np.load(artifacts / "embeddings.npy")
    paths = np.load(artifacts / "image_paths.npy")
    manifest = json.loads((artifacts / "manifest.json").read_text())
    items = (artifacts / "items.csv").read_text().splitlines()
    assert embeddings.dtype == np.float32 and embeddings.shape == (60, 256)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert len(paths) == 60 == len(items) - 1 == manifest["count"]
    assert manifest["dimension"] == 256
    assert [Path(p).name for p in paths] == [f"{line.split(',')[0]}.jpg" for line in items[1:]]
    assert set(manifest["files"]) == {"model", "embeddings", "image_paths", "items", "index"}
    features = np.load(artifacts / "features.npy")
    assert features.shape == (2, 60, 1280)


def test_subset_report_counts_quirks(project: Path) -> None:
    report = json.loads((project / "data/subset_report.json").read_text())
    assert report["catalogue"]["n_rows_without_image"] == 1
    assert report["subset"]["splits"] == {"train": 42, "val": 6, "test": 12}  # per label: 2 test, 1 val, 7 train


def test_metrics_are_in_range_and_above_chance(project: Path) -> None:
    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert metrics["queries"] == 12 and metrics["gallery"] == 60
    chance = (PER_LABEL - 1) / (60 - 1)  # a random neighbour shares the label this often
    for model in ("trained", "pretrained"):
        scores = metrics[model]
        assert set(scores) == {"precision_at_1", "precision_at_5", "recall_at_5", "map_at_5",
                               "top5_accuracy", "map_at_r"}
        assert all(0.0 <= value <= 1.0 for value in scores.values())
        assert scores["precision_at_5"] > 2 * chance
    per_label = (project / "metrics/per_label.csv").read_text().splitlines()
    assert len(per_label) == 1 + len(SLICE_LABELS)


def test_head_on_cached_features_equals_full_model(project: Path) -> None:
    sys.path.insert(0, str(project))
    try:
        from lookalike.model import CompiledModel, load_embedding_model
        from lookalike.preprocessing import PreprocessSpec, preprocess

        manifest = json.loads((project / "artifacts/manifest.json").read_text())
        spec = PreprocessSpec(**manifest["params"]["preprocess"])
        model = CompiledModel(load_embedding_model(project / "artifacts/model.keras"))
        paths = np.load(project / "artifacts/image_paths.npy")[:8]
        full = model(np.stack([preprocess(p, spec) for p in paths]))
    finally:
        sys.path.remove(str(project))
    stored = np.load(project / "artifacts/embeddings.npy")[:8]
    np.testing.assert_allclose(full, stored, atol=1e-4)


def test_search_api_finds_a_catalogue_photo_itself_first(project: Path) -> None:
    from lookalike.search import Searcher

    searcher = Searcher.load(project / "artifacts", root=project)
    for row in (0, 17, 59):
        response = searcher.search(searcher.resolve_path(row), k=5)
        assert response.matches[0].id == int(searcher.items["id"].iat[row])
        assert response.matches[0].score == pytest.approx(1.0, abs=1e-4)
        assert len(response.matches) == 5
        similar = searcher.similar_items(response.matches[0].id, k=5)
        assert response.matches[0].id not in [m.id for m in similar.matches]


def test_second_repro_runs_nothing_and_index_param_reruns_only_index_and_evaluate(project: Path) -> None:
    assert _ran_stages(_run(["dvc", "repro"], project)) == set()
    _run(["git", "add", "-A"], project)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["index"].update(type="hnsw", ef_search=8)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _ran_stages(_run(["dvc", "repro"], project)) == {"index", "evaluate"}
    diff = json.loads(_run(["dvc", "metrics", "diff", "--json"], project).strip().splitlines()[-1])
    assert "metrics/metrics.json" in diff
