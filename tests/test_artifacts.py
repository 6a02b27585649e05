"""lookalike.artifacts: atomic writes and the manifest check."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lookalike.artifacts import (
    MANIFEST_FILES,
    ArtifactMismatchError,
    atomic_path,
    build_id,
    make_manifest,
    sha256_file,
    verify_manifest,
    write_bytes,
    write_json,
    write_npy,
    write_with,
)


class WriterFailed(RuntimeError):
    pass


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- atomic writes


def test_atomic_path_keeps_the_old_file_when_the_writer_raises_midway(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old model")
    with pytest.raises(WriterFailed), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp != target
        tmp.write_bytes(b"half a new mod")
        raise WriterFailed("killed midway")
    assert target.read_bytes() == b"old model"
    assert leftovers(tmp_path) == ["model.keras"]


def test_atomic_path_replaces_the_file_on_success_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "items.csv"  # the parent folder is created
    with atomic_path(target) as tmp:
        tmp.write_text("id\n1\n")
    assert target.read_text() == "id\n1\n"
    assert leftovers(target.parent) == ["items.csv"]


def test_atomic_write_has_ordinary_file_permissions(tmp_path):
    write_bytes(tmp_path / "a.bin", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_json_keeps_the_old_file_when_serialising_fails(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"map_at_r": 0.5})
    with pytest.raises(TypeError):
        write_json(target, {"ok": 1, "bad": object()})
    assert json.loads(target.read_text()) == {"map_at_r": 0.5}
    assert leftovers(tmp_path) == ["metrics.json"]


def test_write_json_converts_numpy_scalars(tmp_path):
    target = tmp_path / "counts.json"
    write_json(target, {"items": np.int64(5000), "score": np.float32(0.25)})
    assert json.loads(target.read_text()) == {"items": 5000, "score": 0.25}


def test_write_npy_keeps_the_old_file_when_saving_fails_midway(tmp_path):
    target = tmp_path / "embeddings.npy"
    write_npy(target, np.arange(6, dtype=np.float32))
    with pytest.raises(ValueError, match="allow_pickle"):
        write_npy(target, np.array([{"not": "numeric"}], dtype=object))  # pickling is refused
    np.testing.assert_array_equal(np.load(target), np.arange(6, dtype=np.float32))
    assert leftovers(tmp_path) == ["embeddings.npy"]


def test_write_npy_round_trips(tmp_path):
    array = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    write_npy(tmp_path / "e.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), array)


def test_write_with_keeps_the_old_file_when_the_library_writer_raises(tmp_path):
    target = tmp_path / "index.faiss"
    target.write_bytes(b"old index")

    def writer(path):
        path.write_bytes(b"partial")
        raise WriterFailed("disk full")

    with pytest.raises(WriterFailed):
        write_with(target, writer)
    assert target.read_bytes() == b"old index"
    assert leftovers(tmp_path) == ["index.faiss"]


# ---------------------------------------------------------------- manifest


@pytest.fixture
def artifact_dir(tmp_path):
    files = {}
    for name in MANIFEST_FILES:
        path = tmp_path / f"{name}.bin"
        path.write_bytes(f"contents of {name}".encode())
        files[name] = path
    write_json(tmp_path / "manifest.json", make_manifest(files, {"items": 3}, {"index": {"type": "flat"}}))
    return tmp_path


def test_verify_manifest_accepts_matching_files(artifact_dir):
    manifest = verify_manifest(artifact_dir)
    assert manifest["items"] == 3
    assert manifest["files"]["model"] == {"path": "model.bin", "sha256": sha256_file(artifact_dir / "model.bin")}


def test_verify_manifest_names_a_missing_file(artifact_dir):
    (artifact_dir / "embeddings.bin").unlink()
    with pytest.raises(ArtifactMismatchError, match="embeddings file .*embeddings.bin is missing"):
        verify_manifest(artifact_dir)


def test_verify_manifest_names_a_modified_file(artifact_dir):
    (artifact_dir / "index.bin").write_bytes(b"contents of index, rebuilt by hand")
    with pytest.raises(ArtifactMismatchError, match="index file .*index.bin does not match the manifest"):
        verify_manifest(artifact_dir)


def test_verify_manifest_without_manifest_raises(tmp_path):
    with pytest.raises(ArtifactMismatchError, match="no manifest at .*manifest.json"):
        verify_manifest(tmp_path)


def test_verify_manifest_with_invalid_json_raises(artifact_dir):
    (artifact_dir / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactMismatchError, match="not valid JSON"):
        verify_manifest(artifact_dir)


def test_verify_manifest_missing_entry_raises_naming_it(artifact_dir):
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    del manifest["files"]["items"]
    (artifact_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactMismatchError, match="'items'"):
        verify_manifest(artifact_dir)


def test_build_id_names_the_files_not_the_time_or_order(artifact_dir):
    manifest = verify_manifest(artifact_dir)
    assert manifest["build_id"] == build_id(manifest) and len(manifest["build_id"]) == 16
    reordered = {**manifest, "created_at": "2001-01-01T00:00:00+00:00",
                 "files": dict(reversed(list(manifest["files"].items())))}
    assert build_id(reordered) == manifest["build_id"]
    changed = json.loads(json.dumps(manifest))
    changed["files"]["index"]["sha256"] = "0" * 64
    assert build_id(changed) != manifest["build_id"]


def test_verify_manifest_names_the_build_of_an_older_manifest_and_refuses_a_wrong_one(artifact_dir):
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    expected = manifest.pop("build_id")
    (artifact_dir / "manifest.json").write_text(json.dumps(manifest))
    assert verify_manifest(artifact_dir)["build_id"] == expected
    (artifact_dir / "manifest.json").write_text(json.dumps({**manifest, "build_id": "0" * 16}))
    with pytest.raises(ArtifactMismatchError, match=f"names build 0{{16}} but its files are build {expected}"):
        verify_manifest(artifact_dir)
