"""Re-ranking without retraining, on a finished run: fuse the trained head with the pretrained features,
database-side augmentation (DBA) and query expansion (QE). One row per configuration.

Every configuration is scored on the validation split (val queries against train + val, the query itself
excluded, as the train stage's early stopping does) and on the test queries (against the whole gallery, as
the evaluate stage does). The configuration is *chosen on the validation split only*: the highest val P@5
among those with no val metric below the pretrained features' val metrics; the test column reports it.

    python -m study.fusion --project /tmp/lookalike-fashion-19k --out metrics/fashion-19k/fusion.csv
    python -m study.fusion --project .  --out metrics/fusion.csv          # the pinned 5k build

Configurations (T: the trained head's unit embedding; P: the unit pretrained features):
- ``weighted w``: cosine w * cos_T + (1 - w) * cos_P, i.e. the concatenation [sqrt(w) T, sqrt(1 - w) P];
  ``model.embedding: concat`` is w = 0.5.
- ``rrf k l``: reciprocal rank fusion, 1 / (k + rank_T) + l / (k + rank_P).
- ``interleave m``: the first m results of T, then P's best results not among them up to 5, then the rest
  in T's order (the first page mixes the two rankings; P@1 and the order beyond 5 stay T's).
- ``dba n`` / ``qe n`` on a vector configuration: each gallery vector is averaged with its n nearest
  gallery neighbours (neighbours drawn from rows that are never queries, so no query leaks into the
  gallery), then renormalised; each query is averaged with its n first results (itself excluded).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.catalogue.reading import read_table
from lookalike.evaluation.metrics import METRIC_NAMES, count_relevant, retrieval_metrics, unit_rows
from lookalike.model.colour import backbone_part
from study import project_catalogue

ScoreFn = Callable[[np.ndarray], np.ndarray]  # query positions (into the query list) -> (c, n_gallery) scores


def ranked_relevance(scores_for: ScoreFn, queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray,
                     depth: int, chunk: int = 256) -> np.ndarray:
    """bool (n_queries, depth): the i-th best gallery row (highest score; the query's own row left out)
    shares the query's label. ``gallery`` is sorted and holds every query."""
    own = np.searchsorted(gallery, queries)
    gallery_labels = labels[gallery]
    parts = []
    for start in range(0, len(queries), chunk):
        positions = np.arange(start, min(start + chunk, len(queries)))
        scores = np.array(scores_for(positions), dtype=np.float64)
        scores[np.arange(len(positions)), own[positions]] = -np.inf
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        parts.append(gallery_labels[top] == labels[queries[positions], None])
    return np.concatenate(parts)


def score_metrics(scores_for: ScoreFn, queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray) -> dict:
    n_relevant = count_relevant(labels[queries], labels[gallery])
    depth = int(max(5, n_relevant.max(initial=0)))
    return retrieval_metrics(ranked_relevance(scores_for, queries, gallery, labels, depth), n_relevant)


def fused_vectors(trained: np.ndarray, pretrained: np.ndarray, weight: float) -> np.ndarray:
    """[sqrt(w) T, sqrt(1 - w) P]: unit rows whose inner product is w cos_T + (1 - w) cos_P."""
    return np.hstack([np.sqrt(weight) * unit_rows(trained), np.sqrt(1.0 - weight) * unit_rows(pretrained)])


def database_augmentation(vectors: np.ndarray, candidates: np.ndarray, n: int, chunk: int = 1024) -> np.ndarray:
    """Each row averaged with its ``n`` most similar rows among ``candidates`` (itself excluded), renormalised."""
    if n == 0:
        return vectors
    out = np.empty_like(vectors)
    pool = vectors[candidates]
    for start in range(0, len(vectors), chunk):
        rows = np.arange(start, min(start + chunk, len(vectors)))
        scores = vectors[rows] @ pool.T
        scores[candidates[None, :] == rows[:, None]] = -np.inf
        top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        out[rows] = vectors[rows] + pool[top].sum(axis=1)
    return unit_rows(out)


def query_expansion(query_vectors: np.ndarray, gallery_vectors: np.ndarray, own: np.ndarray, n: int) -> np.ndarray:
    """Each query averaged with its ``n`` first results in ``gallery_vectors`` (its own row ``own`` left out)."""
    if n == 0:
        return query_vectors
    scores = query_vectors @ gallery_vectors.T
    scores[np.arange(len(own)), own] = -np.inf
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    return unit_rows(query_vectors + gallery_vectors[top].sum(axis=1))


def ranks(scores: np.ndarray) -> np.ndarray:
    """0-based rank of every column in each row, best (highest) first."""
    order = np.argsort(-scores, axis=1, kind="stable")
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.arange(scores.shape[1])[None, :].repeat(len(scores), 0), axis=1)
    return out


def interleaved_scores(t_scores: np.ndarray, p_scores: np.ndarray, first: int, page: int = 5) -> np.ndarray:
    """Scores whose order is: T's best ``first``, then P's best not among them until ``page`` rows, then the
    rest by T. Columns scored -inf in ``t_scores`` (the query itself) stay last and are never picked."""
    out = t_scores - t_scores[np.isfinite(t_scores)].max() - 1.0  # every T score below 0 ... (-inf stays)
    t_order = np.argsort(-t_scores, axis=1, kind="stable")
    p_order = np.argsort(-np.where(np.isfinite(t_scores), p_scores, -np.inf), axis=1, kind="stable")
    for row in range(len(t_scores)):
        picked = list(t_order[row, :first])
        for column in p_order[row]:
            if len(picked) >= page:
                break
            if column not in picked:
                picked.append(column)
        out[row, picked] = np.arange(2 * page, page, -1)[: len(picked)]  # above every other score, in order
    return out


def configurations() -> list[tuple[str, dict]]:
    rows = [("trained", {"weight": 1.0}), ("pretrained", {"weight": 0.0})]
    rows += [(f"weighted {w}", {"weight": w}) for w in (0.5, 0.6, 0.7, 0.8, 0.9)]
    rows += [(f"interleave {m}", {"interleave": m}) for m in (3, 4)]
    rows += [(f"rrf {k} {lam}", {"rrf": (k, lam)}) for k in (10, 60) for lam in (0.5, 1.0)]
    rows += [(f"trained dba {d} qe {q}", {"weight": 1.0, "dba": d, "qe": q}) for d, q in ((1, 0), (2, 0), (0, 1),
                                                                                         (0, 2), (1, 1), (2, 2))]
    rows += [(f"weighted {w} dba {d} qe {q}", {"weight": w, "dba": d, "qe": q})
             for w in (0.7, 0.8) for d, q in ((1, 1), (2, 2))]
    return rows


def evaluate(config: dict, trained: np.ndarray, pretrained: np.ndarray, labels: np.ndarray, queries: np.ndarray,
             gallery: np.ndarray, never_queries: np.ndarray) -> dict:
    """Metrics of one configuration for ``queries`` against ``gallery`` (sorted rows of the whole table)."""
    own = np.searchsorted(gallery, queries)
    if "rrf" in config:
        k, lam = config["rrf"]
        t, p = unit_rows(trained[gallery]), unit_rows(pretrained[gallery])

        def scores_for(positions: np.ndarray) -> np.ndarray:
            q = own[positions]
            return 1.0 / (k + ranks(t[q] @ t.T)) + lam / (k + ranks(p[q] @ p.T))
        return score_metrics(scores_for, queries, gallery, labels)
    if "interleave" in config:
        t, p = unit_rows(trained[gallery]), unit_rows(pretrained[gallery])

        def interleaved(positions: np.ndarray) -> np.ndarray:
            q = own[positions]
            t_scores = (t[q] @ t.T).astype(np.float64)
            t_scores[np.arange(len(q)), q] = -np.inf  # the query itself: never on the first page
            return interleaved_scores(t_scores, p[q] @ p.T, config["interleave"])
        return score_metrics(interleaved, queries, gallery, labels)
    vectors = fused_vectors(trained[gallery], pretrained[gallery], config["weight"])
    candidates = np.flatnonzero(np.isin(gallery, never_queries))
    gallery_vectors = database_augmentation(vectors, candidates, config.get("dba", 0))
    query_vectors = query_expansion(vectors[own], gallery_vectors, own, config.get("qe", 0))
    return score_metrics(lambda positions: query_vectors[positions] @ gallery_vectors.T, queries, gallery, labels)


def markdown(csv: Path) -> str:
    """The README's table of a written CSV: val P@5 / top-5 / MAP@R, every test metric, the choice."""
    table = pd.read_csv(csv)
    short = ("P@1", "P@5", "R@5", "mAP@5", "top-5", "MAP@R")
    lines = ["| configuration | val P@5 | val top-5 | val MAP@R | val: no metric below pretrained | "
             + " | ".join(f"test {s}" for s in short) + " |", "|---|" + "---|" * (4 + len(short))]
    for _, row in table.iterrows():
        name = f"**{row['configuration']}** (chosen on val)" if row["chosen_on_val"] else row["configuration"]
        lines.append(f"| {name} | {row['val_precision_at_5']:.3f} | {row['val_top5_accuracy']:.3f} | "
                     f"{row['val_map_at_r']:.3f} | {'yes' if row['val_no_regression'] else 'no'} | "
                     + " | ".join(f"{row[f'test_{m}']:.3f}" for m in METRIC_NAMES) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, help="print the markdown table of a CSV this wrote, and stop")
    parser.add_argument("--project", type=Path, help="a project whose pipeline has run")
    parser.add_argument("--out", type=Path, help="CSV, one row per configuration")
    parser.add_argument("--only", nargs="*", default=[], help="configurations starting with these (and the "
                        "trained and pretrained rows)")
    args = parser.parse_args()
    if args.table:
        print(markdown(args.table))
        return
    if args.project is None or args.out is None:
        parser.error("--project and --out are needed (or --table)")
    params, description = project_catalogue(args.project)
    items = read_table(args.project / "artifacts/items.csv")
    labels = items[description.label].to_numpy()
    split = items["split"].to_numpy()
    trained = np.load(args.project / "artifacts/embeddings.npy")
    pretrained = backbone_part(np.load(args.project / "artifacts/features.npy", mmap_mode="r")[0],
                               bool(params["model"].get("colour_descriptor")))
    everything = np.arange(len(items))
    protocols = {  # queries, gallery, rows that may be DBA neighbours (never a query of that protocol)
        "val": (np.flatnonzero(split == "val"), np.flatnonzero(np.isin(split, ("train", "val"))),
                np.flatnonzero(split == "train")),
        "test": (np.flatnonzero(split == "test"), everything, np.flatnonzero(split != "test")),
    }
    records = []
    for name, config in configurations():
        if args.only and name not in ("trained", "pretrained") and not name.startswith(tuple(args.only)):
            continue
        record = {"configuration": name}
        for protocol, (queries, gallery, never) in protocols.items():
            scores = evaluate(config, trained, pretrained, labels, queries, gallery, never)
            record.update({f"{protocol}_{m}": round(scores[m], 4) for m in METRIC_NAMES})
        records.append(record)
        print(f"{name:>28}: val P@5 {record['val_precision_at_5']:.4f} top-5 {record['val_top5_accuracy']:.4f} "
              f"MAP@R {record['val_map_at_r']:.4f} | test " + ", ".join(
                  f"{m} {record[f'test_{m}']:.4f}" for m in METRIC_NAMES), flush=True)
    table = pd.DataFrame(records)
    floor = table.loc[table["configuration"] == "pretrained", [f"val_{m}" for m in METRIC_NAMES]].iloc[0]
    table["val_no_regression"] = (table[[f"val_{m}" for m in METRIC_NAMES]] >= floor.to_numpy()).all(axis=1)
    eligible = table[table["val_no_regression"] & (table["configuration"] != "pretrained")]
    table["chosen_on_val"] = False
    if len(eligible):
        table.loc[eligible["val_precision_at_5"].idxmax(), "chosen_on_val"] = True
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    chosen = table[table["chosen_on_val"]]
    print("chosen on val: " + (chosen["configuration"].iloc[0] if len(chosen) else "none without a regression"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
