"""An IVF index built from embedding shards, never holding every vector in one process.

    index_path = build_sharded_index(shard_files(out_dir), work_dir, {"type": "ivf_flat", "nlist": 1024, ...})

Three steps, each with bounded memory:

1. **train** the coarse quantizer (and PQ codebooks for ``ivf_pq``) on a seeded sample of rows read shard by
   shard (:func:`sample_vectors`), into an empty index (``trained.index``);
2. **add** each shard to its own copy of the trained index, one Ray task per shard (:func:`add_shard`); a
   task holds one shard's vectors and writes its inverted lists (``block-00003.index``). Ids are the rows'
   positions in shard order, as in the single-process build (row i of the embeddings is FAISS id i);
3. **merge** the blocks on disk with FAISS's own ``faiss.contrib.ondisk.merge_ondisk``: one
   ``OnDiskInvertedLists`` file (``lists.ivfdata``, memory-mapped when searched) and the small index file
   that points to it.

The result loads with :func:`lookalike.search.index.load_index` and searches with :func:`lookalike.search.index.search`
like any other index (filters included). Trained on the same sample, it returns exactly what one index
built in one process from the same vectors returns (tests/test_shard_index.py); trained on a sample
instead of every vector, its recall is that of the single build (bench/shard_index.py measures both).
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from lookalike.artifacts import write_with
from lookalike.search.index import untrained_ivf

SHARDED_TYPES = ("ivf_flat", "ivf_pq")  # merging on disk needs inverted lists
TRAINED_NAME = "trained.index"
LISTS_NAME = "lists.ivfdata"
MIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per list


def shard_rows(paths: list[str | Path]) -> list[int]:
    """Rows per shard, from the Parquet footers (no vector is read)."""
    import pyarrow.parquet as pq

    return [pq.ParquetFile(path).metadata.num_rows for path in paths]


def sample_vectors(paths: list[str | Path], count: int, seed: int = 0) -> np.ndarray:
    """float32 (min(count, rows), d): a seeded uniform sample of rows over all shards, read one shard at a time."""
    from lookalike.model.distributed import read_shard_vectors

    sizes = np.asarray(shard_rows(paths), np.int64)
    total = int(sizes.sum())
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(count, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for i, path in enumerate(paths):
        mine = chosen[(chosen >= starts[i]) & (chosen < starts[i + 1])] - starts[i]
        if len(mine):
            parts.append(read_shard_vectors(path)[1][mine])
    return np.ascontiguousarray(np.concatenate(parts), np.float32)


def train_index(sample: np.ndarray, params: dict[str, Any], seed: int = 0) -> faiss.Index:
    """An empty IVF index of ``params`` (as lookalike.search.index.build_index makes it) trained on ``sample``."""
    kind = params["type"]
    if kind not in SHARDED_TYPES:
        raise ValueError(f"a sharded build needs an IVF index ({', '.join(SHARDED_TYPES)}), not {kind!r}")
    sample = np.ascontiguousarray(sample, np.float32)
    dim = sample.shape[1]
    nlist = min(int(params["nlist"]), max(1, len(sample) // MIN_POINTS_PER_LIST))
    index = untrained_ivf(kind, dim, nlist, params, seed)
    index.train(sample)
    return index


def add_shard(trained_path: str, shard_path: str, first_id: int, out_path: str, threads: int = 1) -> dict:
    """One shard into a copy of the trained index, ids ``first_id`` onwards, written to ``out_path``.

    Runs as a Ray task (or in any process); returns its rows and the peak resident memory of its process.
    """
    from lookalike.model.distributed import read_shard_vectors

    faiss.omp_set_num_threads(threads)
    index = faiss.read_index(trained_path)
    _, vectors = read_shard_vectors(shard_path)
    index.add_with_ids(vectors, np.arange(first_id, first_id + len(vectors), dtype=np.int64))
    write_with(out_path, lambda tmp: faiss.write_index(index, str(tmp)))
    return {"shard": str(shard_path), "rows": len(vectors), "peak_rss_mb": peak_rss_mb()}


def merge_blocks(trained_path: str | Path, block_paths: list[str | Path], index_path: str | Path,
                 lists_path: str | Path) -> faiss.Index:
    """The blocks' inverted lists merged into one on-disk file; the index file that points to it is written."""
    from faiss.contrib.ondisk import merge_ondisk

    index = faiss.read_index(str(trained_path))
    Path(lists_path).unlink(missing_ok=True)
    merge_ondisk(index, [str(p) for p in block_paths], str(lists_path))
    write_with(index_path, lambda tmp: faiss.write_index(index, str(tmp)))
    return index


def build_sharded_index(paths: list[str | Path], work_dir: str | Path, params: dict[str, Any], *,
                        train_size: int = 100_000, seed: int = 0, address: str | None = None,
                        parallel: int | None = None) -> dict:
    """train, add (one Ray task per shard), merge; returns where the index is and what each step cost.

    ``parallel``: CPUs of a local Ray started here (default: the cores); ``address``: an existing cluster
    (the shards and ``work_dir`` must be on a filesystem every node sees).
    """
    import time

    from lookalike.model.distributed import ray_session

    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    paths = [str(Path(p).resolve()) for p in paths]
    sizes = shard_rows(paths)
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    sample = sample_vectors(paths, train_size, seed)
    trained = train_index(sample, params, seed)
    del sample
    trained_path = work_dir / TRAINED_NAME
    write_with(trained_path, lambda tmp: faiss.write_index(trained, str(tmp)))
    timings["train_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    blocks = [work_dir / f"block-{i:05d}.index" for i in range(len(paths))]
    with ray_session(address, parallel) as ray:
        task = ray.remote(num_cpus=1, max_calls=1, max_retries=3)(add_shard)  # a fresh process per shard
        added = ray.get([task.remote(str(trained_path), path, first, str(block))
                         for path, first, block in zip(paths, firsts, blocks, strict=True)])
    timings["add_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    index_path, lists_path = work_dir / "sharded.index", work_dir / LISTS_NAME
    merged = merge_blocks(trained_path, blocks, index_path, lists_path)
    timings["merge_s"] = round(time.perf_counter() - started, 2)
    if merged.ntotal != sum(sizes):
        raise RuntimeError(f"the merged index holds {merged.ntotal} vectors, the shards {sum(sizes)}")
    for block in blocks:
        block.unlink()
    return {"index": str(index_path), "lists": str(lists_path), "ntotal": int(merged.ntotal),
            "nlist": int(merged.nlist), "shards": len(paths), "tasks": added, **timings,
            "lists_mb": round(lists_path.stat().st_size / 1e6, 1)}


def lists_in_memory(index: faiss.Index) -> faiss.Index:
    """The same index with its on-disk inverted lists copied into memory (ArrayInvertedLists), in place.

    Searching the memory-mapped lists of a merged index is slower per query (bench/README.md); a server
    with the memory to spare copies them once at load. Results are identical (tests/test_shard_index.py).
    """
    ivf = faiss.extract_index_ivf(index)
    source = ivf.invlists
    target = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    for number in range(ivf.nlist):
        size = source.list_size(number)
        if size:
            target.add_entries(number, size, source.get_ids(number), source.get_codes(number))
    ivf.replace_invlists(target, True)
    target.this.disown()  # the index owns it now
    return index


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
