"""Catalogue embedding on Ray Data: the pinned model over many photos, on one machine or a cluster.

    lookalike embed-ray ../shared/data/fashion-5k --out shards/            # local Ray, one worker per core
    lookalike embed-ray catalogue/ --out shards/ --address head:6379 --workers 32

The job (:func:`embed_table`) is the single-process path (:func:`lookalike.model.runtime.predict_paths`)
spread out with an existing engine:

* **read + decode** (Ray tasks, in parallel): each photo through :func:`lookalike.model.preprocessing.load_image`
  (``max_side=spec.image_size``) and :func:`~lookalike.model.preprocessing.image_to_input`, exactly as
  :func:`~lookalike.model.views.iter_input_batches` does; an image that cannot be decoded becomes a row
  with its reason instead of stopping the job;
* **embed** (an actor pool, ``workers`` actors): each actor loads the exported model once into an
  :class:`lookalike.model.runtime.EmbeddingRuntime` and runs batches through it;
* **shards** (the driver): rows are collected per shard and each finished shard is written as one Parquet
  file (``id``, ``embedding`` as a fixed-size list of float32, the metadata columns, ``image_path``),
  written aside and renamed into place (:func:`lookalike.artifacts.atomic_path`).

A shard is a fixed row range of the catalogue (sorted by id, or the order given), named by its position
and a digest of its rows and the model (``part-00003-<digest>.parquet``). A rerun after a killed job finds
the finished shards by name and embeds only the others; a changed row or model changes the digest, so a
stale shard is never reused (and is removed once the new run completes). ``report.json`` is written last:
the shards in order, their counts, and every image that could not be decoded (also kept in each shard's
Parquet metadata, so a resumed run reports them too). A worker that dies is restarted by Ray and its
batch retried (Ray Data's actor pools: ``max_restarts`` / ``max_task_retries``, set here explicitly);
rows are keyed by catalogue position, so a retried batch can neither duplicate nor lose a row, and the
driver checks that each shard receives each of its rows exactly once.

Image paths must be readable from every node (a shared filesystem). The catalogue table stays in the
driver; the cluster sees only (shard, position, path) rows and returns (shard, position, vector, error).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lookalike.artifacts import atomic_path, sha256_file, write_json
from lookalike.catalogue.description import CatalogueDescription
from lookalike.model.preprocessing import InvalidImageError, PreprocessSpec, image_to_input, load_image

REPORT_NAME = "report.json"
EMBED_SHARDS_DIR = "data/embed_shards"  # the DVC embed stage's shards with embed.engine: ray (not a DVC output)
SHARD_PREFIX = "part-"
SHARD_SUFFIX = ".parquet"
METADATA_KEY = b"lookalike"  # Parquet key-value metadata: the shard's plan and its undecodable images
DEFAULT_SHARD_ROWS = 1024
DEFAULT_BATCH_SIZE = 32
# Logical CPUs: a decode task asks for a quarter of one, an actor for its threads less that quarter, so
# ``workers`` one-thread actors on ``workers`` cores leave room for as many decode tasks (a 1-CPU node
# holds one actor and one decode task). Decoding costs about a twentieth of the forward pass.
DECODE_CPUS = 0.25
ACTOR_RESTARTS = 4  # per actor: a worker process killed (OOM, preemption) is replaced this often
TASK_RETRIES = 4  # per batch: resubmitted to a restarted or another actor
OBJECT_STORE_MB = 256  # local Ray's object store (inputs in flight: a batch of 32 at 224 px is 19 MB)
# Test hook: "kill-worker-once:<position>:<marker file>": the actor holding that catalogue position
# SIGKILLs itself, once (the marker file records that it did), as a crashed worker would.
WORKER_FAILPOINT_ENV = "LOOKALIKE_WORKER_FAILPOINT"
# Test hook: "kill-driver-after-shards:<n>": the driver SIGKILLs itself after writing n shards this run.
DRIVER_FAILPOINT_ENV = "LOOKALIKE_FAILPOINT"


class ShardError(RuntimeError):
    """The shards on disk or the rows coming back disagree with the plan; the message says how."""


@dataclass(frozen=True)
class ShardPlan:
    index: int
    start: int  # first catalogue row (position in the table as given)
    stop: int
    digest: str

    @property
    def name(self) -> str:
        return f"{SHARD_PREFIX}{self.index:05d}-{self.digest[:16]}{SHARD_SUFFIX}"

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class EmbedReport:
    """What a job did: written as ``report.json`` beside the shards."""

    rows: int = 0
    embedded_rows: int = 0  # rows with a vector, over all shards
    bad_images: list[dict] = field(default_factory=list)  # {id, image_path, reason}
    shards: list[dict] = field(default_factory=list)  # {file, index, start, stop, rows, reused}
    reused_shards: int = 0
    written_shards: int = 0
    removed_stale_shards: list[str] = field(default_factory=list)
    model: str = ""
    model_sha256: str = ""
    preprocess: dict = field(default_factory=dict)
    dimension: int = 0
    workers: int = 0
    threads_per_worker: int = 0
    batch_size: int = 0
    shard_rows: int = 0
    ray_address: str = ""
    ray_nodes: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0  # images embedded this run (not reused) per second of the Ray job
    catalogue: dict = field(default_factory=dict)  # lookalike.catalogue.reading's report, when read from a folder
    ray_data_stats: str = ""  # Ray Data's per-operator timings of this run (Dataset.stats())

    def to_dict(self) -> dict:
        return {"n_bad_images": len(self.bad_images), **asdict(self)}

    def line(self) -> str:
        return (f"{self.embedded_rows} of {self.rows} images embedded in {len(self.shards)} shards "
                f"({self.reused_shards} reused, {self.written_shards} written); {len(self.bad_images)} images "
                f"could not be decoded (listed in {REPORT_NAME}); {self.seconds:.1f} s"
                + (f", {self.images_per_s:.1f} images/s" if self.images_per_s else ""))


# ------------------------------------------------------------------------------------------------ inputs


def catalogue_table(folder: str | Path, description: CatalogueDescription) -> tuple[pd.DataFrame, dict]:
    """A catalogue folder read through its description as the job's table (rows sorted by id) and its report."""
    from lookalike.catalogue.reading import load_catalogue

    table, report = load_catalogue(folder, description)
    return table.sort_values("id", kind="mergesort").reset_index(drop=True), report.to_dict()


def files_table(paths: list[str | Path]) -> pd.DataFrame:
    """A list of image files as the job's table: sorted, ``id`` from the file name when every name is a
    distinct number (``123.jpg``), else the position in the sorted list."""
    unique = sorted({str(p) for p in paths})
    if not unique:
        raise ValueError("no image files given")
    stems = [Path(p).stem for p in unique]
    numeric = all(s.isdigit() for s in stems) and len(set(map(int, stems))) == len(stems)
    ids = [int(s) for s in stems] if numeric else list(range(len(unique)))
    return pd.DataFrame({"id": np.asarray(ids, np.int64), "image_path": unique})


def model_from_build(artifacts: str | Path) -> tuple[Path, PreprocessSpec, str]:
    """The pinned build's exported model (the file the manifest names ``runtime_model``), its preprocessing
    and sha256, read as :class:`lookalike.search.engine.Searcher` reads them (the manifest checked first)."""
    from lookalike.artifacts import resolve_build

    folder, manifest = resolve_build(artifacts)
    entry = manifest["files"]["runtime_model"]
    return folder / entry["path"], PreprocessSpec(**manifest["params"]["preprocess"]), entry["sha256"]


def plan_shards(table: pd.DataFrame, shard_rows: int, model_sha256: str, spec: PreprocessSpec) -> list[ShardPlan]:
    """Fixed row ranges of ``table``; each digest covers the model, the preprocessing and the rows' values."""
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
    plans = []
    for index, start in enumerate(range(0, len(table), shard_rows)):
        stop = min(start + shard_rows, len(table))
        digest = hashlib.sha256()
        digest.update(json.dumps({"model": model_sha256, "preprocess": asdict(spec), "start": start}).encode())
        digest.update(table.iloc[start:stop].to_csv(index=False).encode())
        plans.append(ShardPlan(index, start, stop, digest.hexdigest()))
    return plans


# ------------------------------------------------------------------------------------- the Ray job


def decode_batch(batch: dict[str, np.ndarray], spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """Ray task: image paths to model inputs, as iter_input_batches makes them; bad images keep a reason."""
    paths = batch["image_path"]
    inputs = np.zeros((len(paths), spec.image_size, spec.image_size, 3), np.float32)
    errors = []
    for i, path in enumerate(paths):
        try:
            inputs[i] = image_to_input(load_image(str(path), max_side=spec.image_size), spec)
        except InvalidImageError as error:
            errors.append(str(error) or "the image cannot be decoded")
        else:
            errors.append("")
    return {"shard": batch["shard"], "position": batch["position"], "input": inputs,
            "error": np.asarray(errors, dtype=object)}


class Embedder:
    """Ray actor: one :class:`lookalike.model.runtime.EmbeddingRuntime` per worker, loaded once."""

    def __init__(self, model_path: str, threads: int):
        from lookalike.model.runtime import EmbeddingRuntime

        self.runtime = EmbeddingRuntime(model_path, threads)
        self.failpoint = os.environ.get(WORKER_FAILPOINT_ENV, "")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        positions = np.asarray(batch["position"], np.int64)
        self._maybe_die(positions)
        errors = np.asarray(batch["error"], dtype=object)
        good = errors == ""
        vectors = np.zeros((len(positions), self.runtime.output_shape[-1]), np.float32)
        if good.any():
            vectors[good] = self.runtime(np.asarray(batch["input"])[good])
        return {"shard": batch["shard"], "position": positions, "embedding": vectors, "error": errors}

    def _maybe_die(self, positions: np.ndarray) -> None:
        if not self.failpoint.startswith("kill-worker-once:"):
            return
        _, position, marker = self.failpoint.split(":", 2)
        if int(position) in positions:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # died once already: this is the retry
            os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None,
                object_store_mb: int = OBJECT_STORE_MB) -> Iterator[Any]:
    """Ray connected: to ``address`` (an existing cluster; ``auto``: the one ``ray start`` or $RAY_ADDRESS
    names), to the one this process already joined, or else a new local one started here (``num_cpus``, a
    small object store, no dashboard; never a running cluster found by chance) and shut down afterwards."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a build machine
    import ray

    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_mb * 1024 * 1024,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _shard_metadata(plan: ShardPlan, bad: list[dict], model_sha256: str, spec: PreprocessSpec) -> dict:
    return {"index": plan.index, "start": plan.start, "stop": plan.stop, "digest": plan.digest,
            "model_sha256": model_sha256, "preprocess": asdict(spec), "bad_images": bad}


def write_shard(path: Path, rows: pd.DataFrame, vectors: np.ndarray, metadata: dict) -> None:
    """One shard, atomically: id, embedding (fixed-size list of float32), metadata columns, image_path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, np.float32)
    columns = [c for c in rows.columns if c not in ("id", "image_path")]
    arrays = {"id": pa.array(rows["id"].to_numpy(np.int64)),
              "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])}
    for column in columns:
        arrays[column] = pa.Array.from_pandas(rows[column])
    arrays["image_path"] = pa.array(rows["image_path"].astype(str).tolist(), pa.string())
    table = pa.table(arrays).replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_shard_metadata(path: str | Path) -> dict:
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[METADATA_KEY])


def _finished(path: Path, plan: ShardPlan) -> dict | None:
    """The metadata of a shard already on disk for this plan, or None (absent or unreadable: embed again)."""
    if not path.is_file():
        return None
    try:
        metadata = read_shard_metadata(path)
    except Exception:  # noqa: BLE001 - a damaged file is simply not a finished shard
        return None
    return metadata if metadata.get("digest") == plan.digest else None


def _driver_failpoint(written: int) -> None:
    if os.environ.get(DRIVER_FAILPOINT_ENV) == f"kill-driver-after-shards:{written}":
        os.kill(os.getpid(), signal.SIGKILL)


def embed_table(
    table: pd.DataFrame,
    out_dir: str | Path,
    model_path: str | Path,
    spec: PreprocessSpec,
    *,
    model_sha256: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    address: str | None = None,
    object_store_mb: int = OBJECT_STORE_MB,
    catalogue_report: dict | None = None,
) -> EmbedReport:
    """Embed every row of ``table`` (``id``, ``image_path``, any metadata columns) into Parquet shards in
    ``out_dir`` and write ``report.json``; shards already finished for the same rows and model are reused.

    ``workers``: actors in the pool (default: the cores of a local Ray, else the cluster's CPUs);
    ``threads``: the runtime's threads per actor. Runs on the Ray this process joined, else on
    ``address``, else on a local Ray started and stopped here.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f".{SHARD_PREFIX}*.tmp*"):  # a killed run's half-written shard
        stale.unlink(missing_ok=True)
    table = table.reset_index(drop=True)
    if "id" not in table or "image_path" not in table:
        raise ValueError("the table needs 'id' and 'image_path' columns")
    if table["id"].duplicated().any():
        raise ValueError(f"duplicate ids in the table: {sorted(table.loc[table['id'].duplicated(), 'id'])[:5]}")
    model_path = Path(model_path)
    model_sha256 = model_sha256 or sha256_file(model_path)
    plans = plan_shards(table, shard_rows, model_sha256, spec)
    report = EmbedReport(rows=len(table), model=str(model_path), model_sha256=model_sha256,
                         preprocess=asdict(spec), threads_per_worker=threads, batch_size=batch_size,
                         shard_rows=shard_rows, catalogue=catalogue_report or {})
    done = {plan.index: meta for plan in plans if (meta := _finished(out_dir / plan.name, plan)) is not None}
    pending = [plan for plan in plans if plan.index not in done]
    reused = set(done)
    report.reused_shards = len(reused)
    embedded_now = 0
    job_seconds = 0.0
    if pending:
        with ray_session(address, workers if not address else None, object_store_mb) as ray:
            report.ray_address = ray.get_runtime_context().gcs_address
            report.ray_nodes = sum(1 for node in ray.nodes() if node["Alive"])
            cpus = int(ray.cluster_resources().get("CPU", 1))
            report.workers = workers or max(1, cpus // max(1, threads))
            job_started = time.perf_counter()
            embedded_now, report.ray_data_stats = _run_job(ray, table, pending, out_dir, model_path, model_sha256,
                                                           spec, report.workers, threads, batch_size, done)
            job_seconds = time.perf_counter() - job_started
    for plan in plans:
        meta = done[plan.index]
        report.shards.append({"file": plan.name, "index": plan.index, "start": plan.start, "stop": plan.stop,
                              "rows": plan.rows - len(meta["bad_images"]), "reused": plan.index in reused})
        report.bad_images.extend(meta["bad_images"])
    report.embedded_rows = sum(s["rows"] for s in report.shards)
    report.written_shards = len(pending)
    wanted = {plan.name for plan in plans}
    for old in sorted(out_dir.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}")):
        if old.name not in wanted:  # another catalogue or model's shard: would be read twice
            old.unlink()
            report.removed_stale_shards.append(old.name)
    if plans:
        report.dimension = int(_dimension(out_dir / plans[0].name))
    report.seconds = round(time.perf_counter() - started, 2)
    report.images_per_s = round(embedded_now / job_seconds, 2) if job_seconds else 0.0
    write_json(out_dir / REPORT_NAME, report.to_dict())
    return report


def _dimension(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_schema(path).field("embedding").type.list_size


def _run_job(ray, table: pd.DataFrame, pending: list[ShardPlan], out_dir: Path, model_path: Path,
             model_sha256: str, spec: PreprocessSpec, workers: int, threads: int, batch_size: int,
             done: dict[int, dict]) -> tuple[int, str]:
    """The Ray Data pipeline over the pending shards' rows; writes each shard as soon as it is complete.
    Returns the rows embedded and Ray Data's statistics of the run."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    blocks = []
    for plan in pending:  # blocks of batch_size rows that never cross a shard: (shard, position, path)
        for start in range(plan.start, plan.stop, batch_size):
            stop = min(start + batch_size, plan.stop)
            blocks.append(pd.DataFrame({"shard": np.full(stop - start, plan.index, np.int64),
                                        "position": np.arange(start, stop, dtype=np.int64),
                                        "image_path": [os.path.abspath(p) for p in  # workers have another cwd
                                                       table["image_path"].iloc[start:stop].astype(str)]}))
    decoded = ray.data.from_pandas(blocks).map_batches(decode_batch, fn_kwargs={"spec": spec}, batch_size=None,
                                                       num_cpus=DECODE_CPUS)
    with warnings.catch_warnings():  # Ray 2.60 calls these "ray_remote_args" deprecated but names no replacement
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        dataset = decoded.map_batches(
            Embedder, fn_constructor_kwargs={"model_path": str(model_path.resolve()), "threads": threads},
            compute=ray.data.ActorPoolStrategy(size=workers), batch_size=batch_size,
            num_cpus=max(DECODE_CPUS, threads - DECODE_CPUS),
            max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES)
    by_index = {plan.index: plan for plan in pending}
    collected: dict[int, dict[int, tuple[np.ndarray, str]]] = {plan.index: {} for plan in pending}
    written = embedded = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for shard, position, vector, error in zip(batch["shard"], batch["position"], batch["embedding"],
                                                  batch["error"], strict=True):
            plan = by_index.get(int(shard))
            if plan is None or not plan.start <= position < plan.stop:
                raise ShardError(f"row {position} came back for shard {shard}, which does not hold it")
            rows = collected[plan.index]
            if int(position) in rows:
                raise ShardError(f"row {position} (shard {plan.index}) came back twice")
            rows[int(position)] = (np.asarray(vector, np.float32), str(error))
            if len(rows) == plan.rows:
                embedded += _write_finished(table, plan, rows, out_dir, model_sha256, spec, done)
                del collected[plan.index]
                written += 1
                _driver_failpoint(written)
    if collected:
        missing = {index: by_index[index].rows - len(rows) for index, rows in collected.items()}
        raise ShardError(f"the job ended with rows missing from shards (shard: rows missing): {missing}")
    try:
        stats = dataset.stats()
    except Exception as error:  # noqa: BLE001 - statistics are a report's extra, never a reason to fail
        stats = f"unavailable: {error}"
    return embedded, stats


def _write_finished(table: pd.DataFrame, plan: ShardPlan, rows: dict[int, tuple[np.ndarray, str]], out_dir: Path,
                    model_sha256: str, spec: PreprocessSpec, done: dict[int, dict]) -> int:
    positions = np.arange(plan.start, plan.stop)
    part = table.iloc[plan.start:plan.stop]
    good = np.array([rows[p][1] == "" for p in positions])
    bad = [{"id": int(part["id"].iat[i]), "image_path": str(part["image_path"].iat[i]), "reason": rows[p][1]}
           for i, p in enumerate(positions) if not good[i]]
    dimension = len(rows[int(positions[0])][0])
    vectors = np.stack([rows[p][0] for p in positions[good]]) if good.any() else np.zeros((0, dimension), np.float32)
    metadata = _shard_metadata(plan, bad, model_sha256, spec)
    write_shard(out_dir / plan.name, part[good].reset_index(drop=True), vectors, metadata)
    done[plan.index] = metadata
    return int(good.sum())


# ---------------------------------------------------------------------------------------- reading back


def read_report(out_dir: str | Path) -> dict:
    path = Path(out_dir) / REPORT_NAME
    if not path.is_file():
        raise ShardError(f"no {REPORT_NAME} in {out_dir}: the job has not completed there")
    return json.loads(path.read_text())


def shard_files(out_dir: str | Path) -> list[Path]:
    """The shards of a completed job, in catalogue order (as its report lists them)."""
    out_dir = Path(out_dir)
    files = [out_dir / s["file"] for s in read_report(out_dir)["shards"]]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise ShardError(f"{out_dir}: shards listed in {REPORT_NAME} are missing: {', '.join(absent[:5])}")
    return files


def read_shard_vectors(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 (n,), vectors float32 (n, d)) of one shard, without its metadata columns."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["id", "embedding"])
    column = table.column("embedding").combine_chunks()
    vectors = column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    return table.column("id").to_numpy(), np.ascontiguousarray(vectors, np.float32)


def read_embeddings(out_dir: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Every row of a completed job: (the table without embeddings, float32 (n, d) vectors), same order."""
    import pyarrow.parquet as pq

    frames, vectors = [], []
    for path in shard_files(out_dir):
        table = pq.read_table(path)
        column = table.column("embedding").combine_chunks()
        vectors.append(column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size))
        frames.append(table.drop(["embedding"]).to_pandas())
    rows = pd.concat(frames, ignore_index=True)
    dimension = int(read_report(out_dir).get("dimension") or 0)
    return rows, (np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, dimension), np.float32))


def embed_paths(
    paths: list[str],
    ids: np.ndarray,
    model_path: str | Path,
    spec: PreprocessSpec,
    out_dir: str | Path,
    **options: Any,
) -> np.ndarray:
    """float32 (len(paths), d) in the order given, through the Ray job (the DVC embed stage's ``engine:
    ray``). Every image must decode: a row without a vector would leave a hole in the build."""
    table = pd.DataFrame({"id": np.asarray(ids, np.int64), "image_path": [str(p) for p in paths]})
    report = embed_table(table, out_dir, model_path, spec, **options)
    if report.bad_images:
        first = report.bad_images[0]
        raise ShardError(f"{len(report.bad_images)} images could not be decoded (first: {first['image_path']}: "
                         f"{first['reason']}); see {Path(out_dir) / REPORT_NAME}")
    rows, vectors = read_embeddings(out_dir)
    if not np.array_equal(rows["id"].to_numpy(np.int64), table["id"].to_numpy()):
        raise ShardError("the shards' ids are not the table's ids in order")
    print(report.line())
    return vectors


def default_workers() -> int:
    """A local Ray's worker count: the cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)))
