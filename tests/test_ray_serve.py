"""The service as Ray Serve replicas (lookalike/service/ray_serve.py), through the real CLI.

A local two-node Ray cluster (``ray.cluster_utils.Cluster``, 1 CPU and a 200 MB object store a node, as in
test_distributed.py), and `python -m lookalike.cli serve --ray --ray-address <it> --replicas 2` in a
subprocess over the tiny project's build and a live database of the test's own. Each replica reserves the
default 1 CPU, so Ray places one on each node; Serve runs a proxy on each, sharing the port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from lookalike.service.ray_serve import RayServeError, _check_room, replica_settings
from lookalike.service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
API_KEY = "test-key-0123456789abcdef"
AUTH = {"X-API-Key": API_KEY}
META = {"articleType": "Tshirts", "gender": "Men", "baseColour": "Blue", "masterCategory": "Apparel",
        "productDisplayName": "Ray tee"}
READY_SECONDS = 600  # two replicas each load the model and index on a shared 2-core machine
STOP_SECONDS = 120


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The shared two-node cluster; the servers join it, this process only to look at it."""
    return ray_cluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RayServer:
    """`python -m lookalike.cli serve --ray` in a subprocess, waited for until /readyz answers 200."""

    def __init__(self, cluster, artifacts: Path, db: Path, log: Path, replicas: int = 2):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "LOOKALIKE_API_KEY": API_KEY, "PYTHONPATH": str(REPO),
                   "LOOKALIKE_SECRETS_DIR": str(log.parent / "no-secrets"), "RAY_USAGE_STATS_ENABLED": "0"}
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lookalike.cli", "serve", "--ray", "--ray-address", cluster.address,
             "--replicas", str(replicas), "--port", str(self.port), "--artifacts", str(artifacts),
             "--live-db", str(db), "--log-level", "info"],
            cwd=REPO, env=environ, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_SECONDS
        while True:
            assert self.process.poll() is None, f"serve --ray exited: {log.read_text()[-4000:]}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"serve --ray not ready: {log.read_text()[-4000:]}"
            time.sleep(1)

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """On a new connection each time: the kernel spreads connections over the proxies sharing the port."""
        with httpx.Client(base_url=self.url, timeout=60) as client:
            return client.request(method, path, **kwargs)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"serve --ray did not stop on SIGTERM: {self.log.read_text()[-4000:]}") from None
        return self.process.returncode


def wait_for_proxies(cluster, nodes: int, replicas: int) -> None:
    """Until a Serve proxy runs on each node and each routes to every replica. The proxies share the port (the
    kernel hands each connection to one of them) and a proxy answers 404 until it has the route table (a
    load balancer asks each node's /-/healthz), so the test asks each proxy actor (Serve's testing hook)."""
    import ray

    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            names = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                     if actor["namespace"] == "serve" and actor["name"].startswith("SERVE_PROXY_ACTOR")]
            routed = 0
            for name in names:
                proxy = ray.get_actor(name, namespace="serve")
                try:
                    routed += len(ray.get(proxy._dump_ingress_replicas_for_testing.remote("/"), timeout=30)) == replicas
                except ray.exceptions.RayError:  # no route to "/" yet
                    pass
            if len(names) == nodes and routed == nodes:
                return
            assert time.monotonic() < deadline, f"Serve proxies {names}: {routed} route to {replicas} replicas"
            time.sleep(0.5)
    finally:
        ray.shutdown()


def serve_actors(cluster) -> list[dict]:
    """The named actors Ray Serve keeps on the cluster (controller, proxies, replicas) that are still alive."""
    import ray

    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        return [actor for actor in ray.util.list_named_actors(all_namespaces=True)
                if actor["namespace"] == "serve" or actor["name"].startswith("SERVE_")]
    finally:
        ray.shutdown()


def requests_counted(exposition: str, endpoint: str) -> float:
    """The lookalike_http_requests_total of ``endpoint`` in a Prometheus text exposition, every status summed."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(exposition)
               for sample in family.samples
               if sample.name == "lookalike_http_requests_total" and sample.labels["endpoint"] == endpoint)


def test_two_replicas_answer_share_the_journal_and_shut_down(cluster, tiny_project: Path, tmp_path: Path):
    server = RayServer(cluster, tiny_project / "artifacts", tmp_path / "live.db", tmp_path / "serve.log")
    try:
        wait_for_proxies(cluster, nodes=2, replicas=2)
        pids, asked = set(), 0
        for _ in range(200):  # both replicas answer: their process ids differ
            stats = server.request("GET", "/v1/stats")
            asked += 1
            assert stats.status_code == 200, stats.text
            pids.add(stats.json()["serving"]["pid"])
            if len(pids) == 2 and asked >= 10:
                break
        assert len(pids) == 2, f"one replica answered 200 requests: {pids}"

        paths = [Path(p) if Path(p).is_absolute() else tiny_project / p
                 for p in np.load(tiny_project / "artifacts/image_paths.npy")]
        for n in range(20):  # a write through the proxy, then a read at its position: 200 on either replica
            written = server.request("PUT", f"/v1/items/RAY-{n}", headers=AUTH, data=META,
                                     files={"image": ("p.jpg", paths[n].read_bytes(), "image/jpeg")})
            assert written.status_code == 201, written.text
            read = server.request("GET", f"/v1/items/RAY-{n}", params={"min_seq": written.json()["seq"]})
            assert read.status_code == 200, read.text
            assert read.json()["id"] == f"RAY-{n}"

        counts = []  # any replica's /metrics counts every replica's requests (a sum, not its own)
        deadline = time.monotonic() + 60
        while len(counts) < 6 or len(set(counts[-6:])) > 1:
            metrics = server.request("GET", "/metrics")
            assert metrics.status_code == 200, metrics.text
            counts.append(requests_counted(metrics.text, "/v1/stats"))
            assert time.monotonic() < deadline, counts
            time.sleep(0.3)
        assert counts[-1] == asked, (counts, asked)
        assert server.request("PUT", "/v1/items/RAY-X", data=META).status_code == 401  # the key reached them
    finally:
        status = server.stop()
    assert status == 0, server.log.read_text()[-4000:]
    assert serve_actors(cluster) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/readyz", timeout=5)


def test_replicas_get_absolute_paths_and_wait_for_their_catalogue(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOOKALIKE_LIVE_DB", raising=False)
    settings = Settings.load(root=tmp_path / "project", artifacts="project/artifacts", live_db="live/shop.db")
    replica = replica_settings(settings)
    assert replica.artifacts == str(tmp_path / "project/artifacts")
    assert replica.live_db == str(tmp_path / "project/live/shop.db")  # a relative journal is under the root
    assert replica.wait_for_load and not settings.wait_for_load
    url = "postgresql://lookalike@db.internal/shop"
    assert replica_settings(settings.model_copy(update={"live_db": url})).live_db == url


def test_replicas_that_cannot_fit_a_local_ray_are_refused():
    _check_room(2.0, 2, 1.0, local=True)
    _check_room(2.0, 4, 0.5, local=True)
    with pytest.raises(RayServeError, match="lower --replicas or --replica-cpus"):
        _check_room(2.0, 3, 1.0, local=True)
    _check_room(2.0, 3, 1.0, local=False)  # a cluster may grow: a warning only


def test_summed_expositions_add_counters_and_histograms_and_keep_the_largest_gauge():
    from lookalike.service.app import Metrics, sum_expositions

    replicas = [Metrics(), Metrics()]
    for count, metrics in zip((3, 4), replicas, strict=True):
        for _ in range(count):
            metrics.requests.labels("/v1/search", "POST", "200").inc()
            metrics.latency.labels("/v1/search", "POST").observe(0.02 * count)
        metrics.catalogue_size.set(100 + count)
    replicas[1].errors.labels("busy").inc()
    summed = sum_expositions(m.own() for m in replicas).decode()
    assert requests_counted(summed, "/v1/search") == 7
    assert 'lookalike_http_request_seconds_count{endpoint="/v1/search",method="POST"} 7.0' in summed
    bucket = 'lookalike_http_request_seconds_bucket{endpoint="/v1/search",le="%s",method="POST"} %s'
    assert bucket % ("0.05", "0.0") in summed  # 3 at 0.06 s, 4 at 0.08 s
    assert bucket % ("0.075", "3.0") in summed and bucket % ("0.1", "7.0") in summed
    assert "lookalike_catalogue_items 104.0" in summed
    assert 'lookalike_http_errors_total{kind="busy"} 1.0' in summed
