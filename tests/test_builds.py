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
