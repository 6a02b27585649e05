"""Embed throughput: predict_paths (threaded decode + preprocess overlapping the forward pass) vs the bare
batched forward pass on the same images' arrays already in memory, in images per second.

Both use the pinned embedding model through the runtime (LiteRT, as Searcher.load gives it) with the features
stage's batch size (32). The two are run alternately, ``--repeats`` times each, on the same images; the
best run of each is compared (the fairest figure on a machine shared with other jobs), and every run is
kept in the JSON.

    python -m bench.throughput            # 1024 images x 3 repeats, about 45 s (80 s on a busy machine)
    python -m bench.throughput --quick    # 128 images x 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import print_table, versions, write_results
from lookalike.model.runtime import predict_paths
from lookalike.model.views import iter_input_batches
from lookalike.search.engine import Searcher

TARGET_RATIO = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 images, one repeat: a smoke run")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats = 128, 1

    started = time.perf_counter()
    searcher = Searcher.load()  # the verified pinned model, its preprocessing spec and the image paths
    model, spec = searcher.model, searcher.spec
    rows = np.random.default_rng(args.seed).choice(len(searcher.items), args.images, replace=False)
    paths = [str(searcher.resolve_path(int(r))) for r in rows]

    batches = list(iter_input_batches(paths, spec, args.batch_size))  # arrays in memory for the bare pass
    model(batches[0])  # trace and warm up both shapes
    model(batches[-1])

    def bare() -> np.ndarray:
        return np.concatenate([model(batch) for batch in batches])

    def pipeline() -> np.ndarray:
        return predict_paths(model, paths, spec, args.batch_size, description="predict_paths")

    runs = []
    outputs = {}
    for repeat in range(args.repeats):
        for name, function in (("bare forward (arrays in memory)", bare), ("predict_paths (files)", pipeline)):
            began = time.perf_counter()
            outputs[name] = function()
            seconds = time.perf_counter() - began
            runs.append({"run": name, "repeat": repeat, "seconds": round(seconds, 2),
                         "images_per_s": round(len(paths) / seconds, 1)})
            print_table([runs[-1]])
    same = bool(np.allclose(*outputs.values(), atol=1e-5))
    best = {name: max(r["images_per_s"] for r in runs if r["run"] == name) for name in outputs}
    ratio = round(best["predict_paths (files)"] / best["bare forward (arrays in memory)"], 3)
    rates = {name: [r["images_per_s"] for r in runs if r["run"] == name] for name in outputs}
    pairs = [round(p / b, 3) for b, p in zip(*rates.values(), strict=True)]  # each repeat's pipeline / its bare
    print()
    print_table([{"run": name, "best_images_per_s": rate} for name, rate in best.items()])
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(f"\npredict_paths / bare = {ratio}x, best over best (target >= {TARGET_RATIO}x: {verdict}); "
          f"per repeat {pairs}; same embeddings: {same}")
    write_results("throughput_quick" if args.quick else "throughput", {
        "images": len(paths), "batch_size": args.batch_size, "repeats": args.repeats, "runs": runs, "best": best,
        "ratio": ratio, "ratio_per_repeat": pairs, "target_met": ratio >= TARGET_RATIO, "same_embeddings": same,
        "seconds": round(time.perf_counter() - started, 1), "versions": versions("ai_edge_litert", "numpy")})


if __name__ == "__main__":
    main()
