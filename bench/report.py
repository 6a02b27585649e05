"""Print the results table (markdown) from bench/results/*.json: what bench/README.md shows.

    python -m bench.report            # the full runs
    python -m bench.report --quick    # the --quick smoke runs
"""

from __future__ import annotations

import argparse
import json

from bench.common import RESULTS


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def headline(suffix: str) -> str:
    rows = []
    if latency := load("latency" + suffix):
        group = latency["groups"]["all target queries"]
        command, load_avg = f"`{latency['command']}`", latency["machine"]["load_average_1m"]
        rows.append(["Query latency, Searcher.search, one image per call "
                     f"({group['queries']} queries: catalogue paths + non-catalogue bytes)",
                     f"p50 {group['search']['p50_ms']:.1f} ms, p95 {group['search']['p95_ms']:.1f} ms",
                     f"p50 <= 40 ms: {verdict(latency['targets_met']['p50_le_40ms'])}", command, load_avg])
        met = latency["targets_met"]
        ratio_met = met.get("p50_within_ratio_of_forward", met.get("p50_le_1.3x_forward"))  # older results: 1.3x
        rows.append(["Bare forward pass, same images, same run (compiled model, one array per call)",
                     f"p50 {group['forward']['p50_ms']:.1f} ms, p95 {group['forward']['p95_ms']:.1f} ms",
                     f"search p50 = {group['ratio_p50']}x forward, <= 1.2x: {verdict(ratio_met)}", command, load_avg])
        for name, values in latency["groups"].items():
            if name != "all target queries":
                rows.append([f"&nbsp;&nbsp;{name}", f"p50 {values['search']['p50_ms']:.1f} ms, p95 "
                             f"{values['search']['p95_ms']:.1f} ms (forward p50 {values['forward']['p50_ms']:.1f} ms)",
                             f"{values['ratio_p50']}x" + (" (not a target)" if "large" in name else ""),
                             command, load_avg])
        steps = ", ".join(f"{k} {v['p50_ms']:.2f}" for k, v in latency["steps"].items())
        rows.append(["&nbsp;&nbsp;per step p50 (ms)", steps, "", command, load_avg])
    if throughput := load("throughput" + suffix):
        best = throughput["best"]
        command, load_avg = f"`{throughput['command']}`", throughput["machine"]["load_average_1m"]
        rows.append([f"Embed throughput, predict_paths ({throughput['images']} images, batch "
                     f"{throughput['batch_size']}, best of {throughput['repeats']})",
                     f"{best['predict_paths (files)']} images/s",
                     f"{throughput['ratio']}x bare (per repeat {throughput.get('ratio_per_repeat', '?')}), "
                     f">= 0.9x: {verdict(throughput['target_met'])}", command, load_avg])
        rows.append(["Bare batched forward pass, arrays in memory, same images",
                     f"{best['bare forward (arrays in memory)']} images/s", "", command, load_avg])
    if index := load("index_scaling" + suffix):
        target = index["target_at_largest"]
        best = target["best"]
        command, load_avg = f"`{index['command']}`", index["machine"]["load_average_1m"]
        figure = (f"{best['index']} {best.get('knob', '')}: p50 {best['p50_ms']} ms, recall@10 {best['recall@10']}, "
                  f"build {best['build_s']} s, {best['size_mb']} MB" if best else "no config")
        rows.append([f"Index at {target['n']:,} vectors: fastest config with recall@10 >= 0.95", figure,
                     f"p50 <= 2 ms at recall@10 >= 0.95: {verdict(target['met'])}", command, load_avg])
    if pipeline := load("pipeline_time" + suffix):
        command, load_avg = f"`{pipeline['command']}`", pipeline["machine"]["load_average_1m"]
        for row in pipeline["rows"]:
            rows.append([row["run"], f"{row['seconds']} s", f"<= {row['target_s']} s: {verdict(row['met'])}",
                         command, load_avg])
    if memory := load("memory" + suffix):
        command, load_avg = f"`{memory['command']}`", memory["machine"]["load_average_1m"]
        for row in memory["rows"]:
            extra = f", {row['queries']} queries" if row["process"] == "API" else f"; {row['visit']}"
            rows.append([f"Peak RSS, {row['process']} process, {row['catalogue']}",
                         f"{row['peak_rss_mb']} MB (end {row['rss_end_mb']} MB{extra})", "", command, load_avg])
    return table(["Benchmark", "Figure", "Target", "Command", "load avg (1 min) at end"], rows)


def index_table(suffix: str) -> str:
    index = load("index_scaling" + suffix)
    if not index:
        return ""
    rows = [[f"{r['n']:,}", r["index"], r.get("knob", ""), r["build_s"], r["size_mb"], r["rss_delta_mb"],
             r["p50_ms"], r["p95_ms"], r["recall@10"]] for r in index["rows"]]
    notes = "".join(f"\n\nNote: {note}" for note in index["notes"])
    return table(["vectors", "index", "query knob", "build s", "serialised MB", "RSS delta MB", "p50 ms",
                  "p95 ms", "recall@10"], rows) + notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    suffix = "_quick" if args.quick else ""
    print(headline(suffix))
    if detail := index_table(suffix):
        print("\n" + detail)
    machines = {json.loads(p.read_text())["machine"]["cpu_model"] for p in RESULTS.glob(f"*{suffix}.json")}
    print(f"\nMachine: {', '.join(sorted(machines))}")


if __name__ == "__main__":
    main()
