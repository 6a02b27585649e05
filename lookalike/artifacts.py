"""Writing artifacts whole, the manifest that ties a model, embeddings and index together, and builds.

Every stage writes each output aside, fsyncs it and renames it into place, so a
killed stage leaves the previous file intact. A build is several files from
several stages, though, and DVC deletes a stage's outputs before rerunning it;
so the index stage also *publishes* each finished build: a copy under
``artifacts/builds/<build_id>/`` that no stage touches, named by the pointer
``artifacts/current.json``. Readers resolve a folder with :func:`resolve_build`
and check the manifest's hashes before trusting anything: they get the previous
build or the new one, whole, wherever a run was killed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

MANIFEST_FILES = ("model", "embeddings", "image_paths", "items", "index",
                  "runtime_model", "runtime_backbone")  # the two models exported for lookalike.model.runtime
OPTIONAL_MANIFEST_FILES = ("text_tower", "text_tokenizer",  # checked like the others when a build lists them
                           "more_photos")  # builds before several photos per item have none
MANIFEST_NAME = "manifest.json"
BUILDS_DIR = "builds"  # artifacts/builds/<build_id>/: published builds, never DVC outputs
POINTER_NAME = "current.json"  # artifacts/current.json: {"build": "<build_id>"}, the build to serve
KEEP_BUILDS = 2  # the current build and the one before it
# Test hook: the process SIGKILLs itself where the variable names a failpoint: "kill-before-rename:<file
# name>" (temporary copy written, not renamed), "kill-after-rename:<file name>" (renamed, nothing after),
# "kill-after-publish-copy:<file name>" (that file copied into an unfinished build folder),
# "kill-before-publish-rename" (build folder complete under its temporary name).
FAILPOINT_ENV = "LOOKALIKE_FAILPOINT"
FICLONE = 0x40049409  # Linux ioctl: share the blocks copy-on-write (btrfs, XFS); refused elsewhere
T = TypeVar("T")


class ArtifactMismatchError(RuntimeError):
    """Artifacts are missing or disagree with each other or with the manifest.

    ``kind`` words the problem for a page: "missing" (nothing built), "damaged" (unreadable
    manifest), "incomplete" (a listed file absent) or "mismatched" (hashes, counts, shapes).
    """

    def __init__(self, message: str, kind: str = "mismatched"):
        super().__init__(message)
        self.kind = kind


def failpoint(name: str) -> None:
    """Die here, as a power cut or `kill -9` would, when $LOOKALIKE_FAILPOINT names this point (tests only)."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_path(path: str | Path) -> None:
    """Flush a file's data, or a folder's entries, to disk: a rename is only durable once its folder is."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The data is fsynced before the rename and the folder after it, so after a power cut
    the path holds the old file or the new one, never a renamed but empty file.
    """
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
        fsync_path(tmp_path)
        failpoint(f"kill-before-rename:{path.name}")
        os.replace(tmp_path, path)
        fsync_path(path.parent)
        failpoint(f"kill-after-rename:{path.name}")
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


def verify_manifest(directory: str | Path, manifest_name: str = MANIFEST_NAME) -> dict[str, Any]:
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
    listed = manifest.get("files", {})
    for name in (*MANIFEST_FILES, *(n for n in OPTIONAL_MANIFEST_FILES if n in listed)):
        entry = listed.get(name)
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


# ---------------------------------------------------------------- builds


def read_pointer(directory: str | Path) -> str | None:
    """The build id ``artifacts/current.json`` names, or None without a readable pointer (older layout)."""
    try:
        value = json.loads((Path(directory) / POINTER_NAME).read_text())["build"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) and value else None


def _manifest_build(directory: Path) -> str | None:
    """The build id of the manifest in ``directory``, without hashing its files; None if unreadable."""
    try:
        return build_id(json.loads((directory / MANIFEST_NAME).read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def resolve_build(directory: str | Path) -> tuple[Path, dict[str, Any]]:
    """The folder of the build to serve from an artifacts folder, and its verified manifest.

    Without a pointer (an older layout, a test's copy) the folder itself, as always. With one,
    the published build it names; except when the folder's own manifest names another build
    and every file matches it, which is a newer build not yet published (a run killed just
    before publishing) or one DVC checked out or restored from its run cache without running
    the index stage: then that one, so the page never lags behind the workspace. A folder
    in the middle of a run fails its check and the published build is served instead.
    """
    directory = Path(directory)
    current = read_pointer(directory)
    published = directory / BUILDS_DIR / str(current)
    if current is None or not published.is_dir():  # no pointer, or one copied without its builds
        return directory, verify_manifest(directory)
    top = _manifest_build(directory)
    candidates = [directory, published] if top not in (None, current) else [published, directory]
    errors: list[ArtifactMismatchError] = []
    for folder in candidates:
        try:
            manifest = verify_manifest(folder)
        except ArtifactMismatchError as error:
            errors.append(error)
            continue
        if folder == published and manifest["build_id"] != current:
            errors.append(ArtifactMismatchError(f"{folder} holds build {manifest['build_id']}, not {current}"))
            continue
        return folder, manifest
    raise errors[candidates.index(published)]


def load_build(directory: str | Path, loader: Callable[[Path, dict[str, Any]], T]) -> T:
    """Resolve the build to serve and load it with ``loader(folder, manifest)``.

    A published build is never written again, but the artifacts folder itself is: when that
    is what resolved, check after loading that it did not change meanwhile (a stage renaming
    a new file in) and otherwise load again, from the build the pointer names by then.
    """
    directory = Path(directory)
    folder, manifest = resolve_build(directory)
    loaded = loader(folder, manifest)
    if folder != directory or read_pointer(directory) is None:
        return loaded
    try:
        unchanged = verify_manifest(folder) == manifest
    except ArtifactMismatchError:
        unchanged = False
    if unchanged:
        return loaded
    folder, manifest = resolve_build(directory)
    return loader(folder, manifest)


def _copy(source: Path, target: Path) -> None:
    """An independent, fsynced copy: a reflink where the filesystem can, else the bytes.

    Not a hard link: that would share the file with artifacts/, and a single in-place write
    there (`cp` onto it, a tool that truncates) would damage the published build as well.
    """
    with source.open("rb") as reader, target.open("wb") as writer:
        try:
            fcntl.ioctl(writer.fileno(), FICLONE, reader.fileno())
        except OSError:
            shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())


def _discard(folder: Path) -> None:
    """Remove a folder, renaming it out of the way first so no half-deleted folder keeps a build's name."""
    trash = folder.with_name(f".{folder.name}.trash-{os.getpid()}")
    os.replace(folder, trash)
    fsync_path(folder.parent)
    shutil.rmtree(trash, ignore_errors=True)


def publish_build(directory: str | Path, keep: int = KEEP_BUILDS) -> str:
    """Copy the build in ``directory`` to ``builds/<build_id>/`` and point ``current.json`` at it.

    The order makes every moment safe to die at: files copied into a temporary folder and
    fsynced, the folder renamed into place, the pointer replaced atomically, and only then
    builds older than the ``keep`` newest removed (never the one named). Returns the build id.
    """
    directory = Path(directory)
    manifest = verify_manifest(directory)
    current = manifest["build_id"]
    builds = directory / BUILDS_DIR
    builds.mkdir(exist_ok=True)
    for stale in builds.glob(".*"):  # left by a killed earlier publication
        shutil.rmtree(stale, ignore_errors=True)
    target = builds / current
    if target.is_dir():
        try:
            if verify_manifest(target) != manifest:  # the same files under another manifest (a recalibrated
                _discard(target)                       # near-duplicate threshold, other similarity modes)
        except ArtifactMismatchError:
            _discard(target)
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=f".{current}.", suffix=".tmp", dir=builds))
        staging.chmod(0o777 & ~_umask())
        for entry in manifest["files"].values():
            _copy(directory / entry["path"], staging / entry["path"])
            failpoint(f"kill-after-publish-copy:{entry['path']}")
        _copy(directory / MANIFEST_NAME, staging / MANIFEST_NAME)
        verify_manifest(staging)  # the copies themselves, in case a file was replaced while copying
        fsync_path(staging)
        failpoint("kill-before-publish-rename")
        os.replace(staging, target)
        fsync_path(builds)
    previous = read_pointer(directory)
    write_json(directory / POINTER_NAME, {"build": current})
    _prune(builds, [current, previous], keep)
    return current


def _prune(builds: Path, first: list[str | None], keep: int) -> None:
    """Keep the named builds (the current one, then the one it replaced) and the newest others up to ``keep``."""
    others = sorted((p for p in builds.iterdir() if p.is_dir() and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    kept: list[str] = []
    for name in [*first, *(p.name for p in others)]:
        if name and name not in kept and (builds / name).is_dir() and (len(kept) < keep or name == first[0]):
            kept.append(name)
    for old in others:
        if old.name not in kept:
            _discard(old)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def published_build_version(directory: str | Path) -> str | None:
    """:func:`published_build_id` and the hash of that build's manifest file (``<build_id>:<sha256[:16]>``): it
    changes when a build is republished under the same id with another manifest (a recalibrated near-duplicate
    threshold), which a server must swap in too. None when unreadable."""
    directory = Path(directory)
    current = published_build_id(directory)
    if current is None:
        return None
    for manifest in (directory / BUILDS_DIR / current / MANIFEST_NAME, directory / MANIFEST_NAME):
        try:
            data = manifest.read_bytes()
        except OSError:
            continue
        return f"{current}:{hashlib.sha256(data).hexdigest()[:16]}"
    return current


def published_build_id(directory: str | Path) -> str | None:
    """The build a reader of ``directory`` would load now, cheaply (no hashing): the one ``current.json`` names,
    else the id of the folder's own manifest; None when neither is readable. A server polls it to notice a
    newly published build."""
    directory = Path(directory)
    return read_pointer(directory) or _manifest_build(directory)
