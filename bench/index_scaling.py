"""Index scaling: flat, IVF-flat, IVF-PQ and HNSW at 10k, 100k and 1M vectors of the real embeddings' kind.

Vectors are perturbed real embeddings (bench.common.EmbeddingSampler); queries are drawn the same way
with another seed, so they are near, never equal to, catalogue vectors. Every index is built with the
project's own lookalike.search.index.build_index and queried through lookalike.search.index.search, one query per call.
For each index: build time, serialised size, RSS growth, p50/p95 single-query time and recall@10 against
exact search, for a sweep of the query-time knob (nprobe, efSearch) over the same built index.

    python -m bench.index_scaling            # 10k, 100k, 1M (about 13 min on 2 cores; 1M HNSW build ~7)
    python -m bench.index_scaling --quick    # 2k and 20k, 1-2 min
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import time

import faiss
import numpy as np

from bench.common import EmbeddingSampler, print_table, rss_bytes, summary_ms, versions, write_results
from lookalike.search.index import build_index, configure_search, search

K = 10
BASE = {"nlist": 64, "nprobe": 8, "pq_m": 32, "pq_bits": 8, "hnsw_m": 32, "ef_construction": 200, "ef_search": 128}
COLUMNS = ["n", "index", "knob", "build_s", "size_mb", "rss_delta_mb", "p50_ms", "p95_ms", f"recall@{K}"]
HNSW_GROWTH = 1.3  # build time per vector grows slowly with n (graph depth): used to predict a larger build


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so the next RSS delta starts clean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def default_nlist(n: int, cap: int) -> int:
    """About 4 sqrt(n), a power of two, at most ``cap`` (k-means training cost on 2 cores) and n // 39."""
    return int(min(2 ** round(math.log2(4 * math.sqrt(n))), cap, max(1, n // 39)))


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]))


def time_queries(index, queries: np.ndarray, warmup: int = 10) -> tuple[dict, np.ndarray]:
    """Single-query latency (one query per lookalike.search.index.search call) and the rows found."""
    for query in queries[:warmup]:
        search(index, query[None], K)
    rows = np.empty((len(queries), K), dtype=np.int64)
    samples = []
    for i, query in enumerate(queries):
        started = time.perf_counter()
        _, found = search(index, query[None], K)
        samples.append((time.perf_counter() - started) * 1e3)
        rows[i] = found[0]
    return summary_ms(samples), rows


def measure_index(name: str, params: dict, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray,
                  sweep_knob: str | None, sweep: list[int], seed: int) -> tuple[list[dict], float]:
    release_memory()
    before = rss_bytes()
    started = time.perf_counter()
    index = build_index(vectors, params, seed=seed)
    build_s = time.perf_counter() - started
    release_memory()
    rss_delta = rss_bytes() - before
    size = int(faiss.serialize_index(index).size)
    rows = []
    for value in sweep if sweep_knob else [None]:
        if sweep_knob:
            configure_search(index, {**params, sweep_knob: value})
        latency, found = time_queries(index, queries)
        row = {"n": len(vectors), "index": name, "build_s": round(build_s, 2), "size_mb": round(size / 1e6, 1),
               "rss_delta_mb": round(rss_delta / 1e6, 1), "p50_ms": latency["p50_ms"], "p95_ms": latency["p95_ms"],
               f"recall@{K}": round(recall_at_k(found, exact), 4), "params": dict(params)}
        if sweep_knob:
            row["params"][sweep_knob] = value
            row["knob"] = f"{sweep_knob}={value}"
        rows.append(row)
        print_table([row], COLUMNS, header=False, min_width=13)
    del index
    release_memory()
    return rows, build_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2k and 20k vectors, 60 queries: a smoke run")
    parser.add_argument("--sizes", type=int, nargs="+", help="catalogue sizes (default 10000 100000 1000000)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.5, help="noise scale, in within-class spreads")
    parser.add_argument("--nlist-cap", type=int, default=1024, help="largest IVF nlist (k-means cost)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--pq-m", type=int, nargs="+", default=[32, 64], help="PQ sub-quantizers (divide 256)")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--max-build-s", type=float, default=900.0,
                        help="lower efConstruction when a predicted HNSW build would take longer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = args.sizes or ([2_000, 20_000] if args.quick else [10_000, 100_000, 1_000_000])
    n_queries = 60 if args.quick else args.queries

    started_all = time.perf_counter()
    sampler = EmbeddingSampler.from_artifacts(noise_scale=args.noise)
    queries = sampler.sample(n_queries, seed=args.seed + 1_000_003)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; noise scale {args.noise} "
          f"(within-class residual norm {sampler.within_class_norm:.3f}); {n_queries} queries, k={K}")
    results, notes = [], []
    hnsw_history: tuple[int, float, int] | None = None  # (n, build_s, ef_construction) of the last HNSW build
    for n in sizes:
        vectors = sampler.sample(n, seed=args.seed + n)
        exact_index = faiss.IndexFlatIP(vectors.shape[1])
        exact_index.add(vectors)
        _, exact = exact_index.search(queries, K)
        del exact_index
        nlist = default_nlist(n, args.nlist_cap)
        print(f"\n== {n} vectors (nlist {nlist}) ==")
        print("  ".join(c.rjust(13) for c in COLUMNS))
        plans = [("flat", {**BASE, "type": "flat"}, None, []),
                 ("ivf_flat", {**BASE, "type": "ivf_flat", "nlist": nlist}, "nprobe", args.nprobe)]
        plans += [(f"ivf_pq m{m}", {**BASE, "type": "ivf_pq", "nlist": nlist, "pq_m": m}, "nprobe", args.nprobe)
                  for m in args.pq_m]
        ef_construction = args.ef_construction
        if hnsw_history:
            previous_n, previous_s, previous_ef = hnsw_history
            predicted = previous_s * n / previous_n * HNSW_GROWTH * ef_construction / previous_ef
            while predicted > args.max_build_s and ef_construction > 16:
                ef_construction //= 2
                predicted /= 2
            if ef_construction != args.ef_construction:
                notes.append(f"{n}: HNSW efConstruction {args.ef_construction} predicted to build in over "
                             f"{args.max_build_s:.0f} s; used {ef_construction} (predicted {predicted:.0f} s)")
                print("note:", notes[-1])
        plans.append((f"hnsw M{args.hnsw_m}", {**BASE, "type": "hnsw", "hnsw_m": args.hnsw_m,
                                               "ef_construction": ef_construction}, "ef_search", args.ef_search))
        for name, params, knob, sweep in plans:
            rows, build_s = measure_index(name, params, vectors, queries, exact, knob, sweep, args.seed)
            results.extend(rows)
            if params["type"] == "hnsw":
                hnsw_history = (n, build_s, ef_construction)
        del vectors
        release_memory()

    print("\n== all ==")
    print_table(results, COLUMNS)
    largest = max(sizes)
    fits = [r for r in results if r["n"] == largest and r["p50_ms"] <= 2.0 and r[f"recall@{K}"] >= 0.95]
    best = min(fits, key=lambda r: r["p50_ms"]) if fits else None
    print(f"\nat {largest}: fastest config with p50 <= 2 ms and recall@{K} >= 0.95: "
          + (f"{best['index']} {best.get('knob', '')} ({best['p50_ms']} ms, recall {best[f'recall@{K}']})"
             if best else "none"))
    name = "index_scaling_quick" if args.quick else "index_scaling_custom" if args.sizes else "index_scaling"
    write_results(name, {
        "k": K, "queries": n_queries, "noise_scale": args.noise, "sizes": sizes, "notes": notes,
        "versions": versions("faiss", "numpy"), "threads": faiss.omp_get_max_threads(),
        "target_at_largest": {"n": largest, "met": best is not None, "best": best},
        "rows": results, "seconds": round(time.perf_counter() - started_all, 1)})


if __name__ == "__main__":
    main()
