"""Catalogue embedding: the single-process path next to the Ray Data job with 1 and 2 workers, same run.

Same photos, same exported model (a build's ``runtime_model``), same preprocessing. For each:
images/s, and for Ray the start of the local cluster apart from the job; the peak resident memory of
every Ray worker process (model actors and decode tasks, sampled from /proc every 0.2 s) and of this
driver. The vectors of every Ray run are compared with the single-process ones (max abs difference).

    python -m bench.ray_embed --artifacts /path/to/project/artifacts     # every photo of the build's catalogue
    python -m bench.ray_embed --quick                                    # 256 photos

The catalogue folder is read through the project's catalogue description (``data.catalogue`` of the
params.yaml beside the artifacts folder), or the one --description names.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

from bench.common import ROOT, machine, print_table, versions, write_results
from lookalike.catalogue.description import load_description
from lookalike.model.distributed import catalogue_table, embed_table, model_from_build, ray_session, read_embeddings
from lookalike.model.runtime import EmbeddingRuntime, predict_paths
from lookalike.params import catalogue_description

COLUMNS = ["engine", "workers", "threads", "images", "seconds", "images_per_s", "vs_single", "ray_start_s",
           "actor_peak_mb", "decode_peak_mb", "max_abs_diff", "load_1m"]


class WorkerMemory:
    """Peak RSS (VmHWM) per Ray worker process, by role, sampled while a job runs."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peaks, self._stop = interval, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for process in psutil.process_iter(["pid", "cmdline"]):
                title = " ".join(process.info["cmdline"] or [])
                role = "actor" if "Embedder" in title else "decode" if "decode_batch" in title else None
                if role is None:
                    continue
                try:
                    status = Path(f"/proc/{process.info['pid']}/status").read_text()
                except OSError:
                    continue
                hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
                key = (role, process.info["pid"])
                self.peaks[key] = max(self.peaks.get(key, 0), hwm)
            self._stop.wait(self.interval)

    def peak_mb(self, role: str) -> float:
        values = [v for (r, _), v in self.peaks.items() if r == role]
        return round(max(values) / 1024, 1) if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", default=str(ROOT / "artifacts"), help="a build with model.tflite")
    parser.add_argument("--catalogue", help="catalogue folder (default: the build's catalogue_dir)")
    parser.add_argument("--description", help="the catalogue folder's description (default: data.catalogue of the "
                                              "project's params.yaml)")
    parser.add_argument("--limit", type=int, help="first N photos by id (default: all)")
    parser.add_argument("--quick", action="store_true", help="256 photos")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    model_path, spec, sha = model_from_build(args.artifacts)
    from lookalike.artifacts import resolve_build

    catalogue = args.catalogue or resolve_build(args.artifacts)[1]["params"]["catalogue_dir"]
    project = Path(args.artifacts).resolve().parent  # a relative catalogue_dir is relative to the project
    catalogue_path = Path(catalogue) if Path(catalogue).is_absolute() else project / catalogue
    description = load_description(args.description) if args.description else catalogue_description(
        yaml.safe_load((project / "params.yaml").read_text()), project)
    table, _ = catalogue_table(catalogue_path, description)
    limit = 256 if args.quick else args.limit
    if limit:
        table = table.iloc[:limit].reset_index(drop=True)
    paths = table["image_path"].tolist()
    cores = len(psutil.Process().cpu_affinity())
    print(f"{len(paths)} photos, {spec.image_size} px, {cores} cores; model {model_path}")

    rows = []

    def single_process(label: str) -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        runtime = EmbeddingRuntime(model_path, cores)
        runtime(np.zeros((1, spec.image_size, spec.image_size, 3), np.float32))
        vectors = predict_paths(runtime, paths, spec, args.batch_size)
        seconds = time.perf_counter() - started
        rows.append({"engine": f"single process (predict_paths), {label}", "workers": 1, "threads": cores,
                     "images": len(paths), "seconds": round(seconds, 1), "images_per_s": round(len(paths) / seconds, 1),
                     "load_1m": round(psutil.getloadavg()[0], 2)})
        return len(paths) / seconds, vectors

    first_rate, single = single_process("first")

    for workers, threads in ((1, 1), (1, cores), (cores, 1)):
        if workers == 1 and threads == cores == 1:
            continue
        out = Path(tempfile.mkdtemp(prefix="ray-embed-bench-"))
        try:
            ray_started = time.perf_counter()
            with ray_session(num_cpus=cores) as _, WorkerMemory() as memory:
                ray_start = time.perf_counter() - ray_started
                job_started = time.perf_counter()
                report = embed_table(table, out, model_path, spec, model_sha256=sha, workers=workers,
                                     threads=threads, batch_size=args.batch_size)
                seconds = time.perf_counter() - job_started
            got_rows, vectors = read_embeddings(out)
            assert got_rows["id"].tolist() == table["id"].tolist()
            rows.append({"engine": "ray data", "workers": workers, "threads": threads, "images": len(paths),
                         "seconds": round(seconds, 1), "images_per_s": round(len(paths) / seconds, 1),
                         "load_1m": round(psutil.getloadavg()[0], 2),
                         "ray_start_s": round(ray_start, 1), "actor_peak_mb": memory.peak_mb("actor"),
                         "decode_peak_mb": memory.peak_mb("decode"),
                         "max_abs_diff": float(np.abs(vectors - single).max()),
                         "ray_data_stats": report.ray_data_stats})
            print_table(rows[-1:], [c for c in COLUMNS if c != "vs_single"], header=len(rows) == 2)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    last_rate, again = single_process("last")
    assert np.array_equal(again, single)
    single_rate = (first_rate + last_rate) / 2  # the load moves during a run: the mean of before and after
    for row in rows:
        row["vs_single"] = round(row["images_per_s"] / single_rate, 3)
    print()
    print_table(rows, COLUMNS)
    import resource

    driver_peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"driver (this process) peak RSS {driver_peak} MB; load average {psutil.getloadavg()}")
    write_results("ray_embed_quick" if args.quick else "ray_embed", {
        "images": len(paths), "image_size": spec.image_size, "batch_size": args.batch_size, "model": str(model_path),
        "versions": versions("ray", "numpy"), "rows": rows, "driver_peak_mb": driver_peak,
        "machine_after": machine()})


if __name__ == "__main__":
    main()
