"""Two replicas (`lookalike serve` processes on their own ports) over one PostgreSQL journal, under load: one killed
with kill -9, the database stopped for seconds, a new build published. What every client may rely on: nothing
acknowledged is lost or resurrected, searches keep answering, and no client sees an older build after a newer one.

Writers and readers are spread over both replicas; each writer owns its ids and writes them one at a time, so the
state an id must end in is known: its last acknowledged write, or the write in flight when its replica died.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pg_cluster import PgCluster, pg_cluster_fixture  # noqa: F401 - pytest finds the fixture (pg_cluster) here
from test_service import AUTH, Server, publish_variant, published_copy, put, search

from lookalike.search.engine import Searcher


@pytest.fixture(scope="module")
def searcher(tiny_project: Path) -> Searcher:
    return Searcher.load(tiny_project / "artifacts", root=tiny_project)


@pytest.fixture(scope="module")
def photos(searcher: Searcher) -> list[bytes]:
    return [Path(searcher.resolve_path(row)).read_bytes() for row in range(6)]


@dataclass
class Ledger:
    """What the clients were told: per id, the last acknowledged write ("put:<version>" or "deleted") and the write
    whose answer never came (the replica died under it), plus every failure a client saw where it must not."""

    acknowledged: dict[str, str] = field(default_factory=dict)
    in_flight: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    writes: int = 0
    searches: int = 0
    last_seq: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str) -> int:
        with self.lock:
            return getattr(self, what)


class Load:
    """4 writers and 4 readers over ``servers`` (each client alternates between them, skipping those in ``down``)."""

    def __init__(self, servers: list[Server], photos: list[bytes], accept_busy: bool = False):
        self.servers, self.photos, self.accept_busy = servers, photos, accept_busy
        self.ledger = Ledger()
        self.down: set[int] = set()  # replicas that clients know are gone (a balancer took them out)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._writer, args=(n,)) for n in range(4)] + [
            threading.Thread(target=self._reader, args=(n,)) for n in range(4)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _pick(self, turn: int) -> int:
        for step in range(len(self.servers)):
            chosen = (turn + step) % len(self.servers)
            if chosen not in self.down:
                return chosen
        raise AssertionError("no replica left")

    def _writer(self, number: int) -> None:
        """Each id: put, put again, delete, then the next id; an id whose write went unanswered (or was refused) is
        left there, so its allowed end states stay two."""
        ledger, clients = self.ledger, [httpx.Client(base_url=s.url, timeout=30) for s in self.servers]
        serial, step = 0, 0
        try:
            for turn in range(100_000):
                if self.stop.is_set():
                    return
                chosen = self._pick(turn + number)
                item_id = f"W{number}-{serial}"
                version = f"put:{number}-{turn}" if step < 2 else "deleted"
                try:
                    if step < 2:
                        response = put(clients[chosen], item_id, self.photos[turn % 6], productDisplayName=version)
                    else:
                        response = clients[chosen].delete(f"/v1/items/{item_id}", headers=AUTH)
                except httpx.TransportError:
                    response = None
                with ledger.lock:
                    if response is not None and response.status_code == (201 if step == 0 else 200):
                        ledger.acknowledged[item_id] = version
                        ledger.writes += 1
                        ledger.last_seq = max(ledger.last_seq, response.json()["seq"])
                        serial, step = (serial + 1, 0) if step == 2 else (serial, step + 1)
                        continue
                    busy = response is not None and response.status_code == 503 and response.json()[
                        "error"] == "journal_busy" and int(response.headers["Retry-After"]) > 0
                    if response is not None and not (self.accept_busy and busy):
                        ledger.failures.append(f"write {item_id} -> {response.status_code}: {response.text[:200]}")
                    ledger.in_flight[item_id] = version  # unanswered or refused: either end state is allowed
                    serial, step = serial + 1, 0
        finally:
            for client in clients:
                client.close()

    def _reader(self, number: int) -> None:
        ledger, clients = self.ledger, [httpx.Client(base_url=s.url, timeout=30) for s in self.servers]
        try:
            for turn in range(100_000):
                if self.stop.is_set():
                    return
                chosen = self._pick(turn + number)
                try:
                    response = search(clients[chosen], self.photos[turn % 6])
                except httpx.TransportError as error:
                    if chosen not in self.down:
                        with ledger.lock:
                            ledger.failures.append(f"search on replica {chosen}: {error!r}")
                    continue
                with ledger.lock:
                    ledger.searches += 1
                    if response.status_code != 200:
                        ledger.failures.append(f"search -> {response.status_code}: {response.text[:200]}")
        finally:
            for client in clients:
                client.close()

    def wait_for(self, what: str, more: int, seconds: float = 120) -> None:
        target = self.ledger.count(what) + more
        deadline = time.monotonic() + seconds
        while self.ledger.count(what) < target:
            assert time.monotonic() < deadline, f"the load stalled: {what} {self.ledger.count(what)} < {target}"
            time.sleep(0.05)


def state_of(client: httpx.Client, item_id: str, min_seq: int | None = None) -> str:
    params = {} if min_seq is None else {"min_seq": min_seq}
    response = client.get(f"/v1/items/{item_id}", params=params)
    if response.status_code == 404:
        return "deleted"
    assert response.status_code == 200, response.text
    return response.json()["metadata"]["productDisplayName"]


def check_nothing_lost(ledger: Ledger, client: httpx.Client, min_seq: int | None = None) -> None:
    """Every id ends in its last acknowledged write, or in the one left unanswered after it (deletes included: an
    acknowledged delete never comes back); an id whose first write went unanswered, in that one or nowhere."""
    assert ledger.acknowledged, "no write was acknowledged"
    for item_id in ledger.acknowledged.keys() | ledger.in_flight.keys():
        allowed = {ledger.acknowledged.get(item_id, "deleted"), ledger.in_flight.get(item_id, "deleted")}
        assert state_of(client, item_id, min_seq) in allowed, (item_id, allowed)


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def replicas(tiny_project: Path, url: str, folder: Path, count: int = 2, artifacts: Path | None = None,
             env: dict[str, str] | None = None) -> list[Server]:
    started: list[Server] = []
    try:
        for n in range(count):
            started.append(Server(artifacts or tiny_project / "artifacts", url, folder / f"replica-{n}.log",
                                  env=env))
    except BaseException:
        for server in started:
            server.stop()
        raise
    return started


def test_kill_9_of_a_replica_under_load_loses_nothing_and_it_catches_up_on_restart(
        tiny_project: Path, photos: list[bytes], pg_cluster: PgCluster, tmp_path: Path):
    url = pg_cluster.new_database()
    servers = replicas(tiny_project, url, tmp_path)
    survivor = servers[1]
    try:
        with Load(servers, photos) as load:
            load.wait_for("writes", 40)
            load.down.add(0)  # the balancer's health check takes it out at the moment it dies
            servers[0].kill()
            load.wait_for("writes", 40)  # the survivor takes the writes
            load.wait_for("searches", 40)  # and keeps answering searches
        ledger = load.ledger
        assert ledger.failures == []
        check_nothing_lost(ledger, survivor.client, ledger.last_seq)
        restarted = Server(tiny_project / "artifacts", url, tmp_path / "restarted.log")
        servers.append(restarted)
        # caught up when it is ready: every change in the journal replayed, without being given a position
        assert restarted.client.get("/v1/stats").json()["live"]["last_seq"] >= ledger.last_seq
        check_nothing_lost(ledger, restarted.client)
        written = put(restarted.client, "AFTER-RESTART", photos[0])
        assert written.status_code == 201
        assert state_of(survivor.client, "AFTER-RESTART", written.json()["seq"]) != "deleted"
    finally:
        for server in servers:
            server.stop()


def test_postgresql_stopped_under_load_means_503_for_writes_searches_answer_and_replicas_converge(
        tiny_project: Path, photos: list[bytes], pg_cluster: PgCluster, tmp_path: Path):
    url = pg_cluster.new_database()
    servers = replicas(tiny_project, url, tmp_path)
    try:
        with Load(servers, photos, accept_busy=True) as load:
            load.wait_for("writes", 30)
            pg_cluster.stop("fast")
            try:
                stopped, stopped_at = time.monotonic(), load.ledger.count("writes")
                load.wait_for("searches", 40)  # searches keep answering from each replica's state
                time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
                load.wait_for("searches", 20)
                acknowledged_while_down = load.ledger.count("writes") - stopped_at
            finally:
                pg_cluster.start()
            load.wait_for("writes", 30)  # taken again once it is back
        ledger = load.ledger
        assert ledger.failures == []  # no 500, no failed search, no refusal but 503 journal_busy with Retry-After
        assert acknowledged_while_down <= 4  # at most the writes already committing when it stopped
        assert ledger.in_flight, "no write was refused while the database was down"
        for server in servers:  # every replica converges on the same journal
            wait_until(lambda s=server: s.client.get("/v1/stats").json()["live"]["last_seq"] >= ledger.last_seq,
                       30, "a replica never caught up")
            check_nothing_lost(ledger, server.client)
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        assert "Traceback" not in server.log.read_text()


def test_a_build_published_under_load_is_switched_to_by_both_replicas_at_once(
        tiny_project: Path, photos: list[bytes], pg_cluster: PgCluster, tmp_path: Path):
    """Each reader alternates between the replicas and records the build every answer names: the sequence is the
    old build, then the new one, never back; no search fails."""
    artifacts, manifest = published_copy(tiny_project, tmp_path)
    url = pg_cluster.new_database()
    servers = replicas(tiny_project, url, tmp_path, artifacts=artifacts,
                       env={"LOOKALIKE_POLL_SECONDS": "0.5", "LOOKALIKE_SWITCH_DELAY_SECONDS": "8"})
    seen: list[list[str]] = [[] for _ in range(4)]
    failures: list[str] = []
    stop = threading.Event()

    def reader(number: int) -> None:
        clients = [httpx.Client(base_url=s.url, timeout=30) for s in servers]
        try:
            for turn in range(100_000):
                if stop.is_set():
                    return
                response = search(clients[(turn + number) % 2], photos[turn % 6])
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                build = response.json()["build_id"]
                if not seen[number] or seen[number][-1] != build:
                    seen[number].append(build)
        finally:
            for client in clients:
                client.close()

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    try:
        first = servers[0].client.get("/v1/stats").json()["build"]["build_id"]
        for thread in threads:
            thread.start()
        new = publish_variant(artifacts, manifest, {"type": "hnsw", "hnsw_m": 8, "ef_construction": 40,
                                                    "ef_search": 64})
        for server in servers:
            wait_until(lambda s=server: s.client.get("/v1/stats").json()["build"]["build_id"] == new, 120,
                       "a replica never switched")
        time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert failures == []
        assert all(sequence == [first, new] for sequence in seen), seen  # never the old one after the new one
        for server in servers:
            serving = server.client.get("/v1/stats").json()["serving"]
            assert serving["swaps"] == 1 and serving["late_switches"] == 0
    finally:
        stop.set()
        for server in servers:
            server.stop()
