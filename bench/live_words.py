"""Words queries over a live catalogue of many live items: what one write costs the next words query.

The live items' word index is a base plus the items written since (lookalike.text.search.LiveWords): a write
remakes the small part only. This bench writes N live items (the pinned build's first item's vector and
metadata, its title made unique) into a throw-away journal over the pinned build, then times words queries
right after one more write each, and without writes, in one run.

    python -m bench.live_words                 # 1,000 and 10,000 live items, 30 queries each
    python -m bench.live_words --items 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import print_table, summary_ms, write_results
from lookalike.live import LiveCatalogue, LiveStore
from lookalike.search.engine import Searcher
from lookalike.text.search import LiveTextSearch, Query, TextSearch


def one_size(searcher: Searcher, text: TextSearch, items: int, queries: int, folder: Path) -> dict:
    live = LiveCatalogue.open(searcher, LiveStore(folder / f"live-{items}.db"))
    words = LiveTextSearch(live, text)
    title = live.roles.title
    metadata = {c: v for c, v in searcher.metadata(0).items() if v}
    vector = np.asarray(searcher.embeddings[0], np.float32)

    def write(n: int, name: str) -> None:
        live.store.append("put", f"BENCH-{n}", live.build_id, live.model_key, vector,
                          {**metadata, **({title: f"{name} {n}"} if title else {})}, b"photo", "image/png")

    for n in range(items):
        write(n, "Bench item")
    live.refresh()
    query = Query(text="bench item blue")
    words.search(query, k=10)  # the first query makes the base index of every live item
    after_write, quiet = [], []
    for n in range(queries):
        write(n, "Bench item rewritten")
        live.refresh()
        started = time.perf_counter()
        words.search(query, k=10)
        after_write.append((time.perf_counter() - started) * 1e3)
    for _ in range(queries):
        started = time.perf_counter()
        words.search(query, k=10)
        quiet.append((time.perf_counter() - started) * 1e3)
    return {"live_items": items, "after_a_write_ms": summary_ms(after_write), "no_write_ms": summary_ms(quiet)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    searcher = Searcher.load()
    text = TextSearch.load(searcher)
    with tempfile.TemporaryDirectory() as folder:
        rows = [one_size(searcher, text, n, args.queries, Path(folder)) for n in args.items]
    print_table([{"live items": r["live_items"],
                  "after a write p50 / p95 ms": f"{r['after_a_write_ms']['p50_ms']:.1f} / "
                                                f"{r['after_a_write_ms']['p95_ms']:.1f}",
                  "no write p50 / p95 ms": f"{r['no_write_ms']['p50_ms']:.1f} / {r['no_write_ms']['p95_ms']:.1f}"}
                 for r in rows])
    write_results("live_words", {"queries": args.queries, "sizes": rows})


if __name__ == "__main__":
    main()
