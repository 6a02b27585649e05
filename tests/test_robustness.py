"""Nothing breaks, nothing is lost: bad inputs, mismatched artifacts, killed stages, concurrent calls.

Runs against the scratch pipeline project of conftest.py (60 images), never the
repository's own artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
from bad_inputs import bad_input_corpus
from conftest import STAGES, ran_stages, run

from lookalike.artifacts import BUILDS_DIR, FAILPOINT_ENV, POINTER_NAME, ArtifactMismatchError
from lookalike.model.preprocessing import InvalidImageError
from lookalike.search.engine import Searcher

MAX_BYTES = 2_000_000
CORPUS = bad_input_corpus(MAX_BYTES)


def _tree_digest(folder: Path, skip_temporary: bool = False) -> dict[str, str]:
    """sha256 per file; optionally without the ".<name>.*.tmp*" copies a killed writer leaves behind."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not (skip_temporary and ".tmp" in p.name)}


@pytest.fixture(scope="module")
def searcher(tiny_project: Path) -> Searcher:
    return Searcher.load(tiny_project / "artifacts", root=tiny_project, max_bytes=MAX_BYTES)


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_corpus_answers_or_raises_one_readable_error(searcher: Searcher, tiny_project: Path,
                                                               tmp_path: Path, case: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    data, answers = CORPUS[case]
    before = _tree_digest(tiny_project / "artifacts")
    cwd_before = sorted(os.listdir(tmp_path))
    with monkeypatch.context() as patch:  # the working directory is restored, whatever happens
        patch.chdir(tmp_path)
        if answers:
            response = searcher.search(data, k=3)
            assert len(response.matches) == 3
        else:
            with pytest.raises(InvalidImageError) as caught:
                searcher.search(data, k=3)
            message = str(caught.value)
            assert 10 < len(message) < 300 and "Traceback" not in message
        good = searcher.search(searcher.resolve_path(0), k=3)  # the next query is served as usual
        assert good.matches[0].id == int(searcher.items["id"].iat[0])
    assert _tree_digest(tiny_project / "artifacts") == before
    assert sorted(os.listdir(tmp_path)) == cwd_before


def _copy_artifacts(tiny_project: Path, tmp_path: Path) -> Path:
    """The artifacts without the published builds and their pointer: the folder's own files are what is served."""
    target = tmp_path / "artifacts"
    shutil.copytree(tiny_project / "artifacts", target, ignore=shutil.ignore_patterns(BUILDS_DIR, POINTER_NAME))
    return target


@pytest.mark.parametrize("name", ["model.keras", "embeddings.npy", "image_paths.npy", "items.csv", "faiss.index"])
def test_searcher_refuses_a_changed_artifact_and_names_it(tiny_project: Path, tmp_path: Path, name: str) -> None:
    artifacts = _copy_artifacts(tiny_project, tmp_path)
    with (artifacts / name).open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(ArtifactMismatchError, match=name.replace(".", r"\.")):
        Searcher.load(artifacts, root=tiny_project)


def test_searcher_refuses_artifacts_that_disagree_even_with_a_consistent_manifest(tiny_project: Path,
                                                                                  tmp_path: Path) -> None:
    from lookalike.artifacts import build_id, sha256_file

    artifacts = _copy_artifacts(tiny_project, tmp_path)
    np.save(artifacts / "embeddings.npy", np.load(artifacts / "embeddings.npy")[:-1])  # one row short
    manifest = json.loads((artifacts / "manifest.json").read_text())
    manifest["files"]["embeddings"]["sha256"] = sha256_file(artifacts / "embeddings.npy")
    manifest["build_id"] = build_id(manifest)
    (artifacts / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactMismatchError, match="embeddings rows is 59 but the manifest says 60"):
        Searcher.load(artifacts, root=tiny_project)


def _stage_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize(("stage", "output"), [("train", "model.keras"), ("index", "faiss.index"),
                                               ("embed", "embeddings.npy")])
def test_a_stage_killed_before_its_rename_leaves_the_previous_artifacts_whole(
    tiny_project: Path, tmp_path: Path, stage: str, output: str
) -> None:
    project = tmp_path / "copy"
    shutil.copytree(tiny_project, project, symlinks=True)
    before = _tree_digest(project / "artifacts")
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=project, capture_output=True,
                            env={**_stage_env(), FAILPOINT_ENV: f"kill-before-rename:{output}"}, timeout=600)
    assert result.returncode == -signal.SIGKILL
    assert _tree_digest(project / "artifacts", skip_temporary=True) == before
    Searcher.load(project / "artifacts", root=project)  # still loadable
    assert "didn't change" in run(["dvc", "status"], project) or "up to date" in run(["dvc", "status"], project)
    run([sys.executable, "-m", f"stages.{stage}"], project)  # the next run completes and clears the leftovers
    assert not [p for p in (project / "artifacts").iterdir() if ".tmp" in p.name]


def test_a_stage_killed_mid_run_leaves_the_previous_artifacts_whole(tiny_project: Path, tmp_path: Path) -> None:
    project = tmp_path / "copy"
    shutil.copytree(tiny_project, project, symlinks=True)
    before = _tree_digest(project / "artifacts")
    process = subprocess.Popen([sys.executable, "-m", "stages.features"], cwd=project, env=_stage_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # kill once it is computing, whatever the machine's speed
        if "backbone features" in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert _tree_digest(project / "artifacts", skip_temporary=True) == before
    Searcher.load(project / "artifacts", root=project)


def test_concurrent_searches_give_exactly_the_sequential_results(searcher: Searcher) -> None:
    paths = [searcher.resolve_path(row) for row in range(len(searcher.items))]
    queries = [paths[i % len(paths)] for i in range(100)]

    def answer(path: Path) -> list[tuple[int, float]]:
        return [(m.id, round(m.score, 5)) for m in searcher.search(path, k=5).matches]

    expected = [answer(path) for path in queries]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def worker(thread: int) -> None:
        try:
            results[thread] = [answer(path) for path in queries]
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(results[t] == expected for t in range(8))


def test_resident_memory_stays_flat_over_1000_queries(searcher: Searcher) -> None:
    data = [searcher.resolve_path(row).read_bytes() for row in range(len(searcher.items))]
    for payload in data[:50]:  # warm-up: traces, allocator pools
        searcher.search(payload, k=5)
    process = psutil.Process()
    start = process.memory_info().rss
    for i in range(1000):
        searcher.search(data[i % len(data)], k=5)
    growth_mb = (process.memory_info().rss - start) / 2**20
    assert growth_mb < 40, f"resident memory grew by {growth_mb:.1f} MB over 1000 queries"


def test_two_forced_runs_give_identical_metrics(tiny_project: Path, tmp_path: Path) -> None:
    project = tmp_path / "copy"
    shutil.copytree(tiny_project, project, symlinks=True)
    first = json.loads((project / "metrics/metrics.json").read_text())
    assert ran_stages(run(["dvc", "repro", "--force"], project)) == set(STAGES)
    assert json.loads((project / "metrics/metrics.json").read_text()) == first
