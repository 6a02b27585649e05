"""Text query latency: words through TextSearch.search (tower + BM25 + fusion), beside the photo query.

Queries: test-split titles, attribute words ("navy blue", "tshirts"), an item plus words ("like this, but red"),
and photo queries (Searcher.search on catalogue paths) in the same run, interleaved. A breakdown pass times each
step of a words-only query: the tower's encoding, the learned (FAISS) search, BM25 and the fusion. The title and
attribute columns are the build's roles (attribute words: the values of the columns text evaluation asks one at a
time, lookalike.text.evaluation.text_columns: baseColour, subCategory and articleType for fashion).

    python -m bench.text_latency            # 200 titles, 100 attribute words, 100 item+words, 100 photos
    python -m bench.text_latency --quick    # 20 of each
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import print_table, summary_ms, timed, write_results
from lookalike.catalogue.description import CatalogueDescription
from lookalike.search.engine import Searcher
from lookalike.search.index import search as index_search
from lookalike.text.evaluation import text_columns
from lookalike.text.search import Query, TextSearch
from lookalike.text.tower import field_value

TARGET_P50_MS = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 queries of each kind: a smoke run")
    parser.add_argument("--n", type=int, default=100, help="queries of each kind (titles: twice as many)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = 20 if args.quick else args.n
    load_ms, searcher = timed(Searcher.load)
    text_load_ms, text = timed(TextSearch.load, searcher)
    rng = np.random.default_rng(args.seed)
    items = searcher.items
    test = np.flatnonzero(items["split"].to_numpy() == "test") if "split" in items else np.arange(len(items))
    roles = searcher.roles
    if roles.title is None:
        raise SystemExit("the build's catalogue names no title column: no title queries to time")
    columns = text_columns(CatalogueDescription(labels=roles.labels, attributes=roles.attributes, colour=roles.colour,
                                                words=roles.words, title=roles.title), items)
    attribute_columns = sorted({c for name in columns.single for c in columns.attributes[name]})
    titles = [t for t in (field_value(v) for v in items[roles.title].to_numpy()[test]) if t]
    titles = [titles[i] for i in rng.choice(len(titles), min(2 * n, len(titles)), replace=False)]
    labels = sorted({field_value(v).lower() for c in attribute_columns for v in items[c]} - {""})
    attributes = [labels[i] for i in rng.choice(len(labels), n)]
    anchors = items["id"].to_numpy()[rng.choice(len(items), n, replace=False)]
    colours = ["red", "black", "white", "blue", "green"]
    photos = [str(searcher.resolve_path(int(r))) for r in rng.choice(len(items), n, replace=False)]
    queries = {"title words": [Query(text=t) for t in titles],
               "attribute words": [Query(text=a) for a in attributes],
               "item + words": [Query(item_ids=[int(i)], text=colours[j % 5], text_weight=0.5)
                                for j, i in enumerate(anchors)]}
    for query in (queries["title words"][:5] + queries["item + words"][:5]):
        text.search(query, args.k)  # warm up
    samples: dict[str, list[float]] = {name: [] for name in [*queries, "photo (Searcher.search)"]}
    for i in range(max(len(v) for v in queries.values())):
        for name, batch in queries.items():
            if i < len(batch):
                samples[name].append(timed(text.search, batch[i], args.k)[0])
        if i < len(photos):
            samples["photo (Searcher.search)"].append(timed(searcher.search, photos[i], args.k)[0])
    results = {name: summary_ms(values) for name, values in samples.items()}
    words_only = samples["title words"] + samples["attribute words"]
    results["all words-only queries"] = summary_ms(words_only)
    ratio = round(results["all words-only queries"]["p50_ms"] / results["photo (Searcher.search)"]["p50_ms"], 3)
    steps = {name: [] for name in ("encode", "learned_search", "bm25", "fusion_and_metadata")}
    for query in queries["title words"] + queries["attribute words"]:
        ms, vector = timed(text.text_vector, query.text)
        steps["encode"].append(ms)
        steps["learned_search"].append(timed(index_search, searcher.index, vector[None], int(text.fusion["depth"]))[0])
        steps["bm25"].append(timed(text.lexical.search, query.text, int(text.fusion["depth"]))[0])
        total = timed(text.search, query, args.k)[0]
        steps["fusion_and_metadata"].append(max(0.0, total - sum(steps[s][-1] for s in
                                                                 ("encode", "learned_search", "bm25"))))
    breakdown = {name: summary_ms(values)["p50_ms"] for name, values in steps.items()}
    met = results["all words-only queries"]["p50_ms"] <= TARGET_P50_MS
    print_table([{"queries": name, "n": r["n"], "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"]}
                 for name, r in results.items()])
    print("per step p50 (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in breakdown.items()))
    print(f"words-only p50 {results['all words-only queries']['p50_ms']:.2f} ms: target <= {TARGET_P50_MS} ms "
          f"{'met' if met else 'NOT met'}; {ratio}x the photo query's p50 in the same run; gallery {len(items)} "
          f"items; load {load_ms / 1e3:.1f} s + text "
          f"{text_load_ms / 1e3:.2f} s")
    write_results("text_latency", {"results": results, "breakdown_p50_ms": breakdown, "k": args.k,
                                   "gallery": int(len(items)), "target_p50_ms": TARGET_P50_MS, "target_met": met,
                                   "words_only_to_photo_p50": ratio,
                                   "fusion": text.fusion, "load_s": round(load_ms / 1e3, 2),
                                   "text_load_s": round(text_load_ms / 1e3, 2),
                                   "finished": time.strftime("%H:%M:%S")})


if __name__ == "__main__":
    main()
