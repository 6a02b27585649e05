"""Catalogue embedding on Ray Data (lookalike/model/distributed.py) on a real two-node local Ray cluster.

A head and one more node (``ray.cluster_utils.Cluster``), 1 CPU and a 200 MB object store each, shared by
the module and shut down at its end. Against the tiny project's pinned model: the vectors equal the
single-process path's (lookalike.model.runtime.predict_paths), bad images are counted and not fatal, a driver
killed after its first shard resumes without redoing it, and a worker killed mid-job is retried by Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.cli import main
from lookalike.model.distributed import (
    DRIVER_FAILPOINT_ENV,
    REPORT_NAME,
    WORKER_FAILPOINT_ENV,
    catalogue_table,
    embed_table,
    files_table,
    model_from_build,
    read_embeddings,
    read_report,
    read_shard_metadata,
)
from lookalike.model.runtime import EmbeddingRuntime, predict_paths
from lookalike.params import catalogue_description, load_params

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5  # max abs difference from the single-process path


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The shared two-node cluster with this process connected as its driver."""
    import ray

    ray.init(address=ray_cluster.address, log_to_driver=False, configure_logging=False)
    yield ray_cluster


def _connect(cluster, env: dict[str, str] | None = None) -> None:
    """(Re)join the cluster as this process's driver, with job-wide environment variables for the workers."""
    import ray

    ray.shutdown()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env} if env else None)


@pytest.fixture(scope="module")
def model(tiny_project: Path) -> dict:
    path, spec, sha = model_from_build(tiny_project / "artifacts")
    return {"path": path, "spec": spec, "sha": sha, "runtime": EmbeddingRuntime(path, 1)}


@pytest.fixture(scope="module")
def catalogue(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project's catalogue with one image emptied (0 bytes) and one truncated mid-file."""
    folder = tmp_path_factory.mktemp("ray-catalogue") / "catalogue"
    shutil.copytree(tiny_project.parent / "catalogue", folder)
    images = sorted((folder / "images").iterdir())
    images[3].write_bytes(b"")
    images[10].write_bytes(images[10].read_bytes()[:400])
    return folder


def reference(model: dict, paths: list[str]) -> np.ndarray:
    """The single-process path: lookalike.model.runtime.predict_paths with the same exported model."""
    return predict_paths(model["runtime"], paths, model["spec"], 16)


def test_vectors_equal_the_single_process_path_and_bad_images_are_counted(cluster, tiny_project: Path, model: dict,
                                                                         catalogue: Path, tmp_path: Path,
                                                                         capsys) -> None:
    out = tmp_path / "shards"
    status = main(["embed-ray", str(catalogue), "--out", str(out), "--artifacts", str(tiny_project / "artifacts"),
                   "--address", cluster.address, "--workers", "2", "--shard-rows", "16", "--batch-size", "8"])
    assert status == 0, capsys.readouterr().err
    report = read_report(out)
    table, catalogue_report = catalogue_table(catalogue, catalogue_description(load_params(root=tiny_project),
                                                                               tiny_project))
    truncated = sorted((catalogue / "images").iterdir())[10].name
    assert catalogue_report["empty_images"] == [sorted((catalogue / "images").iterdir())[3].name]
    assert report["catalogue"]["n_empty_images"] == 1  # set aside by lookalike.catalogue.reading, before the job
    assert report["n_bad_images"] == 1 and Path(report["bad_images"][0]["image_path"]).name == truncated
    assert "damaged or truncated" in report["bad_images"][0]["reason"]
    assert report["rows"] == len(table) == 59 and report["embedded_rows"] == 58
    assert report["workers"] == 2 and report["ray_nodes"] == 2
    assert len(report["shards"]) == 4 and sum(s["rows"] for s in report["shards"]) == 58
    rows, vectors = read_embeddings(out)
    good = table[table["image_path"].map(lambda p: Path(p).name) != truncated].reset_index(drop=True)
    # joinable by id, in id order, with the catalogue's metadata columns (text, as the catalogue reader gives them)
    # and paths
    assert rows["id"].tolist() == good["id"].tolist() == sorted(good["id"])
    pd.testing.assert_frame_equal(rows, good, check_dtype=False)
    expected = reference(model, good["image_path"].tolist())
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    assert np.abs(vectors - expected).max() <= TOLERANCE
    assert len(list(out.glob("*.parquet"))) == 4 and not list(out.glob(".*tmp*"))


def _job(cluster, source: Path, out: Path, model: dict, tiny_project: Path, env: dict) -> subprocess.CompletedProcess:
    """The CLI as its own driver process on the cluster."""
    command = [sys.executable, "-m", "lookalike.cli", "embed-ray", str(source), "--out", str(out), "--artifacts",
               str(tiny_project / "artifacts"), "--address", cluster.address, "--workers", "2", "--shard-rows", "8",
               "--batch-size", "4"]
    return subprocess.run(command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=180)


def test_a_killed_driver_resumes_and_reuses_its_finished_shards(cluster, tiny_project: Path, model: dict,
                                                                 tmp_path: Path) -> None:
    images = sorted(str(p) for p in (tiny_project.parent / "catalogue" / "images").iterdir())
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(images) + "\n")
    out = tmp_path / "shards"
    killed = _job(cluster, listing, out, model, tiny_project, {DRIVER_FAILPOINT_ENV: "kill-driver-after-shards:2"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.parquet")}
    assert len(first) == 2 and not (out / REPORT_NAME).exists()  # 2 of 8 shards, and the job never finished
    report = embed_table(files_table(images), out, model["path"], model["spec"], model_sha256=model["sha"],
                         workers=2, batch_size=4, shard_rows=8).to_dict()  # the same job again, in this process
    assert report["reused_shards"] == 2 and report["written_shards"] == 6 and len(report["shards"]) == 8
    assert {s["file"] for s in report["shards"] if s["reused"]} == set(first)
    assert report == read_report(out)
    for name, identity in first.items():  # the same files, untouched: not rewritten
        assert ((out / name).stat().st_ino, (out / name).stat().st_mtime_ns) == identity
    rows, vectors = read_embeddings(out)
    assert rows["id"].tolist() == files_table(images)["id"].tolist()  # every row once, none twice
    assert rows["id"].is_unique and len(rows) == len(images) == 60
    assert np.abs(vectors - reference(model, rows["image_path"].tolist())).max() <= TOLERANCE


def test_a_worker_killed_mid_job_is_retried_without_duplicate_or_missing_rows(cluster, tiny_project: Path,
                                                                              model: dict, tmp_path: Path) -> None:
    images = sorted(str(p) for p in (tiny_project.parent / "catalogue" / "images").iterdir())
    table = files_table(images)
    marker = tmp_path / "worker-died"
    _connect(cluster, {WORKER_FAILPOINT_ENV: f"kill-worker-once:37:{marker}"})
    try:
        report = embed_table(table, tmp_path / "shards", model["path"], model["spec"], model_sha256=model["sha"],
                             workers=2, batch_size=4, shard_rows=16)
    finally:
        _connect(cluster)
    assert marker.is_file()  # an actor holding row 37 was SIGKILLed mid-job, and the job still completed
    assert report.written_shards == 4 and report.embedded_rows == 60 and not report.bad_images
    rows, vectors = read_embeddings(tmp_path / "shards")
    assert rows["id"].tolist() == table["id"].tolist() and rows["id"].is_unique
    assert np.abs(vectors - reference(model, table["image_path"].tolist())).max() <= TOLERANCE


def test_a_changed_row_rewrites_only_its_shard_and_stale_shards_go(tiny_project: Path, model: dict,
                                                                   tmp_path: Path, cluster) -> None:
    images = sorted(str(p) for p in (tiny_project.parent / "catalogue" / "images").iterdir())[:24]
    table = files_table(images)
    out = tmp_path / "shards"
    options = {"model_sha256": model["sha"], "workers": 2, "batch_size": 8, "shard_rows": 8}
    embed_table(table, out, model["path"], model["spec"], **options)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    changed = table.copy()
    changed.loc[20, "image_path"] = images[0]  # the last shard now holds another photo
    report = embed_table(changed, out, model["path"], model["spec"], **options)
    assert report.reused_shards == 2 and report.written_shards == 1
    assert len(report.removed_stale_shards) == 1 and report.removed_stale_shards[0] in before
    assert len(list(out.glob("*.parquet"))) == 3
    meta = read_shard_metadata(out / report.shards[2]["file"])
    assert meta["model_sha256"] == model["sha"] and meta["start"] == 16 and meta["stop"] == 24
    rows, vectors = read_embeddings(out)
    assert np.abs(vectors[20] - vectors[0]).max() <= TOLERANCE  # row 20 is the first photo now
    assert json.loads((out / REPORT_NAME).read_text())["rows"] == 24


def test_the_dvc_embed_stage_runs_through_ray_with_the_engine_param(tiny_project: Path, model: dict,
                                                                     tmp_path: Path) -> None:
    """embed.engine: ray: dvc repro reruns embed on a local Ray of its own (one worker); the vectors are the
    exported model's over the photos, which the default engine's head-on-cached-features matches to 1e-4."""
    import yaml

    from tests.conftest import run, tiny_project_copy

    project = tiny_project_copy(tiny_project, tmp_path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["embed"] = {"engine": "ray", "workers": 1, "address": ""}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    local = np.load(project / "artifacts/embeddings.npy")
    output = run(["dvc", "repro", "--single-item", "embed"], project)
    assert "Running stage 'embed'" in output and "images embedded in" in output, output[-2000:]
    embeddings = np.load(project / "artifacts/embeddings.npy")
    paths = [str(project / p) for p in np.load(project / "artifacts/image_paths.npy")]
    assert np.abs(embeddings - reference(model, paths)).max() <= TOLERANCE
    assert np.abs(embeddings - local).max() <= 1e-4
    report = read_report(project / "data/embed_shards")
    assert report["embedded_rows"] == len(paths) and report["workers"] == 1 and report["ray_nodes"] == 1
