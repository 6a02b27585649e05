"""Hostile uploads: peak memory increase and time of Searcher.search(bytes) for each extreme file.

Every file of tests/bad_inputs.py's corpora (extreme shapes, the widest modes at the decode limit, the
common bad files) goes through the loaded default build as an upload would. A sampling thread reads the
process's resident memory every millisecond; the figure is the peak over the resident size just before
the call. Target: every file answered or refused with InvalidImageError, under 200 MB and
about 1 s on 2 cores.

    python -m bench.hostile_uploads           # each file 3 times (the worst run counts)
    python -m bench.hostile_uploads --quick   # once
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import psutil

from bench.common import ROOT, print_table, write_results
from lookalike.model.preprocessing import InvalidImageError
from lookalike.search.engine import Searcher

sys.path.insert(0, str(ROOT / "tests"))
from bad_inputs import bad_input_corpus, extreme_corpus  # noqa: E402  (tests/, the one home of the corpus)

TARGET_MB = 200.0
TARGET_SECONDS = 1.0


class PeakRss:
    """Highest resident set size seen by a 1 ms sampling thread while the block runs."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0

    def __enter__(self) -> PeakRss:
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def increase_mb(self) -> float:
        return (self.peak - self.baseline) / 1e6


def measure(searcher: Searcher, data: bytes) -> tuple[str, float, float]:
    """(outcome, peak MB over the loaded process, seconds) of one upload."""
    started = time.perf_counter()
    with PeakRss() as rss:
        try:
            searcher.search(data, k=5)
            outcome = "answered"
        except InvalidImageError as error:
            outcome = f"refused: {error}"[:70]
    return outcome, rss.increase_mb, time.perf_counter() - started


def main() -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # glibc otherwise keeps freed large blocks in its heap, so a later file reuses an earlier one's memory
        # and its peak reads as zero; with a fixed mmap threshold every large block goes back on free.
        os.execve(sys.executable, [sys.executable, "-m", "bench.hostile_uploads", *sys.argv[1:]],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    searcher = Searcher.load()
    corpus = {**extreme_corpus(), **bad_input_corpus(searcher.max_bytes)}
    measure(searcher, next(iter(corpus.values()))[0])  # warm-up: first-call allocations are not the file's
    rows = []
    for name, (data, _) in corpus.items():
        runs = [measure(searcher, data) for _ in range(repeats)]
        outcome = runs[0][0]
        peak_mb = max(r[1] for r in runs)
        seconds = max(r[2] for r in runs)
        rows.append({"file": name, "bytes": len(data), "outcome": outcome, "peak_mb_over_loaded": round(peak_mb, 1),
                     "seconds": round(seconds, 3),
                     "within_target": peak_mb <= TARGET_MB and seconds <= TARGET_SECONDS})
    print_table(rows, ["file", "bytes", "peak_mb_over_loaded", "seconds", "within_target", "outcome"])
    worst = {"peak_mb_over_loaded": max(r["peak_mb_over_loaded"] for r in rows),
             "seconds": max(r["seconds"] for r in rows), "all_within_target": all(r["within_target"] for r in rows)}
    print(f"worst: {worst}")
    write_results("hostile_uploads", {"rows": rows, "worst": worst, "repeats": repeats})


if __name__ == "__main__":
    main()
