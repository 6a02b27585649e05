"""Writing artifacts whole, and the manifest that ties a model, embeddings and index together.

Every stage writes each output aside and renames it into place, so a killed
stage leaves the previous artifacts intact. Readers check the manifest's hashes
and counts before trusting anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_FILES = ("model", "embeddings", "image_paths", "items", "index")
# Test hook: "kill-before-rename:<file name>" makes the process SIGKILL itself after writing that
# file's temporary copy and before the rename, the worst moment for an interruption.
FAILPOINT_ENV = "LOOKALIKE_FAILPOINT"


class ArtifactMismatchError(RuntimeError):
    """Artifacts are missing or disagree with each other or with the manifest.

    ``kind`` words the problem for a page: "missing" (nothing built), "damaged" (unreadable
    manifest), "incomplete" (a listed file absent) or "mismatched" (hashes, counts, shapes).
    """

    def __init__(self, message: str, kind: str = "mismatched"):
        super().__init__(message)
        self.kind = kind


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):  # left by a killed earlier run
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs should read like any file
    try:
        yield tmp_path
        if os.environ.get(FAILPOINT_ENV) == f"kill-before-rename:{path.name}":
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, value: Any) -> None:
    write_bytes(path, (json.dumps(value, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as stream:
        np.save(stream, array, allow_pickle=False)


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomic write for libraries that insist on writing to a path themselves."""
    with atomic_path(path) as tmp:
        writer(tmp)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_id(manifest: dict[str, Any]) -> str:
    """A short name for a build: 16 hex digits of sha256 over its files' sorted "name:sha256" lines.

    Derived from the content alone (not the time or the params), so the same files always
    name the same build and any changed file names a new one.
    """
    files = manifest.get("files", {})
    lines = "".join(f"{name}:{files[name].get('sha256', '')}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def make_manifest(files: dict[str, Path], counts: dict[str, int], params: dict[str, Any]) -> dict[str, Any]:
    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {name: {"path": Path(path).name, "sha256": sha256_file(path)} for name, path in files.items()},
        **counts,
        "params": params,
    }
    return {"build_id": build_id(manifest), **manifest}


def verify_manifest(directory: str | Path, manifest_name: str = "manifest.json") -> dict[str, Any]:
    """Load the manifest and check every listed file exists and has the recorded hash.

    The manifest returned always carries ``build_id``, computed when an older manifest has none.
    """
    directory = Path(directory)
    manifest_path = directory / manifest_name
    if not manifest_path.is_file():
        raise ArtifactMismatchError(f"no manifest at {manifest_path}: the pipeline has not been run (dvc repro)",
                                    kind="missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ArtifactMismatchError(f"{manifest_path} is not valid JSON: {error}", kind="damaged") from error
    for name in MANIFEST_FILES:
        entry = manifest.get("files", {}).get(name)
        if entry is None:
            raise ArtifactMismatchError(f"manifest lists no '{name}' file", kind="incomplete")
        path = directory / entry["path"]
        if not path.is_file():
            raise ArtifactMismatchError(f"{name} file {path} is missing", kind="incomplete")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ArtifactMismatchError(
                f"{name} file {path} does not match the manifest (sha256 {actual[:12]}..., "
                f"manifest says {entry['sha256'][:12]}...): rebuild with dvc repro"
            )
    expected = build_id(manifest)
    if manifest.setdefault("build_id", expected) != expected:  # older manifests carry none: named here
        raise ArtifactMismatchError(f"{manifest_path} names build {manifest['build_id']} but its files are build "
                                    f"{expected}: rebuild with dvc repro")
    return manifest
