"""End to end: the six DVC stages on a 60-image slice of the shared sample, in a scratch tiny_project.

Checks every output and their agreement, DVC's caching behaviour, that the head
applied to cached features equals the full saved model, and that the search API
finds a catalogue photo itself first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PER_LABEL, SLICE_LABELS, ran_stages, run, tiny_project_copy

from lookalike.model.colour import COLOUR_FEATURES


def test_every_output_exists_and_agrees(tiny_project: Path) -> None:
    artifacts = tiny_project / "artifacts"
    embeddings = np.load(artifacts / "embeddings.npy")
    paths = np.load(artifacts / "image_paths.npy")
    manifest = json.loads((artifacts / "manifest.json").read_text())
    items = (artifacts / "items.csv").read_text().splitlines()
    dimension = yaml.safe_load((tiny_project / "params.yaml").read_text())["model"]["embedding_dim"]
    assert embeddings.dtype == np.float32 and embeddings.shape == (60, dimension) and dimension == 512
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert len(paths) == 60 == len(items) - 1 == manifest["count"]
    assert manifest["dimension"] == dimension
    assert [Path(p).name for p in paths] == [f"{line.split(',')[0]}.jpg" for line in items[1:]]
    assert set(manifest["files"]) == {"model", "embeddings", "image_paths", "items", "index",
                                      "runtime_model", "runtime_backbone", "text_tower", "text_tokenizer",
                                      "more_photos"}  # empty here: one photo per item
    assert manifest["photos"] == 60
    features = np.load(artifacts / "features.npy")
    assert features.shape == (2, 60, 1280 + COLOUR_FEATURES)  # pooled backbone features, then the colour descriptor


def test_subset_report_counts_quirks(tiny_project: Path) -> None:
    report = json.loads((tiny_project / "data/subset_report.json").read_text())
    assert report["catalogue"]["n_rows_without_image"] == 1
    # per label: 2 test, 1 val, 7 train; no label is rare, so nothing is only in the gallery
    assert report["subset"]["splits"] == {"train": 42, "val": 6, "test": 12, "gallery": 0}


def test_metrics_are_in_range_and_above_chance(tiny_project: Path) -> None:
    metrics = json.loads((tiny_project / "metrics/metrics.json").read_text())
    assert metrics["queries"] == 12 and metrics["gallery"] == 60
    chance = (PER_LABEL - 1) / (60 - 1)  # a random neighbour shares the label this often
    for model in ("trained", "pretrained"):
        scores = metrics[model]
        assert set(scores) == {"precision_at_1", "precision_at_5", "recall_at_5", "map_at_5",
                               "top5_accuracy", "map_at_r", "type_colour_precision_at_5", "type_colour_map_at_r",
                               "type_gender_precision_at_5", "colour_precision_at_5",
                               "type_colour_precision_at_5_bound",  # and by the description's colour families:
                               "type_colour_family_precision_at_5", "colour_family_precision_at_5"}
        assert all(0.0 <= value <= 1.0 for value in scores.values())
        assert scores["precision_at_5"] > 2 * chance
    per_label = (tiny_project / "metrics/per_label.csv").read_text().splitlines()
    assert len(per_label) == 1 + len(SLICE_LABELS)


def test_head_on_cached_features_equals_full_model(tiny_project: Path) -> None:
    sys.path.insert(0, str(tiny_project))
    try:
        from lookalike.model.network import CompiledModel, load_embedding_model
        from lookalike.model.preprocessing import PreprocessSpec, preprocess

        manifest = json.loads((tiny_project / "artifacts/manifest.json").read_text())
        spec = PreprocessSpec(**manifest["params"]["preprocess"])
        model = CompiledModel(load_embedding_model(tiny_project / "artifacts/model.keras"))
        paths = np.load(tiny_project / "artifacts/image_paths.npy")[:8]
        full = model(np.stack([preprocess(p, spec) for p in paths]))
    finally:
        sys.path.remove(str(tiny_project))
    stored = np.load(tiny_project / "artifacts/embeddings.npy")[:8]
    np.testing.assert_allclose(full, stored, atol=1e-4)


def test_search_api_finds_a_catalogue_photo_itself_first(tiny_project: Path) -> None:
    from lookalike.search.engine import Searcher

    searcher = Searcher.load(tiny_project / "artifacts", root=tiny_project)
    for row in (0, 17, 59):
        response = searcher.search(searcher.resolve_path(row), k=5)
        assert response.matches[0].id == int(searcher.items["id"].iat[row])
        assert response.matches[0].score == pytest.approx(1.0, abs=1e-4)
        assert len(response.matches) == 5
        similar = searcher.similar_items(response.matches[0].id, k=5)
        assert response.matches[0].id not in [m.id for m in similar.matches]


def test_second_repro_runs_nothing_and_index_param_reruns_only_index_and_evaluate(
    tiny_project: Path, tmp_path: Path
) -> None:
    """On a private copy: committing and switching the index here must not reach the shared project."""
    project = tiny_project_copy(tiny_project, tmp_path)
    assert ran_stages(run(["dvc", "repro"], project)) == set()
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["index"].update(type="hnsw", ef_search=8)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(run(["dvc", "repro"], project)) == {"index", "evaluate"}
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], project).strip().splitlines()[-1])
    assert "metrics/metrics.json" in diff


def test_evaluate_folder_scores_another_catalogue_without_retraining(tiny_project: Path) -> None:
    from lookalike.catalogue.description import load_description
    from lookalike.evaluation.folder import evaluate_folder
    from lookalike.search.engine import Searcher

    searcher = Searcher.load(tiny_project / "artifacts", root=tiny_project)
    model_before = (tiny_project / "artifacts/model.keras").read_bytes()
    result = evaluate_folder(searcher, tiny_project.parent / "catalogue",
                             load_description(tiny_project / "catalogues/kaggle-fashion.yaml"), with_baseline=True)
    assert result["images"] == 60 and result["queries"] == 60 and result["queries_without_relevant"] == 0
    chance = (PER_LABEL - 1) / (60 - 1)
    for model in ("trained", "pretrained"):
        assert all(0.0 <= value <= 1.0 for value in result[model].values())
        assert result[model]["precision_at_5"] > 2 * chance
    assert (tiny_project / "artifacts/model.keras").read_bytes() == model_before


def test_related_table_and_command_line(tiny_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    from lookalike.cli import main
    from lookalike.search.engine import Searcher

    table = Searcher.load(tiny_project / "artifacts", root=tiny_project).related_table(k=3)
    assert len(table) == 60 * 3 and table["id"].nunique() == 60
    assert not (table["id"] == table["related_id"]).any()
    assert all((group["score"].diff().dropna() <= 1e-6).all() for _, group in table.groupby("id"))

    out = tmp_path / "related.csv"
    assert main(["--artifacts", str(tiny_project / "artifacts"), "related", "--k", "3", "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), table)
    image = str(Searcher.load(tiny_project / "artifacts", root=tiny_project).resolve_path(5))
    assert main(["--artifacts", str(tiny_project / "artifacts"), "query", image, "--k", "2", "--json"]) == 0
    assert '"rank": 1' in capsys.readouterr().out
    assert main(["--artifacts", str(tiny_project / "artifacts"), "query", str(tmp_path / "missing.jpg")]) == 2
    assert "image file not found" in capsys.readouterr().err


def test_finetuning_blocks_caches_their_input_maps_and_trains_only_them(tiny_project: Path, tmp_path: Path) -> None:
    project = tmp_path / "finetune"
    shutil.copytree(tiny_project, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(finetune_blocks=2, finetune_steps=20, eval_every=10)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(run(["dvc", "repro"], project)) == {"features", "train", "embed", "text", "index", "evaluate"}
    maps = np.load(project / "artifacts/feature_maps.npy")
    # 96 px: the last two blocks see 3x3x192 maps, flattened, then the same view's colour descriptor
    assert maps.dtype == np.float16 and maps.shape == (2, 60, 3 * 3 * 192 + COLOUR_FEATURES)
    pooled = np.load(project / "artifacts/features.npy")
    with_colour = np.load(tiny_project / "artifacts/features.npy")  # without fine-tuning: the same views
    np.testing.assert_allclose(pooled, with_colour, atol=1e-4)
    np.testing.assert_allclose(maps[..., -COLOUR_FEATURES:], with_colour[..., -COLOUR_FEATURES:], atol=2e-3)
    assert np.load(tiny_project / "artifacts/feature_maps.npy").shape == (0,)  # not fine-tuning: nothing cached
    sys.path.insert(0, str(project))
    try:
        from lookalike.model.network import load_embedding_model

        tuned = load_embedding_model(project / "artifacts/model.keras").get_layer("backbone")
        frozen = load_embedding_model(tiny_project / "artifacts/model.keras").get_layer("backbone")
    finally:
        sys.path.remove(str(project))
    moved = {a.path for a, b in zip(tuned.weights, frozen.weights, strict=True) if not np.array_equal(a, b)}
    assert moved and all(path.startswith(("blocks_14_", "blocks_15_", "conv_head")) for path in moved), moved
    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert 0.0 <= metrics["trained"]["precision_at_5"] <= 1.0
    # maps cut for 2 blocks do not fit 3: the train stage, run by hand, says so and writes nothing
    params["train"]["finetune_blocks"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    model_before = (project / "artifacts/model.keras").read_bytes()
    result = subprocess.run([sys.executable, "-m", "stages.train"], cwd=project, capture_output=True, text=True)
    assert result.returncode != 0 and "rerun the features stage" in result.stderr, result.stderr[-2000:]
    assert (project / "artifacts/model.keras").read_bytes() == model_before
