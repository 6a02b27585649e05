"""Service benchmark: HTTP on loopback next to the in-process library, live adds, and a bounded mixed load.

    .venv/bin/python bench/service.py            # full run (~15 min on 2 cores), results in bench/results/
    .venv/bin/python bench/service.py --quick    # seconds-long smoke version of every part

Starts its own `lookalike serve` on a free 127.0.0.1 port against the pinned build (--artifacts) with
a scratch live database (never live/live.db), so it changes nothing. Parts:

1. throughput: image search and "more like this" at concurrency 1, 4 and 16 over HTTP (a thread per
   client, one keep-alive connection each, requests encoded once: the client costs the shared 2 cores
   almost nothing; httpx as well at 16), and the same calls on an in-process LiveCatalogue in this
   process: requests/s, p50, p99, and CPU ms per request of the server and of this process.
2. adds: add latency p50/p99 over HTTP (decode, embed, near-duplicates, durable write); then N live adds
   (10,000 in the full run) and the server's resident memory and search latency before and after.
3. load: a fixed-duration mix (searches, more-like-this, adds, removes) from several clients; counts
   errors, checks every acknowledged write is visible afterwards, and samples the server's memory.
4. workers: image search at concurrency 4 and 8 against `lookalike serve --workers 1` and `--workers 2`
   (the same lean client), requests/s, p50, p99 and the servers' total resident memory
   (`--workers-only` runs this part alone).
Every part has fixed counts or durations and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEY = "bench-key-0123456789abcdef"


def item_metadata(searcher) -> dict[str, str]:
    """The metadata fields the benchmark's adds send: the build's own columns (any catalogue's), with the
    values of its first item that has a label (a write must give it), missing values left out, titled
    "Bench item"."""
    import pandas as pd

    from lookalike.catalogue.reading import missing

    roles = searcher.roles
    for row in range(len(searcher.items)):
        fields = pd.Series(searcher.metadata(row), dtype="string")
        metadata = fields[~missing(fields)].to_dict()
        if roles.label is None or roles.label in metadata:
            break
    if roles.title:
        metadata[roles.title] = "Bench item"
    return metadata


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, artifacts: Path, db: Path, workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LOOKALIKE_API_KEY": KEY}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lookalike.cli", "serve", "--artifacts", str(artifacts), "--live-db", str(db),
             "--port", str(self.port), "--log-level", "warning", "--workers", str(workers)], cwd=ROOT, env=env)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise SystemExit("the server exited during start-up")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not get ready in 300 s")
            time.sleep(0.5)
        self.ps = psutil.Process(self.process.pid)

    def rss_mb(self) -> float:
        """The server's resident memory: the process and, with --workers, its worker processes."""
        processes = [self.ps, *self.ps.children(recursive=True)]
        return sum(p.memory_info().rss for p in processes if p.is_running()) / 2**20

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_clients(concurrency: int, requests_each: int, call) -> tuple[float, list[float], int]:
    """``call(client_index, i)`` returns True on success; (requests/s, latencies, errors)."""
    latencies, errors, lock = [], [0], threading.Lock()

    def client(index: int) -> None:
        mine, bad = [], 0
        for i in range(requests_each):
            started = time.perf_counter()
            ok = call(index, i)
            mine.append(time.perf_counter() - started)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    return concurrency * requests_each / (time.perf_counter() - started), latencies, errors[0]


class RawHttp:
    """A load client that costs the server's 2 cores almost nothing: requests encoded once, sent over one
    keep-alive socket, responses read by Content-Length (what wrk does). httpx spends about 1 ms of CPU per
    image search building the multipart body and parsing the answer, on the cores the server needs."""

    BOUNDARY = "lookalike-bench-boundary-7f3a"

    def __init__(self, port: int):
        self.port = port
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    @classmethod
    def search_request(cls, port: int, photo: bytes, k: int = 5) -> bytes:
        b = cls.BOUNDARY.encode()
        body = (b"--" + b + b'\r\nContent-Disposition: form-data; name="k"\r\n\r\n' + str(k).encode() + b"\r\n"
                + b"--" + b + b'\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
                + b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--" + b + b"--\r\n")
        head = (f"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: multipart/form-data; boundary={cls.BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body

    @staticmethod
    def get_request(port: int, path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    def call(self, request: bytes) -> int:
        """Send one encoded request (a read: safe to resend), read its whole response; the status code.
        A connection the server closed while idle (uvicorn's keep-alive timeout) is opened again."""
        try:
            self.sock.sendall(request)
            self._receive()
        except ConnectionError:
            self.close()
            self._connect()
            self.sock.sendall(request)
            self._receive()
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:"))
        while len(self.buffer) < length:
            self._receive()
        self.buffer = self.buffer[length:]
        return int(lines[0].split(b" ", 2)[1])

    def _receive(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def throughput(server: Server, catalogue, photos: list[bytes], ids: list[str], levels, requests_each,
               repeats: int) -> list[dict]:
    """Each call at each concurrency over HTTP (lean client; httpx too at the highest) and in-process, with the
    CPU seconds per request that the server and this process (the clients) spent; ``repeats`` rounds, the
    HTTP and in-process runs of a round back to back, so that their ratio compares like with like."""
    rows = []
    searches = [RawHttp.search_request(server.port, photo) for photo in photos]
    similars = [RawHttp.get_request(server.port, f"/v1/items/{item_id}/similar?k=5") for item_id in ids]
    raw = [RawHttp(server.port) for _ in range(max(levels))]
    clients = [httpx.Client(base_url=server.url, timeout=60) for _ in range(max(levels))]

    def raw_search(c, i):
        return raw[c].call(searches[(c * 7 + i) % len(searches)]) == 200

    def raw_similar(c, i):
        return raw[c].call(similars[(c * 7 + i) % len(similars)]) == 200

    def httpx_search(c, i):
        r = clients[c].post("/v1/search", files={"image": ("q.jpg", photos[(c * 7 + i) % len(photos)])},
                            data={"k": "5"})
        return r.status_code == 200

    def httpx_similar(c, i):
        return clients[c].get(f"/v1/items/{ids[(c * 7 + i) % len(ids)]}/similar", params={"k": 5}).status_code == 200

    def lib_search(c, i):
        catalogue.search(photos[(c * 7 + i) % len(photos)], 5)
        return True

    def lib_similar(c, i):
        catalogue.similar(ids[(c * 7 + i) % len(ids)], 5)
        return True

    me = psutil.Process()
    calls = {"image search": (raw_search, httpx_search, lib_search),
             "more like this": (raw_similar, httpx_similar, lib_similar)}
    for name, (lean, convenient, in_process) in calls.items():
        for level, repeat in ((level, repeat) for level in levels for repeat in range(repeats)):
            runs = [("http", lean), ("in-process", in_process)]
            if level == max(levels):
                runs.insert(1, ("http, httpx client", convenient))
            for where, fn in runs:
                fn(0, 0)  # warm
                server_cpu, client_cpu = cpu_seconds(server.ps), cpu_seconds(me)
                rps, latencies, errors = run_clients(level, requests_each, fn)
                n = level * requests_each
                cpu = {"this_process_cpu_ms_per_request": round((cpu_seconds(me) - client_cpu) / n * 1e3, 2)}
                if where != "in-process":
                    cpu["server_cpu_ms_per_request"] = round((cpu_seconds(server.ps) - server_cpu) / n * 1e3, 2)
                rows.append({"what": name, "where": where, "concurrency": level, "repeat": repeat,
                             "requests_per_s": round(rps, 1), **percentiles(latencies), "errors": errors, **cpu})
                print(json.dumps(rows[-1]), flush=True)
    for client in raw:
        client.close()
    for client in clients:
        client.close()
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """Per call, concurrency and HTTP client: HTTP requests/s over the in-process requests/s of the same
    round, each round's and the median."""
    rps = {(r["what"], r["where"], r["concurrency"], r["repeat"]): r["requests_per_s"] for r in rows}
    rounds: dict[tuple, list[float]] = {}
    for (what, where, level, repeat), value in rps.items():
        if where != "in-process":
            rounds.setdefault((what, level, where), []).append(value / rps[what, "in-process", level, repeat])
    return [{"what": what, "concurrency": level, "client": where, "ratio_median": round(float(np.median(each)), 3),
             "ratios": [round(x, 3) for x in each]} for (what, level, where), each in rounds.items()]


def adds(server: Server, photos: list[bytes], meta: dict[str, str], timed: int, bulk: int) -> dict:
    client = httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": KEY})

    def add(item_id: str, i: int) -> float:
        started = time.perf_counter()
        r = client.put(f"/v1/items/{item_id}", files={"image": ("p.jpg", photos[i % len(photos)])}, data=meta)
        if r.status_code not in (200, 201):
            raise SystemExit(f"add failed: {r.status_code} {r.text}")
        return time.perf_counter() - started

    def search_latency(n: int) -> dict:
        times = []
        for i in range(n):
            started = time.perf_counter()
            client.post("/v1/search", files={"image": ("q.jpg", photos[i % len(photos)])}, data={"k": "5"})
            times.append(time.perf_counter() - started)
        return percentiles(times)

    result = {"add": percentiles([add(f"TIMED-{i}", i) for i in range(timed)])}
    print(json.dumps(result), flush=True)
    result["search_before"], result["rss_before_mb"] = search_latency(max(20, timed)), round(server.rss_mb(), 1)
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: add(f"BULK-{i}", i), range(bulk)))
    result["bulk_adds"], result["bulk_seconds"] = bulk, round(time.perf_counter() - started, 1)
    result["search_after"], result["rss_after_mb"] = search_latency(max(20, timed)), round(server.rss_mb(), 1)
    client.close()
    print(json.dumps(result), flush=True)
    return result


def load(server: Server, photos: list[bytes], ids: list[str], meta: dict[str, str], seconds: float, clients: int
         ) -> dict:
    """Mixed load for a fixed time: 60% search, 25% more-like-this, 10% add, 5% remove (of its own adds)."""
    end = time.monotonic() + seconds
    counts, errors, acked, removed = {}, [], {}, set()
    lock = threading.Lock()
    memory = []

    def sampler() -> None:
        while time.monotonic() < end:
            memory.append(server.rss_mb())
            time.sleep(1)

    def client(index: int) -> None:
        rng = random.Random(index)
        http = httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": KEY})
        mine: list[str] = []
        n = 0
        while time.monotonic() < end:
            roll, n = rng.random(), n + 1
            if roll < 0.6:
                kind, r = "search", http.post("/v1/search", files={"image": ("q.jpg", rng.choice(photos))},
                                              data={"k": "5"})
            elif roll < 0.85:
                kind, r = "similar", http.get(f"/v1/items/{rng.choice(ids)}/similar", params={"k": 5})
            elif roll < 0.95 or not mine:
                item_id = f"LOAD-{index}-{n}"
                kind, r = "add", http.put(f"/v1/items/{item_id}", files={"image": ("p.jpg", rng.choice(photos))},
                                          data=meta)
                if r.status_code in (200, 201):
                    mine.append(item_id)
                    with lock:
                        acked[item_id] = True
            else:
                item_id = mine.pop(rng.randrange(len(mine)))
                kind, r = "remove", http.delete(f"/v1/items/{item_id}")
                if r.status_code == 200:
                    with lock:
                        removed.add(item_id)
            with lock:
                counts[kind] = counts.get(kind, 0) + 1
                if r.status_code >= 400:
                    errors.append((kind, r.status_code, r.text[:200]))
        http.close()

    watcher = threading.Thread(target=sampler)
    watcher.start()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    watcher.join()
    check = httpx.Client(base_url=server.url, timeout=60)
    lost = [i for i in acked if i not in removed and check.get(f"/v1/items/{i}").status_code != 200]
    resurrected = [i for i in removed if check.get(f"/v1/items/{i}").status_code != 404]
    check.close()
    third = max(1, len(memory) // 3)
    result = {"seconds": seconds, "clients": clients, "requests": counts, "errors": len(errors),
              "error_examples": errors[:3], "acknowledged_adds": len(acked), "removed": len(removed),
              "lost_writes": len(lost), "removed_but_present": len(resurrected),
              "rss_mb_first_third": round(float(np.mean(memory[:third])), 1) if memory else None,
              "rss_mb_last_third": round(float(np.mean(memory[-third:])), 1) if memory else None}
    print(json.dumps(result), flush=True)
    return result


def workers(artifacts: Path, scratch: Path, photos: list[bytes], levels: tuple[int, ...], requests_each: int
            ) -> list[dict]:
    """Image search against 1 and 2 worker processes on the same machine (the lean client)."""
    rows = []
    for count in (1, 2):
        server = Server(artifacts, scratch / f"workers-{count}.db", workers=count)
        try:
            searches = [RawHttp.search_request(server.port, photo) for photo in photos]
            time.sleep(2.0 if count > 1 else 0.0)  # every worker loaded (readiness answers from one of them)
            for level in levels:
                raw = [RawHttp(server.port) for _ in range(level)]

                def call(c: int, i: int, raw: list = raw, searches: list = searches) -> bool:
                    return raw[c].call(searches[(c * 7 + i) % len(searches)]) == 200

                run_clients(level, 3, call)  # warm-up
                rate, latencies, errors = run_clients(level, requests_each, call)
                for client in raw:
                    client.close()
                row = {"workers": count, "concurrency": level, "requests_per_s": round(rate, 1),
                       **percentiles(latencies), "errors": errors, "server_rss_mb": round(server.rss_mb(), 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            server.stop()
    for level in levels:
        one, two = (next(r for r in rows if r["workers"] == w and r["concurrency"] == level) for w in (1, 2))
        print(json.dumps({"concurrency": level, "two_workers_over_one": round(two["requests_per_s"] /
                                                                              one["requests_per_s"], 3)}))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    parser.add_argument("--quick", action="store_true", help="a smoke run of every part in well under a minute")
    parser.add_argument("--out", default=str(ROOT / "bench/results/service.json"))
    parser.add_argument("--workers-only", action="store_true", help="only part 4: 1 vs 2 worker processes")
    args = parser.parse_args()
    quick = args.quick
    from lookalike.live import LiveCatalogue

    scratch = Path(tempfile.mkdtemp(prefix="lookalike-bench-"))
    if args.workers_only:
        from lookalike.search.engine import Searcher

        searcher = Searcher.load(args.artifacts, root=Path(args.artifacts).resolve().parent)
        rows = searcher.items.index[:: max(1, len(searcher.items) // 50)]
        photos = [Path(searcher.resolve_path(int(r))).read_bytes() for r in rows]
        del searcher
        result = {"cpus": os.cpu_count(), "artifacts": args.artifacts,
                  "workers": workers(Path(args.artifacts), scratch, photos, (4, 8), 40 if quick else 150)}
        out = Path(args.out).with_name("service-workers.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
        return 0
    catalogue = LiveCatalogue.load(args.artifacts, scratch / "inprocess.db", root=Path(args.artifacts).resolve().parent)
    rows = catalogue.searcher.items.index[:: max(1, len(catalogue.searcher.items) // 200)]
    photos = [Path(catalogue.searcher.resolve_path(int(r))).read_bytes() for r in rows]
    ids = [catalogue.searcher.items["id"].astype(str).iloc[int(r)] for r in rows]
    server = Server(Path(args.artifacts), scratch / "live.db")
    try:
        report = {"quick": quick, "artifacts": args.artifacts, "cpus": os.cpu_count(),
                  "build_id": catalogue.build_id, "items": len(catalogue)}
        report["throughput"] = throughput(server, catalogue, photos, ids, (1, 4, 16) if not quick else (1, 4),
                                          50 if not quick else 4, 3 if not quick else 1)
        report["http_vs_in_process"] = ratios(report["throughput"])
        for row in report["http_vs_in_process"]:
            print(json.dumps(row), flush=True)
        meta = item_metadata(catalogue.searcher)
        report["adds"] = adds(server, photos, meta, 200 if not quick else 10, 10_000 if not quick else 50)
        report["load"] = load(server, photos, ids, meta, 300 if not quick else 8, 8 if not quick else 3)
    finally:
        server.stop()
    out = Path(args.out if not quick else args.out.replace(".json", "-quick.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    load_ok = report["load"]["errors"] == 0 and report["load"]["lost_writes"] == 0
    return 0 if load_ok and report["load"]["removed_but_present"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
