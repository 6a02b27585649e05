"""Shared helpers for the benchmarks: machine facts, percentiles, synthetic embeddings, result files."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import: keep the figures readable


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^Model name:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else "unknown"


def machine() -> dict:
    """What the figures were measured on; the load average shows whether others were busy."""
    import psutil

    return {
        "cpu_model": cpu_model(),
        "cpu_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def versions(*modules: str) -> dict:
    out = {}
    for name in modules:
        module = sys.modules.get(name) or __import__(name)
        out[name] = getattr(module, "__version__", "?")
    return out


def summary_ms(samples_ms: list[float] | np.ndarray) -> dict:
    values = np.asarray(samples_ms, dtype=np.float64)
    return {"n": int(values.size), "p50_ms": round(float(np.percentile(values, 50)), 3),
            "p95_ms": round(float(np.percentile(values, 95)), 3), "mean_ms": round(float(values.mean()), 3)}


def timed(function, *args, **kwargs) -> tuple[float, object]:
    """(milliseconds, result) of one call."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return (time.perf_counter() - started) * 1e3, result


def command_line() -> str:
    script = Path(sys.argv[0])
    if script.suffix == ".py" and script.resolve().parent == ROOT / "bench":
        return " ".join(["python -m", f"bench.{script.stem}", *sys.argv[1:]])
    return " ".join(sys.argv)


def write_results(name: str, data: dict) -> Path:
    """bench/results/<name>.json with the command and machine beside the figures."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {"benchmark": name, "command": command_line(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": machine(), **data}
    path.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_table(rows: list[dict], columns: list[str] | None = None, header: bool = True,
                min_width: int = 0) -> None:
    """A plain fixed-width table of dicts (missing cells blank)."""
    if not rows:
        return
    columns = columns or list(rows[0])
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), min_width, *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    if header:
        print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


# --- synthetic embeddings that look like the real ones ------------------------------------------------------


class EmbeddingSampler:
    """Perturbed real embeddings: a real row plus Gaussian noise shaped like the real within-class spread.

    The noise covariance is the pooled within-class covariance of the real embeddings (residuals from each
    label's mean), times ``noise_scale`` squared; the result is renormalised to unit length. With the
    default 0.5 a synthetic point sits about as far from its source row as real nearest neighbours are
    from each other, so the clusters, their anisotropy and the neighbour distances resemble the catalogue's.
    """

    def __init__(self, embeddings: np.ndarray, labels: np.ndarray, noise_scale: float = 0.5):
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        residuals = np.empty_like(self.embeddings)
        for label in np.unique(labels):
            rows = labels == label
            residuals[rows] = self.embeddings[rows] - self.embeddings[rows].mean(axis=0)
        covariance = residuals.T.astype(np.float64) @ residuals / len(residuals)
        covariance += 1e-8 * np.eye(covariance.shape[0])
        self.noise_factor = (np.linalg.cholesky(covariance).T * noise_scale).astype(np.float32)
        self.noise_scale = noise_scale
        self.within_class_norm = float(np.linalg.norm(residuals, axis=1).mean())

    @classmethod
    def from_artifacts(cls, artifacts: Path = ROOT / "artifacts", label_column: str | None = None,
                       noise_scale: float = 0.5) -> EmbeddingSampler:
        """From an artifacts folder's embeddings, the classes by ``label_column`` (default: the build's label,
        from its manifest; a build without one is one class)."""
        import pandas as pd

        from lookalike.catalogue.description import CatalogueRoles

        embeddings = np.load(artifacts / "embeddings.npy")
        if label_column is None:
            label_column = CatalogueRoles.from_manifest(json.loads((artifacts / "manifest.json").read_text())).label
        if label_column is None:
            labels = np.zeros(len(embeddings), dtype=np.int64)
        else:
            labels = pd.read_csv(artifacts / "items.csv", usecols=[label_column], dtype=str, keep_default_na=False
                                 )[label_column].to_numpy()
        return cls(embeddings, labels, noise_scale)

    def sample(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        """float32 (n, dim) unit vectors, deterministic for a seed."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.embeddings.shape[1]), dtype=np.float32)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            source = rng.integers(0, len(self.embeddings), stop - start)
            noise = rng.standard_normal((stop - start, self.embeddings.shape[1]), dtype=np.float32)
            block = self.embeddings[source] + noise @ self.noise_factor
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start:stop] = block
        return out
