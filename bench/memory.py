"""Memory: peak resident memory of the search API process and of the Streamlit page process.

Each measured process is a fresh child; its peak is the kernel's high-water mark (VmHWM in
/proc/<pid>/status), which includes load-time transients. Measured with the pinned 5k catalogue and with
a 1M catalogue written the way the pipeline writes one (1M perturbed real embeddings, an index built by
lookalike.search.index.build_index, a 1M-row items.csv, image_paths.npy and manifest), loaded by Searcher.load.

  API:  Searcher.load + N queries (catalogue paths and in-memory non-catalogue photos, as bench.latency).
  page: `streamlit run app/app.py` headless on a free 127.0.0.1 port, /_stcore/health, then one visit in
        headless Chromium (Playwright) that uploads a photo and waits for the results; without Chromium
        only start-up + health is measured (noted in the results).

    python -m bench.memory                          # 5k and 1M (flat and ivf_flat indexes), about 6 min
    python -m bench.memory --quick                  # 5k only, API and page, 200 -> 20 queries
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from bench.common import ROOT, EmbeddingSampler, print_table, write_results

CHROMIUM = Path("/usr/bin/chromium")
MB = 1e6


def proc_status(pid: int) -> dict:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


# --- the API process ---------------------------------------------------------------------------------------

def child_api(artifacts: str, queries: int, seed: int) -> None:
    """Run inside the measured process: import, load, query, print one JSON line."""
    imported = time.perf_counter()
    import faiss

    from bench.latency import non_catalogue_photo
    from lookalike.search.engine import Searcher

    start = proc_status(os.getpid())["VmRSS"]
    began = time.perf_counter()
    import_s = began - imported
    searcher = Searcher.load(artifacts, root=ROOT)
    load_s = time.perf_counter() - began
    loaded = proc_status(os.getpid())["VmRSS"]
    # query photos: real catalogue images (the 1M catalogue reuses their files), half as non-catalogue variants
    real_paths = np.load(ROOT / "artifacts" / "image_paths.npy")
    rng = np.random.default_rng(seed)
    chosen = [str(ROOT / p) for p in rng.choice(real_paths, queries, replace=False)]
    sources = [p if i % 3 else non_catalogue_photo(p, i, rng) for i, p in enumerate(chosen)]
    samples = []
    for source in sources:
        samples.append(searcher.search(source, 5).total_ms)
    status = proc_status(os.getpid())
    held = {"embeddings": searcher.embeddings.nbytes, "image_paths": searcher.image_paths.nbytes,
            "items": int(searcher.items.memory_usage(deep=True).sum()),
            "index": int(faiss.serialize_index(searcher.index).size),
            "row_of_id": sys.getsizeof(searcher._row_of_id) + 2 * 32 * len(searcher._row_of_id)}  # table + ints
    print(json.dumps({"held_mb": {name: round(size / MB, 1) for name, size in held.items()},
                      "items": len(searcher.items), "index": searcher.manifest["params"]["index"]["type"],
                      "queries": queries, "import_s": round(import_s, 2), "load_s": round(load_s, 2),
                      "tensorflow_imported": "tensorflow" in sys.modules,
                      "query_p50_ms": round(float(np.percentile(samples, 50)), 2),
                      "rss_imports_mb": round(start / MB), "rss_loaded_mb": round(loaded / MB),
                      "rss_end_mb": round(status["VmRSS"] / MB), "peak_rss_mb": round(status["VmHWM"] / MB)}))


def measure_api(artifacts: Path, queries: int, seed: int) -> dict:
    command = [sys.executable, "-m", "bench.memory", "--child-api", str(artifacts), "--queries", str(queries),
               "--seed", str(seed)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"API child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the Streamlit page process ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _visit_and_upload(url: str, photo: Path, timeout_s: float) -> str:
    """One shopper visit: open the page, upload a photo, wait for the results. Returns what was done."""
    if not CHROMIUM.is_file():
        return f"start-up + health only ({CHROMIUM} not found)"
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        return "start-up + health only (playwright not installed)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1500})
            page.set_default_timeout(timeout_s * 1e3)
            expect.set_options(timeout=timeout_s * 1e3)
            page.goto(url)
            expect(page.get_by_role("heading", name="Lookalike")).to_be_visible()
            page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(photo))
            expect(page.get_by_role("heading", name="Lookalikes from the catalogue")).to_be_visible()
            expect(page.locator('.st-key-results [class*="st-key-result-"]')).to_have_count(5)
        finally:
            browser.close()
    return "start-up + health + one visit with an upload (results shown)"


def measure_app(artifacts: Path, timeout_s: float) -> dict:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "LOOKALIKE_ARTIFACTS": str(artifacts)}
    command = [sys.executable, "-m", "streamlit", "run", "app/app.py", "--server.address", "127.0.0.1",
               "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        began = time.perf_counter()
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise SystemExit(f"streamlit exited with {process.returncode}:\n{log.read().decode()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
                    if response.read().strip() == b"ok":
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.perf_counter() - began > timeout_s:
                raise SystemExit(f"streamlit did not answer on {url} within {timeout_s:.0f} s")
            time.sleep(0.25)
        healthy_s = time.perf_counter() - began
        started = proc_status(process.pid)
        photo = ROOT / str(np.load(ROOT / "artifacts" / "image_paths.npy")[0])
        try:
            visit = _visit_and_upload(url, photo.resolve(), timeout_s)
        except Exception as error:  # noqa: BLE001  (a failed visit is reported, the start-up figure kept)
            visit = f"visit failed: {type(error).__name__}: {str(error)[:200]}"
        status = proc_status(process.pid)
        return {"visit": visit, "healthy_after_s": round(healthy_s, 1),
                "rss_after_start_mb": round(started["VmRSS"] / MB), "rss_end_mb": round(status["VmRSS"] / MB),
                "peak_rss_mb": round(status["VmHWM"] / MB), "seconds": round(time.perf_counter() - began, 1)}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# --- a large catalogue, written as the pipeline writes one -------------------------------------------------

def write_catalogue(directory: Path, n: int, index_params: dict, seed: int) -> float:
    """A 1M-style artifacts folder from the pinned one: returns the index build seconds."""
    from lookalike.artifacts import make_manifest, write_json, write_npy
    from lookalike.catalogue.reading import read_table, write_table
    from lookalike.search.index import build_index, save_index

    source = ROOT / "artifacts"
    manifest = json.loads((source / "manifest.json").read_text())
    directory.mkdir(parents=True, exist_ok=True)
    embeddings = EmbeddingSampler.from_artifacts(source).sample(n, seed=seed)
    write_npy(directory / "embeddings.npy", embeddings)
    real_items = read_table(source / "items.csv")
    rows = np.arange(n) % len(real_items)
    items = real_items.iloc[rows].reset_index(drop=True)
    items["id"] = np.arange(n, dtype=np.int64) + 1_000_000  # unique ids, as long as a large catalogue's
    (directory / "items.csv").write_bytes(write_table(items))
    del items
    real_paths = np.load(source / "image_paths.npy")  # the same photo files again: same string lengths
    write_npy(directory / "image_paths.npy", real_paths[rows])
    copied = {name: entry["path"] for name, entry in manifest["files"].items()
              if name not in ("embeddings", "image_paths", "items", "index")}  # the models, as they are
    for file in copied.values():
        shutil.copyfile(source / file, directory / file)
    began = time.perf_counter()
    index = build_index(embeddings, index_params, seed=seed)
    build_s = time.perf_counter() - began
    save_index(index, directory / "faiss.index")
    del index, embeddings
    files = {name: directory / file for name, file in (
        ("embeddings", "embeddings.npy"), ("image_paths", "image_paths.npy"), ("items", "items.csv"),
        ("index", "faiss.index"), *copied.items())}
    params = {**manifest["params"], "index": index_params}
    counts = {"count": n, "dimension": int(manifest["dimension"])}  # the pinned build's, whatever its params
    write_json(directory / "manifest.json", make_manifest(files, counts, params))
    return build_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5k only, 20 queries: a smoke run")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--large", type=int, default=1_000_000, help="size of the projected catalogue")
    parser.add_argument("--large-index", nargs="+", default=["flat", "ivf_flat"],
                        help="index types for the large catalogue (flat is params.yaml's default)")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--no-app", action="store_true", help="skip the Streamlit page")
    parser.add_argument("--app-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child-api", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_api:
        child_api(args.child_api, args.queries, args.seed)
        return
    if args.quick:
        args.queries = 20

    began = time.perf_counter()
    app_present = (ROOT / "app" / "app.py").is_file() and not args.no_app
    rows = []

    def record(catalogue: str, process: str, figures: dict) -> None:
        rows.append({"catalogue": catalogue, "process": process, **figures})
        print_table([rows[-1]], ["catalogue", "process", "peak_rss_mb", "rss_end_mb", "import_s", "load_s",
                                  "query_p50_ms", "healthy_after_s"])

    pinned = ROOT / "artifacts"
    record("5k pinned (flat)", "API", measure_api(pinned, args.queries, args.seed))
    if app_present:
        record("5k pinned (flat)", "page", measure_app(pinned, args.app_timeout))
    builds = {}
    if not args.quick:
        base = json.loads((pinned / "manifest.json").read_text())["params"]["index"]
        for kind in args.large_index:
            index_params = {**base, "type": kind, "nlist": args.nlist, "nprobe": args.nprobe}
            with tempfile.TemporaryDirectory(prefix="lookalike-bench-memory-") as tmp:
                print(f"\nwriting a {args.large}-item catalogue with a {kind} index ...", flush=True)
                written = time.perf_counter()
                builds[kind] = write_catalogue(Path(tmp), args.large, index_params, args.seed)
                print(f"written in {time.perf_counter() - written:.0f} s (index build {builds[kind]:.0f} s)")
                name = f"{args.large // 1000}k synthetic ({kind})" if args.large < 1e6 else \
                    f"{args.large / 1e6:g}M synthetic ({kind})"
                record(name, "API", measure_api(Path(tmp), args.queries, args.seed))
                if app_present:
                    record(name, "page", measure_app(Path(tmp), args.app_timeout))
    print()
    print_table(rows, ["catalogue", "process", "peak_rss_mb", "rss_end_mb", "import_s", "load_s", "query_p50_ms",
                       "healthy_after_s", "tensorflow_imported", "visit"])
    if not app_present:
        print("(page not measured: " + ("--no-app" if args.no_app else "app/app.py not found") + ")")
    custom = args.large != 1_000_000 or args.large_index != ["flat", "ivf_flat"] or args.no_app
    write_results("memory_quick" if args.quick else "memory_custom" if custom else "memory", {
        "queries": args.queries, "rows": rows, "large_index_build_s": builds, "app_measured": app_present,
        "seconds": round(time.perf_counter() - began, 1)})


if __name__ == "__main__":
    main()
