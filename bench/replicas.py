"""Replicas: image search with 1, 2 and 4 `lookalike serve` processes on one PostgreSQL journal, and what following
the journal costs each replica.

    python -m bench.replicas            # full run: 1, 2 and 4 replicas, concurrency 8 and 16 (about 10 min)
    python -m bench.replicas --quick    # smoke run: 1 and 2 replicas, concurrency 8, short windows (about 2 min)

Starts a throw-away PostgreSQL cluster (tests/pg_cluster.py: initdb in a folder under /tmp, a Unix socket only, run
as the postgres user when we are root) and one journal database in it, then replicas: each a separate
`python -m lookalike.cli serve --artifacts <build> --live-db <that journal> --port P` on a free 127.0.0.1 port,
serving the build the artifacts folder publishes (resolved once at the start, so a pipeline that publishes a new
build meanwhile changes nothing here). Nothing outside the scratch folder and the throw-away cluster is written
(never live/live.db). Parts:

1. throughput: image search at concurrency 8 (and 16) from a client-side round-robin balancer (a thread per
   client, one keep-alive connection per replica per client, each request encoded once: bench/service.py's lean
   client); requests/s, p50, p99, the replicas' CPU ms per request, and their total resident memory (RSS, and PSS,
   which counts the pages the processes share once). Each configuration twice: "up" as replicas are started (1, 2,
   4) and "down" as they are stopped again (4, 2, 1), so a drift of the machine's load shows.
2. following the journal, at each configuration of the way down: CPU seconds per minute of each replica over an
   idle window (and of the PostgreSQL cluster); then, with 2 or more, a writer putting items through replica 0 at
   a fixed rate, twice: once with nothing else asking the replicas anything (the CPU the OTHER replicas spend
   applying the changes, over their idle rate, per applied change), once with replica 1 asked for each new item,
   without min_seq, every 10 ms (the lag from the put's answer until replica 1 serves it: p50, p99).

On 2 cores more replicas cannot add CPU: part 1 shows what they cost. Fixed counts and windows; stops by itself;
replicas and the cluster are stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench.common import ROOT, write_results
from bench.service import KEY, RawHttp, cpu_seconds, free_port, item_metadata, percentiles, run_clients

PHOTOS = 60  # query photos: catalogue photos at evenly spaced rows (no randomness to seed)
SETTLE_S = 1.0  # after the last put of a CPU window: four of the replicas' follow rounds (0.25 s)
TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # the kernel counts CPU time in these steps (10 ms)


@dataclasses.dataclass(frozen=True)
class Plan:
    counts: tuple[int, ...]  # replica configurations
    levels: tuple[int, ...]  # client concurrency
    requests: int  # timed searches per configuration and concurrency, spread evenly over the clients
    warmup: int  # searches each new replica answers before anything is timed
    idle_s: float  # the idle window
    write_rate: float  # puts per second through replica 0
    write_s: float  # each writer window (CPU, then lag)
    poll_s: float  # how often replica 1 is asked for the newest item
    journal_writes: int  # appends straight into the journal (no server), per writer-thread count


FULL = Plan(counts=(1, 2, 4), levels=(8, 16), requests=800, warmup=10, idle_s=60, write_rate=5, write_s=60,
            poll_s=0.01, journal_writes=2000)
QUICK = Plan(counts=(1, 2), levels=(8,), requests=120, warmup=4, idle_s=20, write_rate=5, write_s=10, poll_s=0.01,
             journal_writes=200)
JOURNAL_THREADS = (1, 4)  # writers appending at once (every append takes the journal's one write lock)


# ---------------------------------------------------------------------------------------------- processes


@contextlib.contextmanager
def pg_journal() -> Iterator[tuple[str, psutil.Process]]:
    """A throw-away cluster (tests/pg_cluster.py, reused), the URL of a new database in it, and its postmaster."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_cluster import find_pg_bin, running_cluster

    if find_pg_bin() is None:
        raise SystemExit("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on $PATH): "
                         "apt-get install postgresql")
    with contextlib.contextmanager(running_cluster)() as cluster:
        postmaster = psutil.Process(int((cluster.data / "postmaster.pid").read_text().split()[0]))
        yield cluster.new_database(), postmaster


class Replica:
    """One `lookalike serve` process on its own port; its output goes to a log in the scratch folder."""

    def __init__(self, index: int, artifacts: Path, url: str, scratch: Path):
        self.index, self.port = index, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = scratch / f"replica-{index}.log"
        env = {**os.environ, "LOOKALIKE_API_KEY": KEY, "PYTHONPATH": str(ROOT),
               "LOOKALIKE_SECRETS_DIR": str(scratch / "no-secrets")}  # no mounted secrets (/run/secrets)
        with self.log.open("ab") as log:
            # a session of its own: Ctrl-C reaches this process only, which then stops the replicas in order
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lookalike.cli", "serve", "--artifacts", str(artifacts), "--live-db", url,
                 "--port", str(self.port), "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.ps = psutil.Process(self.process.pid)

    def wait_ready(self, seconds: float = 300) -> dict:
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"replica {self.index} exited during start-up:\n{self.log.read_text()[-3000:]}")
            try:
                response = httpx.get(f"{self.url}/readyz", timeout=5)
                if response.status_code == 200:
                    return response.json()
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"replica {self.index} not ready in {seconds:.0f} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def cpu(self) -> float:
        return cpu_seconds(self.ps)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def postgres_cpu(postmaster: psutil.Process) -> float:
    """CPU seconds of the whole cluster so far: the postmaster, the backends it has reaped, the ones alive."""
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            total += cpu_seconds(child)
    return total


def memory_mb(replicas: list[Replica]) -> dict:
    rss = [r.ps.memory_info().rss / 2**20 for r in replicas]
    pss = [r.ps.memory_full_info().pss / 2**20 for r in replicas]
    return {"rss_total_mb": round(sum(rss), 1), "pss_total_mb": round(sum(pss), 1),
            "rss_each_mb": [round(x, 1) for x in rss]}


def load1() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------------------------------- part 1


def warm(replica: Replica, photos: list[bytes], count: int) -> None:
    client = RawHttp(replica.port)
    try:
        for i in range(count):
            status = client.call(RawHttp.search_request(replica.port, photos[i % len(photos)]))
            if status != 200:
                raise SystemExit(f"replica {replica.index}: warm-up search answered {status}")
    finally:
        client.close()


def throughput(replicas: list[Replica], photos: list[bytes], level: int, requests: int) -> dict:
    """Round-robin over the replicas: client c's i-th request goes to replica (c + i) % n."""
    n, each = len(replicas), max(1, requests // level)
    encoded = [[RawHttp.search_request(r.port, photo) for photo in photos] for r in replicas]
    connections = [[RawHttp(r.port) for r in replicas] for _ in range(level)]

    def call(c: int, i: int) -> bool:
        target = (c + i) % n
        return connections[c][target].call(encoded[target][(c * 7 + i) % len(photos)]) == 200

    try:
        run_clients(level, n, call)  # every connection used once before the clock starts
        cpu_before = sum(r.cpu() for r in replicas)
        rate, latencies, errors = run_clients(level, each, call)
        cpu = sum(r.cpu() for r in replicas) - cpu_before
    finally:
        for row in connections:
            for client in row:
                client.close()
    return {"replicas": n, "concurrency": level, "requests": level * each, "requests_per_s": round(rate, 1),
            **percentiles(latencies), "errors": errors,
            "replicas_cpu_ms_per_request": round(cpu / (level * each) * 1e3, 2), **memory_mb(replicas),
            "load_average_1m": load1()}


# ---------------------------------------------------------------------------------------------- part 2


def idle(replicas: list[Replica], postmaster: psutil.Process, seconds: float) -> dict:
    before, pg_before = [r.cpu() for r in replicas], postgres_cpu(postmaster)
    started = time.perf_counter()
    time.sleep(seconds)
    window = time.perf_counter() - started
    per_min = [(r.cpu() - b) / window * 60 for r, b in zip(replicas, before, strict=True)]
    return {"replicas": len(replicas), "window_s": round(window, 1),
            "cpu_s_per_min_each": [round(x, 3) for x in per_min],
            "cpu_s_per_min_mean": round(float(np.mean(per_min)), 3),
            "postgres_cpu_s_per_min": round((postgres_cpu(postmaster) - pg_before) / window * 60, 3),
            "load_average_1m": load1()}


class Writer:
    """Puts through replica 0 at a fixed rate (a fixed count), each answered item handed to ``answered``."""

    def __init__(self, replica: Replica, photos: list[bytes], meta: dict[str, str]):
        self.client = httpx.Client(base_url=replica.url, timeout=60, headers={"X-API-Key": KEY})
        self.photos, self.meta = photos, meta

    def run(self, tag: str, count: int, rate: float, answered: queue.Queue | None = None) -> dict:
        latencies, slip = [], 0.0
        start = time.perf_counter()
        for i in range(count):
            due = start + i / rate
            slip = max(slip, time.perf_counter() - due)
            time.sleep(max(0.0, due - time.perf_counter()))
            item_id = f"REPLICAS-{tag}-{i}"
            sent = time.perf_counter()
            response = self.client.put(f"/v1/items/{item_id}", data=self.meta,
                                       files={"image": ("p.jpg", self.photos[i % len(self.photos)], "image/jpeg")})
            done = time.perf_counter()
            if response.status_code != 201:
                raise SystemExit(f"put {item_id} answered {response.status_code}: {response.text[:300]}")
            latencies.append(done - sent)
            if answered is not None:
                answered.put((item_id, done))
        return {"puts": count, "rate_per_s": rate, "put": percentiles(latencies),
                "most_behind_schedule_ms": round(slip * 1e3, 1), "last_id": f"REPLICAS-{tag}-{count - 1}"}

    def close(self) -> None:
        self.client.close()


def served(replica: Replica, item_id: str) -> bool:
    response = httpx.get(f"{replica.url}/v1/items/{item_id}", timeout=30)
    if response.status_code not in (200, 404):
        raise SystemExit(f"replica {replica.index}: GET {item_id} answered {response.status_code}")
    return response.status_code == 200


def wait_served(replicas: list[Replica], item_id: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    for replica in replicas:
        while not served(replica, item_id):
            if time.monotonic() > deadline:
                raise SystemExit(f"replica {replica.index} did not serve {item_id} within {seconds:.0f} s")
            time.sleep(0.05)


def apply_cost(replicas: list[Replica], writer: Writer, idle_row: dict, plan: Plan) -> dict:
    """The writer alone, nothing else asking the replicas anything; the window ends SETTLE_S after the last put's
    answer (several follow rounds), and only then is every other replica checked to serve the last put."""
    count = int(plan.write_rate * plan.write_s)
    before = [r.cpu() for r in replicas]
    started = time.perf_counter()
    result = writer.run(f"cpu{len(replicas)}", count, plan.write_rate)
    time.sleep(SETTLE_S)
    window = time.perf_counter() - started
    used = [r.cpu() - b for r, b in zip(replicas, before, strict=True)]
    wait_served(replicas[1:], result.pop("last_id"))
    over_idle = [u - rate / 60 * window for u, rate in zip(used, idle_row["cpu_s_per_min_each"], strict=True)]
    return {"replicas": len(replicas), **result, "window_s": round(window, 1),
            "others_cpu_s_per_min": round(float(np.mean(used[1:])) / window * 60, 3),
            "others_cpu_ms_per_change_over_idle": round(float(np.mean(over_idle[1:])) / count * 1e3, 3),
            "others_cpu_ms_per_change_each": [round(x / count * 1e3, 3) for x in over_idle[1:]],
            "cpu_ms_per_change_resolution": round(TICK_S / count * 1e3, 3),
            "replica0_cpu_ms_per_put_over_idle": round(over_idle[0] / count * 1e3, 2),
            "load_average_1m": load1()}


def lag(replicas: list[Replica], writer: Writer, plan: Plan) -> dict:
    """The writer again, replica 1 asked for each answered item (no min_seq) every ``poll_s`` until it serves it."""
    count = int(plan.write_rate * plan.write_s)
    answered: queue.Queue = queue.Queue()
    lags, polls, failures = [], [0], []
    follower = replicas[1]

    def poller() -> None:
        client = RawHttp(follower.port)
        try:
            for _ in range(count):
                while not finished.is_set():
                    with contextlib.suppress(queue.Empty):
                        item_id, done = answered.get(timeout=0.5)
                        break
                else:
                    return  # the writer stopped early (it failed, or Ctrl-C)
                request = RawHttp.get_request(follower.port, f"/v1/items/{item_id}")
                deadline = time.monotonic() + 60
                while not finished.is_set():
                    status = client.call(request)
                    polls[0] += 1
                    if status == 200:
                        lags.append(time.perf_counter() - done)
                        break
                    if status != 404 or time.monotonic() > deadline:
                        failures.append(f"{item_id}: {status}")
                        break
                    time.sleep(plan.poll_s)
        except Exception as error:  # noqa: BLE001 - reported below, with the writer's result
            failures.append(repr(error))
        finally:
            client.close()

    finished = threading.Event()
    thread = threading.Thread(target=poller)
    thread.start()
    try:
        result = writer.run(f"lag{len(replicas)}", count, plan.write_rate, answered)
        thread.join(120)  # the last item's lag
    finally:
        finished.set()
        thread.join()
    if failures:
        raise SystemExit(f"replica 1 did not serve puts through replica 0: {failures[:3]}")
    ms = np.array(lags) * 1e3
    result.pop("last_id")
    return {"replicas": len(replicas), **result, "poll_every_ms": plan.poll_s * 1e3, "polls": polls[0],
            "lag_p50_ms": round(float(np.percentile(ms, 50)), 1), "lag_p99_ms": round(float(np.percentile(ms, 99)), 1),
            "lag_max_ms": round(float(ms.max()), 1), "load_average_1m": load1()}


# ---------------------------------------------------------------------------------------------- output


def journal_throughput(url: str, photos: list[bytes], meta: dict[str, str], threads: int, count: int) -> dict:
    """Appends of a put (a 256-d vector, a catalogue photo, the metadata) straight into a PostgreSQL journal from
    ``threads`` threads: the ceiling the journal puts on writes, whatever the number of replicas."""
    from lookalike.live.pg_store import PostgresStore

    store = PostgresStore(url)
    vector = np.ones(256, np.float32) / 16.0
    seconds: list[float] = []
    lock = threading.Lock()

    def write(worker: int) -> None:
        for n in range(worker, count, threads):
            began = time.perf_counter()
            store.append("put", f"J{threads}-{n}", "bench", "bench", vector, meta, photos[n % len(photos)],
                         "image/jpeg")
            with lock:
                seconds.append(time.perf_counter() - began)

    began = time.perf_counter()
    workers = [threading.Thread(target=write, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    took = time.perf_counter() - began
    store.close()
    return {"threads": threads, "writes": count, "writes_per_s": round(count / took, 1),
            **percentiles(seconds), "photo_kb_mean": round(float(np.mean([len(p) for p in photos])) / 1024, 1),
            "load_average_1m": load1()}


def markdown(rows: list[dict], columns: dict[str, str]) -> None:
    """A markdown table: ``columns`` maps a row key (or a function of the row) to its heading."""
    print("| " + " | ".join(columns.values()) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [key(row) if callable(key) else row.get(key, "") for key in columns]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(flush=True)


def run(plan: Plan, build: Path, url: str, postmaster: psutil.Process, scratch: Path, photos: list[bytes],
        meta: dict[str, str], replicas: list[Replica]) -> dict:
    """Both parts; ``replicas`` holds the replicas running at any moment (the caller stops them)."""
    started = time.perf_counter()
    part1, idle_rows, write_rows, lag_rows = [], [], [], []

    def measure(round_: str) -> None:
        items = replicas[0].wait_ready()["items"]
        for level in plan.levels:
            row = {"round": round_, **throughput(replicas, photos, level, plan.requests),
                   "catalogue_items": items}
            part1.append(row)
            print(row, flush=True)

    for count in plan.counts:  # up: 1, 2, 4
        new = []
        for index in range(len(replicas), count):
            new.append(Replica(index, build, url, scratch))
            replicas.append(new[-1])  # the caller stops every replica that was started
        for replica in new:
            replica.wait_ready()
        for replica in new:
            warm(replica, photos, plan.warmup)
        print(f"{count} replica(s) ready ({time.perf_counter() - started:.0f} s in)", flush=True)
        measure("up")
    follows = httpx.get(f"{replicas[0].url}/v1/stats", timeout=30).json()["serving"]["follows_journal_every_s"]
    writer = Writer(replicas[0], photos, meta)
    try:
        for count in sorted(plan.counts, reverse=True):  # down: 4, 2, 1
            while len(replicas) > count:
                replicas.pop().stop()
            measure("down")  # the same configurations in the reverse order: a drift shows as a difference
            time.sleep(2)
            idle_rows.append(idle(replicas, postmaster, plan.idle_s))
            print(idle_rows[-1], flush=True)
            if count >= 2:
                write_rows.append(apply_cost(replicas, writer, idle_rows[-1], plan))
                print(write_rows[-1], flush=True)
                lag_rows.append(lag(replicas, writer, plan))
                print(lag_rows[-1], flush=True)
    finally:
        writer.close()
    for replica in reversed(replicas):  # the journal alone, nothing else running
        replica.stop()
    replicas.clear()
    journal_rows = []
    for threads in JOURNAL_THREADS:
        journal_rows.append(journal_throughput(url, photos, meta, threads, plan.journal_writes))
        print(journal_rows[-1], flush=True)
    for row in part1:
        one = next(r for r in part1 if r["replicas"] == 1 and r["concurrency"] == row["concurrency"]
                   and r["round"] == row["round"])
        row["vs_one_replica"] = round(row["requests_per_s"] / one["requests_per_s"], 3)
    return {"follows_journal_every_s": follows, "throughput": part1, "idle": idle_rows, "applying": write_rows,
            "lag": lag_rows, "journal": journal_rows, "seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas",
                                     description=__doc__.split("\n\n")[0].replace("\n", " "),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--artifacts", default=str(ROOT / "artifacts"),
                        help="artifacts folder; its published build is served (default: the repository's)")
    parser.add_argument("--quick", action="store_true",
                        help="1 and 2 replicas, concurrency 8, 20 s idle and 10 s writer windows: a smoke run")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up as Ctrl-C does

    from lookalike.artifacts import resolve_build
    from lookalike.search.engine import Searcher

    build, manifest = resolve_build(args.artifacts)
    searcher = Searcher.load(build, root=ROOT, threads=1)
    rows = np.linspace(0, len(searcher.items) - 1, PHOTOS).astype(int)
    photos = [Path(searcher.resolve_path(int(r))).read_bytes() for r in rows]
    meta = item_metadata(searcher)
    del searcher
    print(f"build {manifest['build_id']} ({build.relative_to(ROOT) if build.is_relative_to(ROOT) else build}), "
          f"{len(photos)} query photos; replicas {plan.counts}, concurrency {plan.levels}", flush=True)

    scratch = Path(tempfile.mkdtemp(prefix="lookalike-bench-replicas-"))
    replicas: list[Replica] = []
    report: dict = {"quick": args.quick, "build_id": manifest["build_id"], "artifacts": str(build),
                    "plan": dataclasses.asdict(plan), "scratch": str(scratch)}
    try:
        with pg_journal() as (url, postmaster):
            try:
                report.update(run(plan, build, url, postmaster, scratch, photos, meta, replicas))
            finally:  # the replicas first, then (leaving the with) the cluster
                for replica in reversed(replicas):
                    replica.stop()
    except KeyboardInterrupt:
        print("interrupted: the replicas and the cluster are stopped", file=sys.stderr)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    except BaseException:
        print(f"failed: the replicas and the cluster are stopped; their logs are kept in {scratch}", file=sys.stderr)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    del report["scratch"]

    print("\nImage search, round-robin over the replicas (one PostgreSQL journal)\n")
    markdown(report["throughput"], {
        "round": "round", "replicas": "replicas", "concurrency": "concurrency", "requests": "requests",
        "requests_per_s": "requests/s",
        "vs_one_replica": "vs 1 replica", "p50_ms": "p50 ms", "p99_ms": "p99 ms", "errors": "errors",
        "replicas_cpu_ms_per_request": "replicas' CPU ms/request", "rss_total_mb": "RSS total MB",
        "pss_total_mb": "PSS total MB", "load_average_1m": "load (1 min)"})
    print("Following the journal, idle (no requests)\n")
    markdown(report["idle"], {
        "replicas": "replicas", "window_s": "window s", "cpu_s_per_min_mean": "CPU s/min per replica (mean)",
        (lambda r: ", ".join(map(str, r["cpu_s_per_min_each"]))): "each",
        "postgres_cpu_s_per_min": "PostgreSQL CPU s/min", "load_average_1m": "load (1 min)"})
    if report["applying"]:
        print(f"Puts through replica 0 at {plan.write_rate:g}/s: what the other replicas spend applying them\n")
        markdown(report["applying"], {
            "replicas": "replicas", "puts": "puts", (lambda r: r["put"]["p50_ms"]): "put p50 ms",
            "others_cpu_s_per_min": "others' CPU s/min", "others_cpu_ms_per_change_over_idle":
                "others' CPU ms per applied change (over idle)",
            "cpu_ms_per_change_resolution": "resolution ms (one CPU tick / puts)",
            "replica0_cpu_ms_per_put_over_idle": "replica 0 CPU ms per put (over idle)",
            "load_average_1m": "load (1 min)"})
        print(f"Lag: put answered by replica 0 until replica 1 serves the item without min_seq "
              f"(polled every {plan.poll_s * 1e3:g} ms; it follows the journal every "
              f"{report['follows_journal_every_s']} s)\n")
        markdown(report["lag"], {
            "replicas": "replicas", "puts": "puts", (lambda r: r["put"]["p50_ms"]): "put p50 ms",
            "lag_p50_ms": "lag p50 ms", "lag_p99_ms": "lag p99 ms", "lag_max_ms": "lag max ms",
            "load_average_1m": "load (1 min)"})
    print("The journal alone: puts appended straight into PostgreSQL (fsync on commit), no server\n")
    markdown(report["journal"], {
        "threads": "writer threads", "writes": "writes", "writes_per_s": "writes/s", "p50_ms": "p50 ms",
        "p99_ms": "p99 ms", "photo_kb_mean": "photo KB (mean)", "load_average_1m": "load (1 min)"})
    write_results("replicas_quick" if args.quick else "replicas", report)
    errors = sum(r["errors"] for r in report["throughput"])
    if errors:
        print(f"{errors} searches failed", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
