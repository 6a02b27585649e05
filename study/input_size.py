"""The backbone's input size on fashion-5k: build time, photo query latency and retrieval quality at each size.

The catalogue's photos are 60x80 JPEGs, padded to a white square and upscaled to ``backbone.image_size``
(224 px in params.yaml). For each size this builds the whole default pipeline (HEAD) in a scratch copy with
``bash study/run_catalogue.sh OVERRIDES input-size-S /tmp/lookalike-input-size-S`` (overrides: params.yaml's
catalogue folder and ``backbone.image_size: S``; stage seconds and metrics land in metrics/input-size-S/), then
times photo queries against that build: one image at a time, one thread (model, BLAS and faiss), after a
warm-up, on distinct catalogue photos by path, interleaving the whole query (``Searcher.search``: decode,
pad + resize + normalise, forward, index search, metadata) with the bare forward pass of the exported model on
the same preprocessed array (bench/latency.py's ``measure``). Writes metrics/input_size.csv (one row per size)
and prints it as markdown tables, with the CPU and the load average.

    python -m study.input_size                     # 4 builds (about 3-4 min each on 2 cores) + latency
    python -m study.input_size --rerun             # rebuild sizes whose metrics/input-size-S/ already exist
    python -m study.input_size --table             # the tables of the committed metrics/input_size.csv

A size whose metrics/input-size-S/ exists is not rebuilt; its latency is measured again if its scratch
project is still there, otherwise the previous CSV row's latency is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
SIZES = (96, 128, 160, 224)
OUT = ROOT / "metrics" / "input_size.csv"
QUALITY = ("precision_at_1", "precision_at_5", "top5_accuracy", "map_at_r", "type_colour_precision_at_5",
           "colour_precision_at_5", "type_colour_family_precision_at_5")
SHORT = {"precision_at_1": "P@1", "precision_at_5": "P@5", "top5_accuracy": "top-5", "map_at_r": "MAP@R",
         "type_colour_precision_at_5": "type+colour P@5", "colour_precision_at_5": "colour P@5",
         "type_colour_family_precision_at_5": "type+colour-family P@5"}
LATENCY = ("query_p50_ms", "query_p95_ms", "forward_p50_ms", "forward_p95_ms", "latency_queries", "latency_load_1m")
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def cpu_model() -> str:
    from bench.common import cpu_model as model

    return model()


def scratch_of(prefix: str, size: int) -> Path:
    return Path(f"{prefix}{size}")


class LoadSampler:
    """The 1-minute load average every ``every`` seconds while a build runs: its mean and max."""

    def __init__(self, every: float = 10.0):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def build(size: int, scratch: Path) -> dict:
    """run_catalogue.sh at ``size`` in ``scratch``: metrics/input-size-S/ and the build's load average."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = {"data": {"catalogue_dir": params["data"]["catalogue_dir"]}, "backbone": {"image_size": size}}
    with tempfile.NamedTemporaryFile("w", prefix=f"input-size-{size}-", suffix=".yaml", dir="/tmp",
                                     delete=False) as handle:
        yaml.safe_dump(overrides, handle, sort_keys=False)
    print(f"\n== image_size {size}: bash study/run_catalogue.sh {handle.name} input-size-{size} {scratch}",
          flush=True)
    with LoadSampler() as load:
        subprocess.run(["bash", str(ROOT / "study/run_catalogue.sh"), handle.name, f"input-size-{size}",
                        str(scratch)], cwd=ROOT, check=True)
    Path(handle.name).unlink()
    return {"build_load_mean": round(sum(load.samples) / len(load.samples), 2),
            "build_load_max": round(max(load.samples), 2)}


def measure_latency(scratch: Path, queries: int, seed: int, k: int) -> dict:
    """p50/p95 of the whole photo query and the bare forward pass on one build, one thread (run in a child
    process whose BLAS and OpenMP pools were made single-threaded before numpy and faiss loaded)."""
    import numpy as np

    from bench.common import summary_ms
    from bench.latency import measure
    from lookalike.search.engine import Searcher

    searcher = Searcher.load(scratch / "artifacts", root=scratch, threads=1)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(searcher.items), queries + 10, replace=False)
    paths = [str(searcher.resolve_path(int(r))) for r in rows]
    warm, timed = paths[:10], paths[10:]
    for path in warm:  # caches, the interpreter's buffers
        searcher.search(path, k)
    load = os.getloadavg()[0]
    query_ms, forward_ms = measure(searcher, timed, k)
    load = max(load, os.getloadavg()[0])
    query, forward = summary_ms(query_ms), summary_ms(forward_ms)
    return {"query_p50_ms": query["p50_ms"], "query_p95_ms": query["p95_ms"], "forward_p50_ms": forward["p50_ms"],
            "forward_p95_ms": forward["p95_ms"], "latency_queries": len(timed), "latency_load_1m": round(load, 2),
            "model_input": list(searcher.model.input_shape)}


def latency_in_child(scratch: Path, queries: int, seed: int, k: int) -> dict:
    command = [sys.executable, "-m", "study.input_size", "--measure", str(scratch), "--queries", str(queries),
               "--seed", str(seed), "--k", str(k)]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **ONE_THREAD}, check=True, capture_output=True,
                          text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def quality_and_time(size: int) -> dict:
    folder = ROOT / "metrics" / f"input-size-{size}"
    metrics = json.loads((folder / "metrics.json").read_text())
    features = json.loads((folder / "features.json").read_text())
    train = json.loads((folder / "train.json").read_text())
    stages = pd.read_csv(folder / "stage_seconds.csv").groupby("stage")["seconds"].last()
    row = {"image_size": size, "features_s": stages["features"], "train_s": stages["train"],
           "total_s": round(float(stages.sum()), 1), "features_images": features["images"],
           "features_images_per_s": features["images_per_second"], "train_best_step": train.get("best_step")}
    for model in ("trained", "pretrained"):
        for name in QUALITY:
            value = metrics[model].get(name)
            row[f"{model}_{name}"] = round(value, 4) if value is not None else None
    return row


def markdown(frame: pd.DataFrame) -> str:
    ref = frame.set_index("image_size").loc[224] if 224 in set(frame["image_size"]) else None
    lines = ["| image size | features s | features img/s | train s (kept step) | pipeline s | forward p50 ms | "
             "query p50 ms |", "|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        lines.append(f"| {r.image_size} | {r.features_s:.1f} | {r.features_images_per_s:.1f} | {r.train_s:.1f} "
                     f"({r.train_best_step}) | {r.total_s:.1f} | {r.forward_p50_ms:.2f} | {r.query_p50_ms:.2f} |")
    for model in ("trained", "pretrained"):
        present = [m for m in QUALITY if frame[f"{model}_{m}"].notna().any()]
        lines += ["", f"{model} ({'the pipeline' if model == 'trained' else 'backbone features, no head'}); "
                      "in brackets: the difference to 224 px",
                  "| image size | " + " | ".join(SHORT[m] for m in present) + " |",
                  "|---|" + "---|" * len(present)]
        for _, r in frame.iterrows():
            cells = []
            for m in present:
                value = r[f"{model}_{m}"]
                delta = "" if ref is None or r.image_size == 224 else f" ({value - ref[f'{model}_{m}']:+.3f})"
                cells.append(f"{value:.3f}{delta}")
            lines.append(f"| {r.image_size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rerun", action="store_true", help="rebuild sizes whose metrics/input-size-S/ exist")
    parser.add_argument("--scratch-prefix", default="/tmp/lookalike-input-size-")
    parser.add_argument("--queries", type=int, default=200, help="timed catalogue photos per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table", action="store_true", help="only print the tables of --out")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child: one build's latency as JSON
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_latency(args.measure, args.queries, args.seed, args.k)))
        return
    if args.table:
        print(markdown(pd.read_csv(args.out)))
        return

    cpu = cpu_model()
    print(f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores; load average at start "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    previous = pd.read_csv(args.out).set_index("image_size") if args.out.exists() else None
    builds = {}
    for size in args.sizes:
        if args.rerun or not (ROOT / "metrics" / f"input-size-{size}" / "metrics.json").exists():
            builds[size] = build(size, scratch_of(args.scratch_prefix, size))
        else:
            print(f"image_size {size}: metrics/input-size-{size}/ exists, not rebuilt (--rerun to rebuild)")
    rows = []
    for size in args.sizes:
        row = quality_and_time(size)
        scratch = scratch_of(args.scratch_prefix, size)
        kept = previous.loc[size].to_dict() if previous is not None and size in previous.index else {}
        row.update(builds.get(size) or {k: kept.get(k) for k in ("build_load_mean", "build_load_max")})
        if (scratch / "artifacts" / "manifest.json").exists():
            latency = latency_in_child(scratch, args.queries, args.seed, args.k)
            if latency.pop("model_input")[0] != size:
                raise SystemExit(f"{scratch} serves another input size: rebuild with --rerun")
            print(f"image_size {size}: query p50 {latency['query_p50_ms']} ms, forward p50 "
                  f"{latency['forward_p50_ms']} ms ({latency['latency_queries']} queries, one thread, "
                  f"load {latency['latency_load_1m']})", flush=True)
        else:
            latency = {k: kept.get(k) for k in LATENCY}
            print(f"image_size {size}: no scratch build at {scratch}; latency "
                  f"{'kept from ' + str(args.out) if kept else 'not measured'}")
        rows.append({**row, **latency, "cpu": cpu})
    frame = pd.DataFrame(rows).sort_values("image_size")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}; CPU {cpu}; "
          f"load average now {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print(markdown(frame))


if __name__ == "__main__":
    main()
