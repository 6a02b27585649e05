"""A 1M-vector IVF index built from 10 Parquet shards (lookalike.search.shard_index) vs in one process.

Vectors: bench.common.EmbeddingSampler (perturbed real embeddings, as bench/index_scaling.py), written as
shards the way lookalike.model.distributed writes them. Each build runs in a fresh child process, so its peak
resident memory is its own (ru_maxrss, and the anonymous part, RssAnon: ru_maxrss also counts the file pages
the on-disk merge maps):

* one process: every shard read into one array, then lookalike.search.index.build_index (k-means on all vectors);
* sharded: lookalike.search.shard_index.build_sharded_index: train on a sample, one Ray task per shard (each in a
  fresh worker process; their peaks are reported too), merge on disk.

Then recall@10 against exact search and single-query p50 for both, through lookalike.search.index.search.

    python -m bench.shard_index --artifacts /path/to/project/artifacts      # 1M vectors, 10 shards
    python -m bench.shard_index --quick                                    # 100k vectors
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from bench.common import ROOT, EmbeddingSampler, print_table, versions, write_results
from bench.index_scaling import default_nlist, recall_at_k, time_queries

K = 10
COLUMNS = ["build", "index", "seconds", "train_s", "add_s", "merge_s", "peak_mb", "anon_peak_mb", "task_peak_mb",
           "load_s", "nprobe",
           f"recall@{K}", "p50_ms"]


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class AnonymousPeak:
    """Peak RssAnon of this process (heap, arrays: what the build itself holds), sampled every 20 ms.

    ru_maxrss also counts file pages mapped and touched (the on-disk merge maps its output and the blocks),
    which the kernel can drop at any time; this is the part it cannot."""

    def __init__(self):
        import threading

        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            self._stop.wait(0.02)

    def stop_mb(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak_kb / 1024, 1)


def one_process(paths: list[str], params: dict, out: str, seed: int, queue) -> None:
    from lookalike.model.distributed import read_shard_vectors
    from lookalike.search.index import build_index, save_index

    anonymous = AnonymousPeak()
    started = time.perf_counter()
    vectors = np.concatenate([read_shard_vectors(p)[1] for p in paths])
    index = build_index(vectors, params, seed=seed)
    save_index(index, out)
    queue.put({"seconds": round(time.perf_counter() - started, 2), "peak_mb": _peak_mb(),
               "anon_peak_mb": anonymous.stop_mb()})


def sharded(paths: list[str], params: dict, work: str, train_size: int, seed: int, cpus: int, queue) -> None:
    from lookalike.search.shard_index import build_sharded_index

    anonymous = AnonymousPeak()
    started = time.perf_counter()
    result = build_sharded_index(paths, work, params, train_size=train_size, seed=seed, parallel=cpus)
    queue.put({**result, "seconds": round(time.perf_counter() - started, 2), "peak_mb": _peak_mb(),
               "anon_peak_mb": anonymous.stop_mb()})


def in_child(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", default=str(ROOT / "artifacts"), help="a build whose embeddings seed the "
                                                                              "generator")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--types", nargs="+", default=["ivf_flat"], choices=["ivf_flat", "ivf_pq"])
    parser.add_argument("--train-size", type=int, default=100_000, help="sharded build's training sample")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--cpus", type=int, default=2, help="local Ray CPUs for the shard tasks")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="100k vectors")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = 100_000 if args.quick else args.n
    from lookalike.model.distributed import write_shard
    from lookalike.search.index import configure_search, load_index

    sampler = EmbeddingSampler.from_artifacts(Path(args.artifacts))
    work = Path(tempfile.mkdtemp(prefix="shard-index-bench-"))
    rows = []
    try:
        vectors = sampler.sample(n, seed=args.seed + n)
        queries = sampler.sample(args.queries, seed=args.seed + 1_000_003)
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(vectors)
        truth = exact.search(queries, K)[1]
        del exact
        bounds = np.linspace(0, n, args.shards + 1).astype(int)
        paths = []
        for i in range(args.shards):
            ids = np.arange(bounds[i], bounds[i + 1])
            paths.append(str(work / f"part-{i:05d}.parquet"))
            write_shard(Path(paths[-1]), pd.DataFrame({"id": ids, "image_path": [f"images/{j}.jpg" for j in ids]}),
                        vectors[bounds[i]:bounds[i + 1]], {"bad_images": []})
        del vectors
        nlist = default_nlist(n, 1024)
        print(f"{n} vectors in {args.shards} shards ({sum(Path(p).stat().st_size for p in paths) / 1e6:.0f} MB of "
              f"Parquet); nlist {nlist}; {args.queries} queries, k={K}")
        for kind in args.types:
            params = {"type": kind, "nlist": nlist, "nprobe": 8, "pq_m": 32, "pq_bits": 8}
            single = in_child(one_process, paths, params, str(work / f"{kind}.index"), args.seed)
            result = in_child(sharded, paths, params, str(work / f"sharded-{kind}"), args.train_size, args.seed,
                              args.cpus)
            task_peak = max(t["peak_rss_mb"] for t in result["tasks"])
            builds = [("one process", faiss.read_index(str(work / f"{kind}.index")), single, {}),
                      (f"{args.shards} shards, {args.cpus} Ray CPUs", load_index(result["index"], params), result,
                       {"train_s": result["train_s"], "add_s": result["add_s"], "merge_s": result["merge_s"],
                        "task_peak_mb": task_peak})]
            from lookalike.search.shard_index import lists_in_memory

            copied = time.perf_counter()
            in_memory = lists_in_memory(load_index(result["index"], params))
            builds.append((f"{args.shards} shards, lists copied into memory", in_memory, result,
                           {"load_s": round(time.perf_counter() - copied, 2)}))
            for name, index, measured, extra in builds:
                for nprobe in args.nprobe:
                    configure_search(index, {**params, "nprobe": nprobe})
                    latency, found = time_queries(index, queries)
                    rows.append({"build": name, "index": kind, "seconds": measured["seconds"],
                                 "peak_mb": measured["peak_mb"], "anon_peak_mb": measured["anon_peak_mb"],
                                 "nprobe": nprobe,
                                 f"recall@{K}": round(recall_at_k(found, truth), 4), "p50_ms": latency["p50_ms"],
                                 **extra})
                    print_table(rows[-1:], COLUMNS, header=len(rows) == 1)
                del index
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(rows, COLUMNS)
    write_results("shard_index_quick" if args.quick else "shard_index", {
        "n": n, "shards": args.shards, "train_size": args.train_size, "cpus": args.cpus, "queries": args.queries,
        "versions": versions("faiss", "ray", "numpy"), "rows": rows})


if __name__ == "__main__":
    main()
