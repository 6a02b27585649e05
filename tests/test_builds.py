"""A build is replaced whole or not at all: publication, the current.json pointer, and how readers resolve it.

The unit tests use small stand-in files; the last tests kill `dvc repro` of the scratch
project (conftest.py) at every stage boundary and inside every stage, and load and query.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run

from lookalike.artifacts import (
    BUILDS_DIR,
    FAILPOINT_ENV,
    MANIFEST_FILES,
    POINTER_NAME,
    ArtifactMismatchError,
    atomic_path,
    load_build,
    make_manifest,
    publish_build,
    read_pointer,
    resolve_build,
    write_bytes,
    write_json,
)

# ---------------------------------------------------------------- stand-in builds


def write_build(folder: Path, version: str) -> dict:
    """A complete artifacts folder whose five files all say ``version``; returns its manifest."""
    files = {}
    for name in MANIFEST_FILES:
        files[name] = folder / f"{name}.bin"
        write_bytes(files[name], f"{name} of {version}".encode())
    manifest = make_manifest(files, {"count": 3}, {"version": version})
    write_json(folder / "manifest.json", manifest)
    return manifest


def served(folder: Path) -> str:
    """Which version the folder serves, after checking that every file of it is that version."""
    build, manifest = resolve_build(folder)
    version = manifest["params"]["version"]
    for name, entry in manifest["files"].items():
        assert (build / entry["path"]).read_bytes() == f"{name} of {version}".encode()
    return version


def builds(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / BUILDS_DIR).iterdir())


def test_publish_copies_the_build_and_points_at_it(tmp_path: Path) -> None:
    manifest = write_build(tmp_path, "v1")
    assert publish_build(tmp_path) == manifest["build_id"]
    assert read_pointer(tmp_path) == manifest["build_id"]
    assert builds(tmp_path) == [manifest["build_id"]]
    published = tmp_path / BUILDS_DIR / manifest["build_id"]
    assert sorted(p.name for p in published.iterdir()) == sorted([f"{n}.bin" for n in MANIFEST_FILES]
                                                                  + ["manifest.json"])
    folder, verified = resolve_build(tmp_path)
    assert folder == published and verified == manifest
    assert publish_build(tmp_path) == manifest["build_id"]  # again: nothing changes
    assert builds(tmp_path) == [manifest["build_id"]]


def test_the_same_files_under_another_manifest_are_published_again(tmp_path: Path) -> None:
    """A recalibrated near-duplicate threshold or new similarity modes change the manifest, not the files."""
    manifest = write_build(tmp_path, "v1")
    publish_build(tmp_path)
    manifest["near_duplicates"] = {"cosine": 0.99}
    write_json(tmp_path / "manifest.json", manifest)
    assert publish_build(tmp_path) == manifest["build_id"]  # the same build, by its files
    folder, verified = resolve_build(tmp_path)
    assert folder == tmp_path / BUILDS_DIR / manifest["build_id"] and verified["near_duplicates"] == {"cosine": 0.99}


def test_without_a_pointer_the_folder_is_read_as_it_is(tmp_path: Path) -> None:
    write_build(tmp_path, "v1")
    assert resolve_build(tmp_path)[0] == tmp_path and served(tmp_path) == "v1"
    (tmp_path / "items.bin").write_bytes(b"changed")
    with pytest.raises(ArtifactMismatchError, match="items file"):
        resolve_build(tmp_path)


def test_a_folder_in_the_middle_of_a_run_serves_the_published_build(tmp_path: Path) -> None:
    write_build(tmp_path, "v1")
    publish_build(tmp_path)
    (tmp_path / "embeddings.bin").write_bytes(b"embeddings of v2")  # a rerun got this far
    assert served(tmp_path) == "v1"
    for name in ("index.bin", "manifest.json"):  # as DVC leaves a stage it is about to rerun
        (tmp_path / name).unlink()
    assert served(tmp_path) == "v1"


def test_a_newer_complete_folder_is_served_before_it_is_published(tmp_path: Path) -> None:
    """Killed after the manifest, before publishing; or checked out / restored by DVC without the index stage."""
    write_build(tmp_path, "v1")
    publish_build(tmp_path)
    write_build(tmp_path, "v2")
    assert served(tmp_path) == "v2"
    (tmp_path / "model.bin").write_bytes(b"model of v3")  # and once a new run changes it, the published one
    assert served(tmp_path) == "v1"


def test_a_damaged_published_build_falls_back_to_the_same_build_in_the_folder(tmp_path: Path) -> None:
    manifest = write_build(tmp_path, "v1")
    publish_build(tmp_path)
    published = tmp_path / BUILDS_DIR / manifest["build_id"]
    (published / "index.bin").write_bytes(b"garbage")  # a copy: the folder's own file stays intact
    assert resolve_build(tmp_path)[0] == tmp_path and served(tmp_path) == "v1"
    (tmp_path / "index.bin").unlink()
    with pytest.raises(ArtifactMismatchError, match=f"{BUILDS_DIR}/{manifest['build_id']}/index.bin"):
        resolve_build(tmp_path)


def test_publishing_again_repairs_a_damaged_build(tmp_path: Path) -> None:
    manifest = write_build(tmp_path, "v1")
    publish_build(tmp_path)
    published = tmp_path / BUILDS_DIR / manifest["build_id"]
    (published / "items.bin").unlink()
    publish_build(tmp_path)
    assert resolve_build(tmp_path)[0] == published and served(tmp_path) == "v1"


def test_old_builds_are_removed_after_the_pointer_moves_keeping_the_previous_one(tmp_path: Path) -> None:
    ids = []
    for version in ("v1", "v2", "v3", "v2"):
        ids.append(write_build(tmp_path, version)["build_id"])
        publish_build(tmp_path)
        assert read_pointer(tmp_path) == ids[-1] and served(tmp_path) == version
    assert ids[1] == ids[3]  # the same files are the same build
    assert builds(tmp_path) == sorted([ids[2], ids[3]])  # v2 current, v3 the one before; v1 gone


def test_load_build_loads_again_when_the_folder_changed_while_loading(tmp_path: Path) -> None:
    write_build(tmp_path, "v1")
    publish_build(tmp_path)
    write_build(tmp_path, "v2")  # complete and unpublished: resolves to the folder itself
    calls = []

    def loader(folder: Path, manifest: dict) -> str:
        calls.append(folder)
        if len(calls) == 1:  # a new run renames a file in while this one loads
            write_bytes(tmp_path / "embeddings.bin", b"embeddings of v3")
        return manifest["params"]["version"]

    assert load_build(tmp_path, loader) == "v1"
    assert calls == [tmp_path, tmp_path / BUILDS_DIR / read_pointer(tmp_path)]


def test_atomic_path_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    target = tmp_path / "model.keras"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"model")
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[0][1] == str(tmp) and events[1][1] == str(target) and events[2][1] == str(tmp_path)


_PUBLISH = "import sys; from lookalike.artifacts import publish_build; publish_build(sys.argv[1])"


@pytest.mark.parametrize("point", ["kill-after-publish-copy:model.bin", "kill-after-publish-copy:index.bin",
                                   "kill-before-publish-rename", f"kill-before-rename:{POINTER_NAME}",
                                   f"kill-after-rename:{POINTER_NAME}"])
def test_a_publication_killed_anywhere_serves_one_whole_build_and_the_next_one_completes(
    tmp_path: Path, point: str
) -> None:
    for version in ("v0", "v1"):  # v0 is published twice over by the end: the pruning runs too
        write_build(tmp_path, version)
        publish_build(tmp_path)
    write_build(tmp_path, "v2")
    result = subprocess.run([sys.executable, "-c", _PUBLISH, str(tmp_path)], capture_output=True,
                            env={**os.environ, FAILPOINT_ENV: point}, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert served(tmp_path) == "v2"  # the folder is complete: served before publication finishes
    (tmp_path / "items.bin").write_bytes(b"items of v3")  # a next run starts rewriting the folder
    assert served(tmp_path) == ("v2" if point.endswith(f"rename:{POINTER_NAME}") and "after" in point else "v1")
    write_build(tmp_path, "v2")
    publish_build(tmp_path)
    assert served(tmp_path) == "v2" and resolve_build(tmp_path)[0] != tmp_path
    assert not [p for p in (tmp_path / BUILDS_DIR).iterdir() if p.name.startswith(".")]
    assert len(builds(tmp_path)) == 2


def test_copies_of_an_artifacts_folder_keep_working(tmp_path: Path) -> None:
    """The pointer names a folder inside the artifacts folder: a copy of it serves on its own."""
    write_build(tmp_path / "a", "v1")
    publish_build(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    assert served(tmp_path / "b") == "v1"
    assert json.loads((tmp_path / "b" / POINTER_NAME).read_text()) == {"build": read_pointer(tmp_path / "b")}


def test_a_pointer_without_its_build_is_ignored(tmp_path: Path) -> None:
    write_build(tmp_path, "v1")
    publish_build(tmp_path)
    shutil.rmtree(tmp_path / BUILDS_DIR)
    assert resolve_build(tmp_path)[0] == tmp_path and served(tmp_path) == "v1"
    (tmp_path / "items.bin").write_bytes(b"changed")
    with pytest.raises(ArtifactMismatchError, match="items file") as caught:
        resolve_build(tmp_path)
    assert caught.value.kind == "mismatched"


# ---------------------------------------------------------------- dvc repro killed everywhere, then load and query


def _repro(project: Path, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    return subprocess.run(["dvc", "repro", *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=900)


def _was_killed(result: subprocess.CompletedProcess) -> bool:
    """DVC reports its stage command killed by the failpoint's SIGKILL, not some other failure: as -9 when it
    ran the command itself, as 137 (128 + 9) when a shell ran it and reported the signal."""
    codes = (-signal.SIGKILL, 128 + signal.SIGKILL)
    output = result.stdout + result.stderr
    return result.returncode != 0 and any(f"exited with {code}" in output for code in codes)


def _top_build(project: Path) -> str | None:
    try:
        return json.loads((project / "artifacts" / "manifest.json").read_text())["build_id"]
    except (OSError, ValueError, KeyError):
        return None


def _serve(project: Path, old: dict) -> str:
    """Load and query the project as the API does; the build must be one whole build. Returns its id."""
    import numpy as np

    from lookalike.search.engine import Searcher

    searcher = Searcher.load(project / "artifacts", root=project)
    served_id = searcher.manifest["build_id"]
    if served_id == old["build_id"]:
        assert searcher.manifest["files"] == old["files"]
        np.testing.assert_array_equal(searcher.embeddings, old["embeddings"])
    response = searcher.search(searcher.resolve_path(0), k=3)
    assert len(response.matches) == 3 and response.matches[0].id == int(searcher.items["id"].iat[0])
    return served_id


def _set_params(project: Path, **changes: int) -> None:
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_killed_at_every_stage_and_boundary_serves_the_old_build_or_the_new_one_whole(
    tiny_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import yaml

    project = tmp_path / "copy"
    shutil.copytree(tiny_project, project, symlinks=True)
    old_params = yaml.safe_load((project / "params.yaml").read_text())
    old_id = read_pointer(project / "artifacts")
    assert old_id and old_id == _top_build(project), "the fixture's run published its build"
    old = {**resolve_build(project / "artifacts")[1],
           "embeddings": np.load(project / "artifacts" / "embeddings.npy")}
    assert _serve(project, old) == old_id
    # features and everything after it rerun: features' batch size does not change its numbers, the seed does
    _set_params(project, features__batch_size=old_params["features"]["batch_size"] + 1,
                train__seed=old_params["train"]["seed"] + 1)
    killed_in = [  # each repro resumes where the previous one died and dies a little further on
        ("features", "kill-before-rename:features.npy"),
        ("train", "kill-before-rename:model.keras"),
        ("embed", "kill-after-rename:embeddings.npy"),  # between two renames of one stage
    ]
    for stage, point in killed_in:
        result = _repro(project, failpoint=point)
        assert f"Running stage '{stage}'" in result.stdout and _was_killed(result), result.stdout[-2000:]
        assert _serve(project, old) == old_id, point
    result = _repro(project, "embed")  # between stages: embed finished, index not started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert _serve(project, old) == old_id
    _page_serves(project, monkeypatch, old_id)
    for point in ("kill-before-rename:faiss.index", "kill-before-rename:manifest.json"):  # inside index
        result = _repro(project, failpoint=point)
        assert "Running stage 'index'" in result.stdout and _was_killed(result), result.stdout[-2000:]
        assert _top_build(project) is None  # DVC removed the old manifest before rerunning the stage
        assert _serve(project, old) == old_id, point
    for point in ("kill-after-publish-copy:embeddings.npy", f"kill-before-rename:{POINTER_NAME}"):  # publishing
        result = _repro(project, failpoint=point)
        assert _was_killed(result), result.stdout[-2000:]
        new_id = _top_build(project)
        assert new_id not in (None, old_id) and read_pointer(project / "artifacts") == old_id
        assert _serve(project, old) == new_id, point  # complete and checked: the new build, not yet published
        (project / "artifacts" / "items.csv").unlink()  # as when a next run starts: back to the published one
        assert _serve(project, old) == old_id, point
    result = _repro(project)  # a normal run completes and publishes the new build
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    new_id = read_pointer(project / "artifacts")
    assert new_id == _top_build(project) and new_id != old_id
    assert _serve(project, old) == new_id
    assert resolve_build(project / "artifacts")[0] == project / "artifacts" / BUILDS_DIR / new_id
    assert builds(project / "artifacts") == sorted([old_id, new_id])
    assert "up to date" in run(["dvc", "status"], project)  # builds/ and current.json are not DVC's business
    # back to the old params: DVC may restore the old outputs from its run cache without running the index
    # stage, so nothing publishes them; the folder then holds a complete build the pointer does not name
    _set_params(project, features__batch_size=old_params["features"]["batch_size"],
                train__seed=old_params["train"]["seed"])
    result = _repro(project)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    if "Stage 'index' is cached - skipping run" in result.stdout:
        assert _top_build(project) == old_id
    assert _serve(project, old) == _top_build(project)
    assert "Running stage 'evaluate'" in result.stdout  # its outputs are uncached: it runs, and publishes
    assert read_pointer(project / "artifacts") == _top_build(project)


def _page_serves(project: Path, monkeypatch: pytest.MonkeyPatch, build: str) -> None:
    """The shopper page on the project's artifacts: no stop page, and its sidebar facts from the served build."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LOOKALIKE_ARTIFACTS", str(project / "artifacts"))
    app = Path(__file__).resolve().parents[1] / "app" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    manifest = json.loads((project / "artifacts" / BUILDS_DIR / build / "manifest.json").read_text())
    sidebar = " ".join(str(m.value) for m in at.sidebar.markdown) + " ".join(str(c.value) for c in at.sidebar.caption)
    assert manifest["files"]["model"]["sha256"][:12] in sidebar, sidebar
