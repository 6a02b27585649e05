"""The HTTP service, over HTTP: a real `lookalike serve` process on a free 127.0.0.1 port.

Against the scratch pipeline project of conftest.py (60 images); each server has its own live database.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from bad_inputs import bad_input_corpus

from lookalike.artifacts import make_manifest, resolve_build, write_json
from lookalike.catalogue import read_table
from lookalike.index import build_index, save_index

REPO = Path(__file__).resolve().parents[1]
API_KEY = "test-key-0123456789abcdef"
AUTH = {"X-API-Key": API_KEY}
MAX_MB = 2
MAX_BYTES = MAX_MB * 1024 * 1024
META = {"articleType": "Tshirts", "gender": "Men", "baseColour": "Blue", "masterCategory": "Apparel",
        "productDisplayName": "Live tee"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`python -m lookalike.cli serve` in a subprocess; stop() or kill() it."""

    def __init__(self, artifacts: Path, db: Path, log: Path, extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LOOKALIKE_API_KEY": API_KEY, "PYTHONPATH": str(REPO)}
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lookalike.cli", "serve", "--artifacts", str(artifacts), "--live-db", str(db),
             "--port", str(self.port), "--max-upload-mb", str(MAX_MB), "--log-level", "warning", *extra],
            cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + 180
        while True:
            assert self.process.poll() is None, f"server exited: {log.read_text()[-3000:]}"
            try:
                if self.client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not ready: {log.read_text()[-3000:]}"
            time.sleep(0.2)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.client.close()


@pytest.fixture(scope="module")
def server(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("service")
    running = Server(tiny_project / "artifacts", folder / "live.db", folder / "server.log",
                     ("--cors-origin", "https://shop.example"))
    yield running
    running.stop()
    assert "Traceback" not in running.log.read_text(), running.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def build(tiny_project: Path) -> dict:
    items = read_table(tiny_project / "artifacts/items.csv")
    paths = [Path(p) if Path(p).is_absolute() else tiny_project / p
             for p in np.load(tiny_project / "artifacts/image_paths.npy")]
    return {"ids": [str(i) for i in items["id"]], "paths": paths, "items": items}


def search(client: httpx.Client, image: bytes, k: int = 5, **filters) -> httpx.Response:
    data = {"k": str(k), **filters}
    return client.post("/v1/search", files={"image": ("q.jpg", image, "image/jpeg")}, data=data)


def put(client: httpx.Client, item_id: str, image: bytes, headers: dict | None = AUTH, **metadata) -> httpx.Response:
    return client.put(f"/v1/items/{item_id}", files={"image": ("p.jpg", image, "image/jpeg")},
                      data={**META, **metadata}, headers=headers)


def ids_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["matches"]]


def assert_error(response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] and body["detail"], body
    assert "Traceback" not in response.text
    return body


# ------------------------------------------------------------------------------ reads


def test_health_ready_stats_docs_metrics(server: Server, build: dict):
    client = server.client
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["items"] >= 1
    stats = client.get("/v1/stats").json()
    assert stats["build"]["items"] == 60 and stats["build"]["index_type"] == "flat"
    assert len(stats["build"]["model_sha256"]) == 64 and len(stats["build"]["index_sha256"]) == 64
    assert stats["build"]["build_id"] == ready["build_id"]
    assert {"changes_since_build", "live_items", "last_seq"} <= set(stats["live"])
    assert client.get("/docs").status_code == 200
    assert "/v1/search" in client.get("/openapi.json").json()["paths"]
    client.post("/v1/search", files={"image": ("x.jpg", b"junk", "image/jpeg")})
    metrics = client.get("/metrics").text
    assert 'lookalike_http_requests_total{endpoint="/v1/search",method="POST",status="415"}' in metrics
    assert 'lookalike_http_request_seconds_bucket{endpoint="/readyz"' in metrics
    assert 'lookalike_http_errors_total{kind="unsupported_media_type"}' in metrics
    assert "lookalike_catalogue_items" in metrics


def test_search_by_upload_with_k_and_filters(server: Server, build: dict):
    image = build["paths"][3].read_bytes()
    response = search(server.client, image, k=4)
    body = response.json()
    assert ids_of(response)[0] == build["ids"][3] and body["matches"][0]["score"] > 0.99
    assert len(body["matches"]) == 4 and [m["rank"] for m in body["matches"]] == [1, 2, 3, 4]
    assert body["timings_ms"]["embed"] > 0 and body["timings_ms"]["total"] >= body["timings_ms"]["search"]
    first = body["matches"][0]
    assert first["metadata"]["articleType"] and first["image_url"] == f"/v1/items/{build['ids'][3]}/image"
    assert server.client.get(first["image_url"]).content == image
    women = search(server.client, image, k=5, gender=["Women"]).json()["matches"]
    assert women and all(m["metadata"]["gender"] == "Women" for m in women)
    two = search(server.client, image, k=10, articleType=["Watches", "Handbags"]).json()["matches"]
    assert len(two) == 10 and {m["metadata"]["articleType"] for m in two} <= {"Watches", "Handbags"}


def test_item_image_and_more_like_this(server: Server, build: dict):
    item_id = build["ids"][10]
    item = server.client.get(f"/v1/items/{item_id}").json()
    assert item["id"] == item_id and item["source"] == "build" and item["metadata"]["articleType"]
    image = server.client.get(f"/v1/items/{item_id}/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == build["paths"][10].read_bytes()
    similar = server.client.get(f"/v1/items/{item_id}/similar", params={"k": 7})
    assert item_id not in ids_of(similar) and len(ids_of(similar)) == 7
    men = server.client.get(f"/v1/items/{item_id}/similar", params={"k": 3, "gender": "Men"}).json()["matches"]
    assert all(m["metadata"]["gender"] == "Men" for m in men)
    assert_error(server.client.get("/v1/items/424242424"), 404)
    assert_error(server.client.get("/v1/items/424242424/image"), 404)
    assert_error(server.client.get("/v1/items/424242424/similar"), 404)
    for bad in ("..%2F..%2Fetc%2Fpasswd", "%2E%2E", "a%00b", "x" * 200):
        response = server.client.get(f"/v1/items/{bad}/image")
        assert response.status_code in (404, 422), (bad, response.status_code)
        assert response.headers["content-type"].startswith("application/json")
    assert_error(server.client.get(f"/v1/items/{item_id}/similar", params={"k": 0}), 422)
    assert_error(server.client.get(f"/v1/items/{item_id}/similar", params={"k": 101}), 422)
    assert_error(server.client.get(f"/v1/items/{item_id}/similar", params={"k": "many"}), 422)


def test_cors_allows_only_configured_origin(server: Server):
    preflight = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "X-API-Key"}
    allowed = server.client.options("/v1/items/x", headers={"Origin": "https://shop.example", **preflight})
    assert allowed.headers.get("access-control-allow-origin") == "https://shop.example"
    other = server.client.options("/v1/items/x", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers


# ------------------------------------------------------------------------------ hostile input


@pytest.mark.parametrize("case", list(bad_input_corpus(MAX_BYTES)))
def test_hostile_uploads_get_a_4xx_never_a_5xx(server: Server, case: str):
    data, answers = bad_input_corpus(MAX_BYTES)[case]
    item_id = f"HOSTILE-{list(bad_input_corpus(MAX_BYTES)).index(case)}"
    response = search(server.client, data, k=3)
    if answers:
        assert response.status_code == 200 and len(response.json()["matches"]) == 3, response.text
    else:
        assert_error(response, 400, 413, 415, 422)
    added = put(server.client, item_id, data)
    if answers:
        assert added.status_code in (200, 201), added.text
    else:
        assert_error(added, 400, 413, 415, 422)
        assert_error(server.client.get(f"/v1/items/{item_id}"), 404)


def test_malformed_requests_get_json_4xx(server: Server, build: dict):
    image = build["paths"][0].read_bytes()
    client = server.client
    assert_error(client.post("/v1/search", content=b"{}", headers={"Content-Type": "application/json"}), 422)
    assert_error(client.post("/v1/search", data={"k": "3"}), 422)  # no image
    assert_error(search(client, image, k=0), 422)
    assert_error(client.post("/v1/search", content=b"--x\r\nbroken", headers={
        "Content-Type": "multipart/form-data; boundary=x"}), 400, 422)
    assert_error(client.post("/v1/search", files=[("image", ("a.jpg", image)), ("image", ("b.jpg", image))]),
                 400, 413, 422)
    assert_error(client.get("/v1/nothing-here"), 404)
    assert_error(client.post("/v1/stats"), 405)
    big = b"\xff\xd8" + bytes(MAX_BYTES + 200_000)
    declared = client.post("/v1/search", files={"image": ("big.jpg", big)})
    assert_error(declared, 413)

    def chunks():  # no Content-Length: the server must count while streaming
        head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        yield head
        for _ in range(40):
            yield bytes(100_000)

    streamed = client.post("/v1/search", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_error(streamed, 413)
    assert_error(put(client, "SKU-META", image, articleType=""), 422)
    assert_error(put(client, "SKU-META", image, productDisplayName="x" * 500), 422)
    assert_error(put(client, "SKU-META", image, productDisplayName="bad\x07bell"), 422)
    assert_error(put(client, "bad%20id", image), 422)
    assert_error(client.get("/v1/items/SKU-META"), 404)


# ------------------------------------------------------------------------------ writes


def test_writes_need_the_api_key(server: Server, build: dict):
    image = build["paths"][1].read_bytes()
    assert_error(put(server.client, "SKU-AUTH", image, headers=None), 401)
    assert_error(put(server.client, "SKU-AUTH", image, headers={"X-API-Key": "wrong-key-wrong-key"}), 401)
    assert_error(server.client.delete(f"/v1/items/{build['ids'][0]}"), 401)
    assert_error(server.client.delete(f"/v1/items/{build['ids'][0]}", headers={"Authorization": "Bearer nope"}), 401)
    assert server.client.get(f"/v1/items/{build['ids'][0]}").status_code == 200
    assert_error(server.client.get("/v1/items/SKU-AUTH"), 404)
    created = put(server.client, "SKU-AUTH", image, headers={"Authorization": f"Bearer {API_KEY}"})
    assert created.status_code == 201, created.text
    removed = server.client.delete("/v1/items/SKU-AUTH", headers=AUTH)
    assert removed.status_code == 200 and removed.json()["removed"] is True


def test_add_is_searchable_within_a_second_with_near_duplicates(server: Server, build: dict):
    image = build["paths"][20].read_bytes()
    response = put(server.client, "SKU-NEW", image, productDisplayName="Brand new tee", baseColour="Teal")
    answered = time.monotonic()
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["created"] is True and body["id"] == "SKU-NEW" and body["source"] == "live"
    assert build["ids"][20] in [m["id"] for m in body["near_duplicates"]]  # the same photo under its build id
    assert all(m["score"] >= body["near_duplicate_cosine"] for m in body["near_duplicates"])
    found = search(server.client, image, k=3, baseColour=["Teal"])
    assert time.monotonic() - answered < 1.0
    assert ids_of(found)[0] == "SKU-NEW"
    assert "SKU-NEW" in ids_of(server.client.get(f"/v1/items/{build['ids'][20]}/similar", params={"k": 3}))
    assert server.client.get("/v1/items/SKU-NEW").json()["metadata"]["productDisplayName"] == "Brand new tee"
    stored = server.client.get("/v1/items/SKU-NEW/image")
    assert stored.content == image and stored.headers["content-type"] == "image/jpeg"
    assert stored.headers["x-content-type-options"] == "nosniff"
    similar = server.client.get("/v1/items/SKU-NEW/similar", params={"k": 5})
    assert "SKU-NEW" not in ids_of(similar) and build["ids"][20] == ids_of(similar)[0]
    replaced = put(server.client, "SKU-NEW", build["paths"][40].read_bytes(), productDisplayName="Second photo")
    assert replaced.status_code == 200 and replaced.json()["created"] is False
    again = search(server.client, build["paths"][40].read_bytes(), k=2)
    assert "SKU-NEW" in ids_of(again)
    assert server.client.get("/v1/items/SKU-NEW/image").content == build["paths"][40].read_bytes()


def test_removed_items_never_returned(server: Server, build: dict):
    gone = [build["ids"][30], build["ids"][31]]
    for item_id in gone:
        assert server.client.delete(f"/v1/items/{item_id}", headers=AUTH).status_code == 200
    assert_error(server.client.delete(f"/v1/items/{gone[0]}", headers=AUTH), 404)
    image = build["paths"][30].read_bytes()
    seen = set(ids_of(search(server.client, image, k=100)))
    for column, value in (("gender", "Men"), ("gender", "Women"), ("articleType", build["items"]["articleType"][30])):
        seen |= set(ids_of(search(server.client, image, k=100, **{column: [value]})))
    for other in (build["ids"][32], build["ids"][0]):
        seen |= set(ids_of(server.client.get(f"/v1/items/{other}/similar", params={"k": 100})))
    assert not seen & set(gone) and len(seen) >= 50
    for item_id in gone:
        assert_error(server.client.get(f"/v1/items/{item_id}"), 404)
        assert_error(server.client.get(f"/v1/items/{item_id}/image"), 404)
        assert_error(server.client.get(f"/v1/items/{item_id}/similar"), 404)


def test_concurrent_writes_all_applied(server: Server, build: dict):
    images = [p.read_bytes() for p in build["paths"][:8]]

    def write(n: int) -> int:
        return put(server.client, f"CONC-{n % 12}", images[n % 8], productDisplayName=f"v{n}").status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(write, range(48)))
    assert set(statuses) <= {200, 201} and statuses.count(201) == 12
    stats = server.client.get("/v1/stats").json()
    for n in range(12):
        item = server.client.get(f"/v1/items/CONC-{n}").json()
        assert item["metadata"]["productDisplayName"] in {f"v{m}" for m in range(n, 48, 12)}
    assert stats["live"]["last_seq"] >= 48


# ------------------------------------------------------------------------------ restarts and crashes


def test_restart_keeps_every_acknowledged_change(tiny_project: Path, tmp_path: Path, build: dict):
    db = tmp_path / "live.db"
    first = Server(tiny_project / "artifacts", db, tmp_path / "one.log")
    try:
        assert put(first.client, "KEEP-1", build["paths"][5].read_bytes()).status_code == 201
        assert put(first.client, "KEEP-1", build["paths"][6].read_bytes(), productDisplayName="v2").status_code == 200
        assert first.client.delete(f"/v1/items/{build['ids'][7]}", headers=AUTH).status_code == 200
        probe = build["paths"][6].read_bytes()
        before = search(first.client, probe, k=60).json()["matches"]
    finally:
        first.stop()
    second = Server(tiny_project / "artifacts", db, tmp_path / "two.log")
    try:
        after = search(second.client, probe, k=60).json()["matches"]
        assert [(m["id"], round(m["score"], 4)) for m in after] == [(m["id"], round(m["score"], 4)) for m in before]
        assert second.client.get("/v1/items/KEEP-1").json()["metadata"]["productDisplayName"] == "v2"
        assert_error(second.client.get(f"/v1/items/{build['ids'][7]}"), 404)
        assert second.client.get("/v1/stats").json()["live"]["changes_since_build"] == 3
    finally:
        second.stop()


def test_kill_9_mid_burst_loses_no_acknowledged_change(tiny_project: Path, tmp_path: Path, build: dict):
    db = tmp_path / "live.db"
    server = Server(tiny_project / "artifacts", db, tmp_path / "burst.log")
    images = [p.read_bytes() for p in build["paths"][:10]]
    acknowledged: dict[str, str] = {}  # id -> the last acknowledged version (productDisplayName)
    lock = threading.Lock()
    stop = threading.Event()

    def writer(number: int) -> None:
        client = httpx.Client(base_url=server.url, timeout=30)
        try:
            for i in range(10_000):
                if stop.is_set():
                    return
                item_id, version = f"B{number}-{i % 5}", f"w{number}-{i}"
                try:
                    response = put(client, item_id, images[i % 10], productDisplayName=version)
                except httpx.TransportError:
                    return  # the server died under this request: not acknowledged
                if response.status_code in (200, 201):
                    with lock:
                        acknowledged[item_id] = version
        finally:
            client.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 20:
        assert time.monotonic() < deadline, "too few writes acknowledged"
        time.sleep(0.05)
    time.sleep(0.5)  # mid-burst
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(30)
    with lock:
        expected = dict(acknowledged)
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = connection.execute("SELECT op, item_id, embedding, metadata, image FROM changes").fetchall()
    connection.close()
    assert rows and all(op == "put" and emb and meta and image for op, _, emb, meta, image in rows)
    restarted = Server(tiny_project / "artifacts", db, tmp_path / "after.log")
    try:
        for item_id, version in expected.items():
            item = restarted.client.get(f"/v1/items/{item_id}")
            assert item.status_code == 200, (item_id, item.text)
            name = item.json()["metadata"]["productDisplayName"]
            number, index = version[1:].split("-")
            got_number, got_index = name[1:].split("-")
            # the acknowledged version or a later write of the same item (acknowledged or not)
            assert got_number == number and int(got_index) >= int(index), (item_id, version, name)
            assert restarted.client.get(f"/v1/items/{item_id}/image").status_code == 200
        assert restarted.client.get("/v1/stats").json()["live"]["live_items"] == len(
            {r[1] for r in rows})
    finally:
        restarted.stop()


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq", "hnsw"])
def test_removals_never_returned_on_approximate_indexes(tiny_project: Path, tmp_path: Path, build: dict, kind: str):
    """The same build with another index type (written here as a build folder of its own)."""
    params = {"ivf_flat": {"type": "ivf_flat", "nlist": 4, "nprobe": 1},
              "ivf_pq": {"type": "ivf_pq", "nlist": 4, "nprobe": 1, "pq_m": 16, "pq_bits": 4},
              "hnsw": {"type": "hnsw", "hnsw_m": 8, "ef_construction": 40, "ef_search": 8}}[kind]
    source, manifest = resolve_build(tiny_project / "artifacts")
    folder = tmp_path / "artifacts"
    folder.mkdir()
    files = {}
    for name, entry in manifest["files"].items():
        files[name] = folder / entry["path"]
        if name != "index":
            shutil.copy(source / entry["path"], files[name])
    save_index(build_index(np.load(files["embeddings"]), params), files["index"])
    new = make_manifest(files, {"count": manifest["count"], "dimension": manifest["dimension"]},
                        {**manifest["params"], "index": params})
    write_json(folder / "manifest.json", new)
    server = Server(folder, tmp_path / "live.db", tmp_path / "server.log")
    try:
        assert server.client.get("/v1/stats").json()["build"]["index_type"] == kind
        gone = build["ids"][0:60:3]
        for item_id in gone:
            assert server.client.delete(f"/v1/items/{item_id}", headers=AUTH).status_code == 200
        seen = set()
        for row in (0, 3, 10, 25):
            image = build["paths"][row].read_bytes()
            seen |= set(ids_of(search(server.client, image, k=100)))
            seen |= set(ids_of(search(server.client, image, k=5, gender=["Men"])))
            seen |= set(ids_of(server.client.get(f"/v1/items/{build['ids'][row + 1]}/similar", params={"k": 100})))
        assert not seen & set(gone) and len(seen) == 40
    finally:
        server.stop()
