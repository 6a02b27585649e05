"""Shared pytest fixtures for the lookalike tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3  # noqa: F401  before any test module imports TensorFlow, whose bundled SQLite has no FTS5 (word search)
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------
# Unit-test fixtures: the shared read-only sample catalogue
# --------------------------------------------------------------------------------------

SHARED_DATA = (REPO_ROOT / "../shared/data/fashion-5k").resolve()


@pytest.fixture(scope="session")
def shared_catalogue_dir() -> Path:
    """The read-only fashion-5k sample beside the repository; a clear failure (not a skip) if absent."""
    if not (SHARED_DATA / "styles.csv").is_file() or not (SHARED_DATA / "images").is_dir():
        pytest.fail(
            f"shared sample catalogue not found at {SHARED_DATA} (expected styles.csv and images/): "
            "these tests need ../shared/data/fashion-5k next to the repository",
            pytrace=False,
        )
    return SHARED_DATA


# --------------------------------------------------------------------------------------
# Pipeline fixture: the six DVC stages on a 60-image slice, in a scratch project
# --------------------------------------------------------------------------------------

REPO = REPO_ROOT
SHARED = SHARED_DATA
STAGES = ("sample_subset", "features", "train", "embed", "text", "index", "evaluate")
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


def run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def ran_stages(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


def _other_runs_results() -> list[str]:
    """The committed results of other runs that dvc.yaml's top-level metrics and plots list (no stage writes them)."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    entries = [*spec.get("metrics", []), *spec.get("plots", [])]
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def project_skeleton(project: Path) -> None:
    """A scratch project's code and DVC files: the package, stages, catalogue descriptions, dvc.yaml, the other
    runs' committed results it lists (`dvc metrics diff` fails if one is missing) and an empty live delta."""
    for name in ("lookalike", "stages", "catalogues"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    for name in _other_runs_results():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, project / name)
    (project / "data/live_delta").mkdir(parents=True)  # the sample_subset stage's live delta: none yet
    shutil.copy(REPO / "data/live_delta/README.md", project / "data/live_delta/README.md")


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of the project with small params, after one `dvc repro`."""
    if not SHARED.is_dir():
        pytest.fail(f"the shared sample is missing: {SHARED}")
    root = tmp_path_factory.mktemp("project")
    project_skeleton(root)
    catalogue = root.parent / "catalogue"
    _make_slice(catalogue)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["catalogue_dir"] = str(catalogue)
    params["subset"].update(size=60, min_per_class=5, test_fraction=0.2, val_fraction=0.15)
    params["backbone"]["image_size"] = 96
    params["features"].update(batch_size=16, augmented_views=1)
    params["train"].update(steps=60, eval_every=20, classes_per_batch=4, images_per_class=4,
                           finetune_blocks=0)  # the head alone; fine-tuning has its own test
    params["mlflow"]["tracking_uri"] = "sqlite:///mlflow.db"  # relative: a copy of the project logs to its own
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    output = run(["dvc", "repro"], root)
    assert ran_stages(output) == set(STAGES), output[-3000:]
    # no test reads the MLflow run, and its experiment records an absolute artifact folder: a copy that
    # reran evaluate would log into this project's mlruns/. Without them a copy starts its own.
    (root / "mlflow.db").unlink()
    shutil.rmtree(root / "mlruns")
    return root


def tiny_project_copy(tiny_project: Path, folder: Path) -> Path:
    """A private copy of the tiny project (git, DVC cache and all) for a test that changes or reruns it."""
    project = folder / "project"
    shutil.copytree(tiny_project, project, symlinks=True)
    return project


def _project_digest(root: Path) -> dict[str, str]:
    """sha256 of every file, bar bytecode and DVC's scratch folder (reading the project may write those)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.relative_to(root).parts[:2] != (".dvc", "tmp")}


@pytest.fixture(autouse=True)
def _tiny_project_left_as_found(request: pytest.FixtureRequest):
    """Every test that uses the session-wide tiny_project must leave it byte for byte as it found it
    (a change would make later tests run on another project depending on test order); a test that
    needs to change it works on :func:`tiny_project_copy`."""
    if "tiny_project" not in request.fixturenames:
        yield
        return
    root = request.getfixturevalue("tiny_project")
    before = _project_digest(root)
    yield
    after = _project_digest(root)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"{request.node.nodeid} changed the shared tiny_project: {', '.join(changed[:10])}"


# --------------------------------------------------------------------------------------
# A real local Ray cluster for the Ray Data and Ray Serve tests
# --------------------------------------------------------------------------------------

RAY_OBJECT_STORE = 200 * 1024 * 1024  # bytes a node: the cluster fits beside the tests on a 2-core machine


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and one more node (``ray.cluster_utils.Cluster``), 1 CPU and a 200 MB object store each, shut
    down after the module; no driver is connected (a test joins with ``ray.init(address=...)`` as it needs)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": RAY_OBJECT_STORE,
                                                             "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=RAY_OBJECT_STORE)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
