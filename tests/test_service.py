"""The HTTP service, over HTTP: a real `lookalike serve` process on a free 127.0.0.1 port.

Against the scratch pipeline project of conftest.py (60 images); each server has its own live database.
"""

from __future__ import annotations

import concurrent.futures
import json
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
from conftest import SHARED
from grocery_build import grocery_build

from lookalike.artifacts import make_manifest, publish_build, resolve_build, write_json, write_with
from lookalike.catalogue.reading import read_table
from lookalike.search.index import build_index, save_index

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
    """`python -m lookalike.cli serve` in a subprocess; stop() or kill() it. ``env``: extra variables (None
    removes one); ``ready``: wait for /readyz (else only for /healthz)."""

    def __init__(self, artifacts: Path, db: Path, log: Path, extra: tuple[str, ...] = (),
                 env: dict[str, str | None] | None = None, ready: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "LOOKALIKE_API_KEY": API_KEY, "PYTHONPATH": str(REPO),
                   "LOOKALIKE_SECRETS_DIR": str(log.parent / "no-secrets"),
                   "LOOKALIKE_SWITCH_DELAY_SECONDS": "1"}  # builds switch at an agreed instant, soon
        for name, value in (env or {}).items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lookalike.cli", "serve", "--artifacts", str(artifacts), "--live-db", str(db),
             "--port", str(self.port), "--max-upload-mb", str(MAX_MB), "--log-level", "warning", *extra],
            cwd=REPO, env=environ, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + 180
        while True:
            assert self.process.poll() is None, f"server exited: {log.read_text()[-3000:]}"
            try:
                if self.client.get("/readyz" if ready else "/healthz").status_code == 200:
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


@pytest.fixture
def server(tiny_project: Path, tmp_path: Path):
    """A server of its own for each test (its own live database): no test depends on what another wrote."""
    running = Server(tiny_project / "artifacts", tmp_path / "live.db", tmp_path / "server.log",
                     ("--cors-origin", "https://shop.example"))
    yield running
    running.stop()
    assert "Traceback" not in running.log.read_text(), running.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def shared_server(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory):
    """One server for the hostile-upload cases, each of which writes under an id of its own."""
    folder = tmp_path_factory.mktemp("service")
    running = Server(tiny_project / "artifacts", folder / "live.db", folder / "server.log")
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
    described = stats["catalogue"]  # the build's columns, from its catalogue description
    assert list(described["filters"]) == ["gender", "masterCategory", "articleType", "baseColour"]
    assert described["filters"]["articleType"] == sorted(set(build["items"]["articleType"]))
    assert described["required"] == ["articleType"] and "productDisplayName" in described["metadata"]
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


@pytest.fixture(scope="module")
def grocery_server(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory):
    """A server on a grocery build (tests/grocery_build.py): columns class, coarse_class, name, pack_grams."""
    folder = tmp_path_factory.mktemp("grocery")
    artifacts = grocery_build(tiny_project / "artifacts", folder / "artifacts")
    running = Server(artifacts, folder / "live.db", folder / "server.log")
    yield running, read_table(artifacts / "items.csv")
    running.stop()
    assert "Traceback" not in running.log.read_text(), running.log.read_text()[-3000:]


def test_a_grocery_build_filters_and_writes_by_its_own_columns(grocery_server: tuple, build: dict):
    server, items = grocery_server
    client = server.client
    described = client.get("/v1/stats").json()["catalogue"]
    assert described["filters"] == {"coarse_class": sorted(set(items["coarse_class"])),
                                    "class": sorted(set(items["class"]))}
    assert described["required"] == ["class"] and described["metadata"] == ["name", "class", "coarse_class",
                                                                           "pack_grams"]
    image = build["paths"][3].read_bytes()
    body = search(client, image, k=5, coarse_class=["Footwear"]).json()
    assert body["filters"] == {"coarse_class": ["Footwear"]} and len(body["matches"]) == 5
    assert {m["metadata"]["coarse_class"] for m in body["matches"]} == {"Footwear"}
    assert set(body["matches"][0]["metadata"]) == {"name", "class", "coarse_class", "pack_grams"}
    two = search(client, image, k=10, **{"class": ["Watches", "Handbags"]}).json()["matches"]
    assert len(two) == 10 and {m["metadata"]["class"] for m in two} <= {"Watches", "Handbags"}
    item_id = build["ids"][3]
    similar = client.get(f"/v1/items/{item_id}/similar", params={"k": 3, "coarse_class": "Apparel"}).json()
    assert similar["matches"] and {m["metadata"]["coarse_class"] for m in similar["matches"]} == {"Apparel"}
    words = client.get("/v1/search", params={"q": "black", "k": 3, "coarse_class": "Accessories"})
    assert words.status_code == 200, words.text
    assert {m["metadata"]["coarse_class"] for m in words.json()["matches"]} == {"Accessories"}
    for fashion in ({"gender": "Men"}, {"articleType": "Tshirts"}, {"pack_grams": "250"}):
        for answer in (search(client, image, **{k: [v] for k, v in fashion.items()}),
                       client.get(f"/v1/items/{item_id}/similar", params=fashion),
                       client.get("/v1/search", params={"q": "black", **fashion})):
            assert "filters: coarse_class, class" in assert_error(answer, 422)["detail"]

    def write(item_id: str, **metadata: str) -> httpx.Response:
        return client.put(f"/v1/items/{item_id}", files={"image": ("p.jpg", image, "image/jpeg")}, data=metadata,
                          headers=AUTH)

    added = write("SKU-APPLE", **{"class": "Apple", "coarse_class": "Fruit", "name": "Granny Smith",
                                  "pack_grams": "250"})
    assert added.status_code == 201, added.text
    assert added.json()["metadata"] == {"class": "Apple", "coarse_class": "Fruit", "name": "Granny Smith",
                                        "pack_grams": "250"}
    assert ids_of(search(client, image, k=5, coarse_class=["Fruit"])) == ["SKU-APPLE"]
    assert "Fruit" in client.get("/v1/stats").json()["catalogue"]["filters"]["coarse_class"]
    assert "'articleType'" in assert_error(write("SKU-PEAR", **{"class": "Pear", "articleType": "Tshirts"}),
                                           422)["detail"]
    assert "'class' is required" in assert_error(write("SKU-PEAR", coarse_class="Fruit"), 422)["detail"]
    assert "whole number" in assert_error(write("SKU-PEAR", **{"class": "Pear", "pack_grams": "heavy"}),
                                          422)["detail"]
    assert "more than once" in assert_error(client.put(
        "/v1/items/SKU-PEAR", files={"image": ("p.jpg", image, "image/jpeg")}, headers=AUTH,
        data={"class": ["Pear", "Apple"]}), 422)["detail"]
    assert_error(client.get("/v1/items/SKU-PEAR"), 404)
    schema = client.get("/openapi.json").text
    assert "gender" not in schema and "articleType" not in schema  # nothing fashion is declared


CLASHING = {"coarse_class": "k", "class": "similarity", "name": "image"}  # columns named like route parameters


@pytest.fixture(scope="module")
def clashing_server(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory):
    """A server on a grocery build whose columns are called k, similarity and image (and pack_grams)."""
    folder = tmp_path_factory.mktemp("clashing")
    artifacts = grocery_build(tiny_project / "artifacts", folder / "artifacts", CLASHING)
    running = Server(artifacts, folder / "live.db", folder / "server.log")
    yield running, read_table(artifacts / "items.csv")
    running.stop()
    assert "Traceback" not in running.log.read_text(), running.log.read_text()[-3000:]


def test_columns_named_like_a_routes_parameters_are_filtered_and_written_by_prefix(clashing_server: tuple,
                                                                                    build: dict):
    server, items = clashing_server
    client = server.client
    assert set(client.get("/v1/stats").json()["catalogue"]["filters"]) == {"k", "similarity"}
    image, item_id = build["paths"][3].read_bytes(), build["ids"][3]
    wanted = items["k"].value_counts().index[0]  # the commonest coarse class: enough items for k results
    body = search(client, image, k=4, **{"filter.k": [wanted]}).json()
    assert body["filters"] == {"k": [wanted]} and len(body["matches"]) == 4  # k is still the number of results
    assert {m["metadata"]["k"] for m in body["matches"]} == {wanted}
    kind = items.loc[items["k"] == wanted, "similarity"].value_counts().index[0]
    similar = client.get(f"/v1/items/{item_id}/similar", params={"k": 2, "filter.similarity": kind}).json()
    assert len(similar["matches"]) == 2 and {m["metadata"]["similarity"] for m in similar["matches"]} == {kind}
    words = client.get("/v1/search", params={"q": "black", "k": 3, "filter.k": wanted})
    assert words.status_code == 200, words.text
    assert {m["metadata"]["k"] for m in words.json()["matches"]} == {wanted}
    assert "valid integer" in json.dumps(assert_error(client.get(f"/v1/items/{item_id}/similar",
                                                                 params={"k": wanted}), 422))  # k is the route's
    assert "unknown parameter 'nope'" in assert_error(client.get(f"/v1/items/{item_id}/similar",
                                                          params={"filter.nope": "x"}), 422)["detail"]
    added = client.put("/v1/items/SKU-FRUIT", files={"image": ("p.jpg", image, "image/jpeg")}, headers=AUTH,
                       data={"metadata.image": "Granny Smith", "similarity": "Apple", "metadata.k": "Fruit"})
    assert added.status_code == 201, added.text
    assert added.json()["metadata"] == {"image": "Granny Smith", "similarity": "Apple", "k": "Fruit"}
    assert ids_of(search(client, image, k=5, **{"filter.k": ["Fruit"]})) == ["SKU-FRUIT"]
    assert "more than once" in assert_error(client.put(
        "/v1/items/SKU-PEAR", files={"image": ("p.jpg", image, "image/jpeg")}, headers=AUTH,
        data={"similarity": "Pear", "metadata.similarity": "Apple"}), 422)["detail"]


# ------------------------------------------------------------------------------ hostile input


@pytest.mark.parametrize("case", list(bad_input_corpus(MAX_BYTES)))
def test_hostile_uploads_get_a_4xx_never_a_5xx(shared_server: Server, case: str):
    server = shared_server
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


# ------------------------------------------------------------------------------ new builds without downtime


def published_copy(tiny_project: Path, folder: Path) -> tuple[Path, dict]:
    """An artifacts folder of its own holding the tiny project's build, published (current.json + builds/)."""
    source, manifest = resolve_build(tiny_project / "artifacts")
    artifacts = folder / "artifacts"
    artifacts.mkdir()
    for entry in manifest["files"].values():
        shutil.copy(source / entry["path"], artifacts / entry["path"])
    shutil.copy(source / "manifest.json", artifacts / "manifest.json")
    publish_build(artifacts)
    return artifacts, manifest


def publish_variant(artifacts: Path, manifest: dict, index_params: dict) -> str:
    """What `dvc repro` does to a running shop: new files written into the artifacts folder, then published."""
    embeddings = np.load(artifacts / manifest["files"]["embeddings"]["path"])
    write_with(artifacts / manifest["files"]["index"]["path"],
               lambda tmp: save_index(build_index(embeddings, index_params), tmp))
    files = {name: artifacts / entry["path"] for name, entry in manifest["files"].items()}
    new = make_manifest(files, {"count": manifest["count"], "dimension": manifest["dimension"]},
                        {**manifest["params"], "index": index_params})
    new["near_duplicates"] = manifest["near_duplicates"]
    write_json(artifacts / "manifest.json", new)
    return publish_build(artifacts)


def wait_for_build(client: httpx.Client, build_id: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        stats = client.get("/v1/stats").json()
        if stats["build"]["build_id"] == build_id:
            return stats
        assert time.monotonic() < deadline, f"build {build_id} never swapped in: {stats}"
        time.sleep(0.2)


def test_a_new_build_is_swapped_in_under_load_without_a_failed_request(tiny_project: Path, tmp_path: Path,
                                                                       build: dict):
    artifacts, manifest = published_copy(tiny_project, tmp_path)
    server = Server(artifacts, tmp_path / "live.db", tmp_path / "server.log", env={"LOOKALIKE_POLL_SECONDS": "0.5"})
    images = [p.read_bytes() for p in build["paths"][:6]]
    failures: list[str] = []
    counts = {"reads": 0, "writes": 0}
    written: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def reader(number: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for i in range(100_000):
                if stop.is_set():
                    return
                try:
                    response = (search(client, images[i % 6], k=5) if (i + number) % 2 else
                                client.get(f"/v1/items/{build['ids'][i % 60]}/similar", params={"k": 5}))
                except httpx.TransportError as error:
                    failures.append(f"reader: {error!r}")
                    continue
                with lock:
                    counts["reads"] += 1
                    if response.status_code != 200:
                        failures.append(f"{response.status_code}: {response.text[:200]}")

    def writer() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for i in range(100_000):
                if stop.is_set():
                    return
                response = put(client, f"DURING-{i}", images[i % 6])
                with lock:
                    counts["writes"] += 1
                    if response.status_code == 201:
                        written.append(f"DURING-{i}")
                    else:
                        failures.append(f"put {response.status_code}: {response.text[:200]}")

    try:
        first = server.client.get("/v1/stats").json()["build"]["build_id"]
        assert put(server.client, "BEFORE", images[0]).status_code == 201
        threads = [threading.Thread(target=reader, args=(n,)) for n in range(3)] + [threading.Thread(target=writer)]
        for thread in threads:
            thread.start()
        new = publish_variant(artifacts, manifest, {"type": "hnsw", "hnsw_m": 8, "ef_construction": 40,
                                                    "ef_search": 64})
        assert new != first
        stats = wait_for_build(server.client, new)
        with lock:
            at_swap = dict(counts)
        deadline = time.monotonic() + 60
        while counts["reads"] < at_swap["reads"] + 20 or counts["writes"] < at_swap["writes"] + 3:
            assert time.monotonic() < deadline, "the load stalled after the swap"
            time.sleep(0.1)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert failures == []
        assert stats["build"]["index_type"] == "hnsw" and stats["serving"]["swaps"] == 1
        for item_id in ["BEFORE", *written]:  # every acknowledged write, before and during the swap, is served
            assert server.client.get(f"/v1/items/{item_id}").status_code == 200, item_id
        ready = server.client.get("/readyz").json()
        assert ready["build_id"] == new and ready["items"] == 60 + 1 + len(written)
    finally:
        stop.set()
        server.stop()
    assert "Traceback" not in server.log.read_text()


def test_sighup_and_the_admin_call_load_a_new_build_at_once(tiny_project: Path, tmp_path: Path, build: dict):
    artifacts, manifest = published_copy(tiny_project, tmp_path)
    server = Server(artifacts, tmp_path / "live.db", tmp_path / "server.log",
                    env={"LOOKALIKE_POLL_SECONDS": "86400"})  # never notices by itself within the test
    try:
        second = publish_variant(artifacts, manifest, {"type": "ivf_flat", "nlist": 4, "nprobe": 4})
        server.process.send_signal(signal.SIGHUP)
        assert wait_for_build(server.client, second)["build"]["index_type"] == "ivf_flat"
        third = publish_variant(artifacts, manifest, {"type": "flat"})
        assert_error(server.client.post("/v1/admin/reload"), 401)
        assert_error(server.client.post("/v1/admin/reload", headers={"X-API-Key": "wrong-key-wrong-key"}), 401)
        assert server.client.get("/v1/stats").json()["build"]["build_id"] == second
        answer = server.client.post("/v1/admin/reload", headers=AUTH)
        assert answer.status_code == 200 and answer.json()["swapped"] is True and answer.json()["build_id"] == third
        again = server.client.post("/v1/admin/reload", headers=AUTH).json()
        assert again["swapped"] is False and again["build_id"] == third
        assert server.client.get("/v1/stats").json()["serving"]["swaps"] == 2
    finally:
        server.stop()


def test_a_server_without_a_build_is_alive_not_ready_says_why_without_paths_and_loads_it_later(
        tiny_project: Path, tmp_path: Path):
    empty = tmp_path / "artifacts"
    empty.mkdir()
    server = Server(empty, tmp_path / "live.db", tmp_path / "server.log", ready=False,
                    env={"LOOKALIKE_POLL_SECONDS": "0.5", "LOOKALIKE_LIVENESS_GRACE_SECONDS": "3"})
    try:
        assert server.client.get("/healthz").status_code == 200  # the process is alive while it retries
        deadline = time.monotonic() + 30
        while (not_ready := assert_error(server.client.get("/readyz"), 503))["detail"] == "loading the catalogue":
            assert time.monotonic() < deadline  # the first attempt has not failed yet
            time.sleep(0.1)
        assert "missing" in not_ready["detail"] and str(tmp_path) not in server.client.get("/readyz").text
        assert "/" not in not_ready["detail"]
        assert str(tmp_path) not in assert_error(server.client.get("/v1/stats"), 503)["detail"]
        deadline = time.monotonic() + 30
        while server.client.get("/healthz").status_code == 200:  # past the grace: restart me
            assert time.monotonic() < deadline
            time.sleep(0.2)
        failing = server.client.get("/healthz").json()
        assert failing["status"] == "failing" and str(tmp_path) not in failing["detail"]
        shutil.rmtree(empty)
        published_copy(tiny_project, tmp_path)  # the pipeline finally ran: picked up on a retry, no restart
        deadline = time.monotonic() + 120
        while server.client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, server.log.read_text()[-2000:]
            time.sleep(0.2)
        assert server.client.get("/healthz").status_code == 200
    finally:
        server.stop()


# ------------------------------------------------------------------------------ keys, CORS, settings


def test_guard_refusals_carry_cors_headers(server: Server, build: dict):
    origin = {"Origin": "https://shop.example"}
    image = build["paths"][1].read_bytes()
    refused = put(server.client, "SKU-CORS", image, headers=origin)
    assert_error(refused, 401)
    assert refused.headers.get("access-control-allow-origin") == "https://shop.example"
    too_big = server.client.post("/v1/search", files={"image": ("big.jpg", bytes(MAX_BYTES + 200_000))},
                                 headers=origin)
    assert_error(too_big, 413)
    assert too_big.headers.get("access-control-allow-origin") == "https://shop.example"
    other = put(server.client, "SKU-CORS", image, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_without_a_key_writes_are_refused_with_403(tiny_project: Path, tmp_path: Path, build: dict):
    server = Server(tiny_project / "artifacts", tmp_path / "live.db", tmp_path / "server.log",
                    ("--cors-origin", "https://shop.example"), env={"LOOKALIKE_API_KEY": None})
    try:
        refused = put(server.client, "SKU-X", build["paths"][0].read_bytes(),
                      headers={**AUTH, "Origin": "https://shop.example"})
        assert "writes are disabled" in assert_error(refused, 403)["detail"]
        assert refused.headers.get("access-control-allow-origin") == "https://shop.example"
        assert_error(server.client.delete(f"/v1/items/{build['ids'][0]}", headers=AUTH), 403)
        assert_error(server.client.post("/v1/admin/reload", headers=AUTH), 403)
        assert server.client.get(f"/v1/items/{build['ids'][0]}").status_code == 200
    finally:
        server.stop()


def test_the_key_comes_from_a_key_file_or_the_secrets_folder(tiny_project: Path, tmp_path: Path, build: dict):
    key_file = tmp_path / "key.txt"
    key_file.write_text("from-a-file-0123456789\n")
    server = Server(tiny_project / "artifacts", tmp_path / "live.db", tmp_path / "one.log",
                    ("--api-key-file", str(key_file)), env={"LOOKALIKE_API_KEY": None})
    try:
        image = build["paths"][0].read_bytes()
        assert_error(put(server.client, "SKU-F", image), 401)  # the environment's key is not the file's
        assert put(server.client, "SKU-F", image, headers={"X-API-Key": "from-a-file-0123456789"}).status_code == 201
    finally:
        server.stop()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "lookalike_api_key").write_text("from-the-secrets-dir-0123")
    server = Server(tiny_project / "artifacts", tmp_path / "live2.db", tmp_path / "two.log",
                    env={"LOOKALIKE_API_KEY": None, "LOOKALIKE_SECRETS_DIR": str(secrets)})
    try:
        image = build["paths"][0].read_bytes()
        assert put(server.client, "SKU-S", image, headers={"X-API-Key": "from-the-secrets-dir-0123"}).status_code == 201
    finally:
        server.stop()


@pytest.mark.parametrize(("env", "expected"), [
    ({"LOOKALIKE_API_KEY": "short-key"}, "the API key must be at least 16 characters"),
    ({"LOOKALIKE_MAX_K": "0"}, "max_k"),
    ({"LOOKALIKE_POLL_SECONDS": "soon"}, "poll_seconds"),
])
def test_bad_settings_stop_serve_with_one_line_and_status_2(tiny_project: Path, tmp_path: Path, env: dict,
                                                            expected: str):
    result = subprocess.run([sys.executable, "-m", "lookalike.cli", "serve", "--artifacts",
                             str(tiny_project / "artifacts"), "--port", str(free_port())],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings") and expected in lines[0], lines
    assert "short-key" not in result.stderr  # the value is never echoed: it may be a secret


def test_searches_run_while_writes_happen(server: Server, build: dict):
    images = [p.read_bytes() for p in build["paths"][:8]]

    def write(n: int) -> list[int]:
        statuses = [put(server.client, f"MIX-{n}", images[n % 8]).status_code]
        statuses.append(server.client.delete(f"/v1/items/MIX-{n}", headers=AUTH).status_code if n % 3 == 0
                        else 200)
        return statuses

    def read(n: int) -> list[int]:
        found = search(server.client, images[n % 8], k=20)
        similar = server.client.get(f"/v1/items/{build['ids'][n]}/similar", params={"k": 20})
        return [found.status_code, similar.status_code]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(write if n % 2 else read, n) for n in range(48)]
        statuses = [status for job in jobs for status in job.result()]
    assert set(statuses) <= {200, 201} and statuses.count(201) == 24
    live = {m["id"] for m in search(server.client, images[1], k=100).json()["matches"]} - set(build["ids"])
    assert live == {f"MIX-{n}" for n in range(1, 48, 2) if n % 3}


# ------------------------------------------------------------------------------ several worker processes


def test_two_workers_see_every_acknowledged_write_within_a_second(tiny_project: Path, tmp_path: Path,
                                                                  build: dict):
    server = Server(tiny_project / "artifacts", tmp_path / "live.db", tmp_path / "server.log", ("--workers", "2"))
    try:
        image = build["paths"][12].read_bytes()
        pids: set[int] = set()
        for n in range(3):
            added = put(server.client, f"WORKERS-{n}", image)
            assert added.status_code == 201, added.text
            removed_id = build["ids"][n]
            assert server.client.delete(f"/v1/items/{removed_id}", headers=AUTH).status_code == 200
            time.sleep(1.0)  # the promise under test: visible through every worker within 1 s
            for _ in range(40):  # fresh connections: the kernel hands them to either worker
                with httpx.Client(base_url=server.url, timeout=30) as client:
                    assert client.get(f"/v1/items/WORKERS-{n}").status_code == 200
                    assert client.get(f"/v1/items/{removed_id}").status_code == 404
                    pids.add(client.get("/v1/stats").json()["serving"]["pid"])
        assert len(pids) == 2, pids
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


def test_similarity_per_query_covers_live_items_and_refuses_unknown_modes(server: Server, build: dict,
                                                                           tiny_project: Path):
    from lookalike.search.engine import Searcher

    modes = server.client.get("/v1/stats").json()["similarity"]
    assert {"overall", "colour", "type"} <= set(modes)
    item_id = build["ids"][3]
    searcher = Searcher.load(tiny_project / "artifacts")
    for mode in ("colour", "type"):
        answer = server.client.get(f"/v1/items/{item_id}/similar", params={"k": 5, "similarity": mode})
        expected = [str(m.id) for m in searcher.similar_items(int(item_id), 5, similarity=mode).matches]
        assert ids_of(answer) == expected, mode
    # a live copy of the item's photo is its nearest neighbour whatever "alike" means
    assert put(server.client, "SKU-COPY", build["paths"][3].read_bytes()).status_code in (200, 201)
    for mode in ("overall", "colour", "type", "type:1,colour:3"):
        answer = server.client.get(f"/v1/items/{item_id}/similar", params={"k": 3, "similarity": mode})
        assert ids_of(answer)[0] == "SKU-COPY", (mode, answer.json())
    photo = {"image": ("q.jpg", build["paths"][3].read_bytes(), "image/jpeg")}
    searched = server.client.post("/v1/search", files=photo, data={"k": "2", "similarity": "colour"})
    assert "SKU-COPY" in ids_of(searched)
    assert_error(server.client.get(f"/v1/items/{item_id}/similar", params={"similarity": "shininess"}), 422)
    assert_error(server.client.post("/v1/search", files=photo, data={"similarity": "type:x"}), 422)


def test_a_put_of_several_photos_is_found_by_each_and_too_many_are_refused(server: Server, build: dict):
    held = {p.name for p in build["paths"]}
    front, back = [p.read_bytes() for p in sorted((SHARED / "images").iterdir())[:200] if p.name not in held][:2]
    files = [("image", ("front.jpg", front, "image/jpeg")), ("more_images", ("back.jpg", back, "image/jpeg"))]
    response = server.client.put("/v1/items/SKU-TWO", files=files, data=META, headers=AUTH)
    assert response.status_code == 201, response.text
    answer = search(server.client, back, k=5)
    found = ids_of(answer)
    assert found[0] == "SKU-TWO" and found.count("SKU-TWO") == 1
    assert answer.json()["build_id"] == server.client.get("/v1/stats").json()["build"]["build_id"]  # named
    assert server.client.get("/v1/items/SKU-TWO/image").content == front  # the first photo is the item's photo
    nine = [("image", ("f.jpg", front, "image/jpeg"))] + [("more_images", ("b.jpg", back, "image/jpeg"))] * 8
    refused = assert_error(server.client.put("/v1/items/SKU-NINE", files=nine, data=META, headers=AUTH), 400, 422)
    assert "8" in refused["detail"]  # the form parser's own limit: at most 8 files
    assert server.client.get("/v1/items/SKU-NINE").status_code == 404
    bad = [("image", ("f.jpg", front, "image/jpeg")), ("more_images", ("b.jpg", b"not an image", "image/jpeg"))]
    refused = assert_error(server.client.put("/v1/items/SKU-BAD", files=bad, data=META, headers=AUTH), 400, 415, 422)
    assert "photo 2" in json.dumps(refused)
    assert server.client.get("/v1/items/SKU-BAD").status_code == 404  # nothing half-written


def test_a_locked_journal_answers_writes_503_with_retry_after(tiny_project: Path, tmp_path: Path):
    from fastapi.testclient import TestClient

    from lookalike.live import LiveCatalogue, LiveStore
    from lookalike.search.engine import Searcher
    from lookalike.service.app import create_app
    from lookalike.service.settings import Settings

    searcher = Searcher.load(tiny_project / "artifacts", root=tiny_project)
    db = tmp_path / "live.db"
    catalogue = LiveCatalogue.open(searcher, LiveStore(db, busy_seconds=0.2), near_duplicate_cosine=0.99)
    app = create_app(Settings.load(root=tmp_path, api_key=API_KEY), catalogue=catalogue)
    image = np.load(tiny_project / "artifacts/image_paths.npy")[3]
    data = (Path(image) if Path(image).is_absolute() else tiny_project / image).read_bytes()
    with TestClient(app) as client:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # compaction's VACUUM holds the database like this
        try:
            busy = put(client, "SKU-BUSY", data)
            assert busy.status_code == 503 and busy.headers["retry-after"] and busy.json()["error"] == "journal_busy"
            assert client.get("/v1/items/3/similar").status_code in (200, 404)  # reads keep answering
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert client.get("/v1/items/SKU-BUSY").status_code == 404  # nothing written
        assert put(client, "SKU-BUSY", data).status_code == 201


def test_reads_with_the_written_position_see_the_write_through_any_worker(tiny_project: Path, tmp_path: Path,
                                                                         build: dict):
    running = Server(tiny_project / "artifacts", tmp_path / "live.db", tmp_path / "server.log",
                     ("--workers", "2"), env={"LOOKALIKE_FOLLOW_SECONDS": "5"})
    try:
        misses = 0
        for n in range(40):
            written = put(running.client, f"RYW-{n}", build["paths"][n % 60].read_bytes())
            assert written.status_code == 201, written.text
            with httpx.Client(base_url=running.url, timeout=60) as fresh:  # a new connection: either worker
                read = fresh.get(f"/v1/items/RYW-{n}", params={"min_seq": written.json()["seq"]})
            misses += read.status_code != 200
        assert misses == 0
        stats = running.client.get("/v1/stats").json()
        assert stats["serving"]["follows_journal_every_s"] == 5.0
        behind = running.client.get("/v1/items/RYW-0", params={"min_seq": 10**9})
        assert behind.status_code == 503 and behind.headers["retry-after"] == "1"
    finally:
        running.stop()


def test_one_scrape_counts_the_requests_of_every_worker(tiny_project: Path, tmp_path: Path):
    running = Server(tiny_project / "artifacts", tmp_path / "live.db", tmp_path / "server.log", ("--workers", "2"))
    try:
        pids, sent = set(), 0
        while len(pids) < 2 or sent < 30:  # until both workers answered some (the kernel spreads connections)
            with httpx.Client(base_url=running.url, timeout=60) as fresh:  # a new connection: either worker
                pids.add(fresh.get("/v1/stats").json()["serving"]["pid"])
            sent += 1
            assert sent < 500, "one worker took every connection"

        def stats_requests(text: str) -> float:
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("lookalike_http_requests_total{") and 'endpoint="/v1/stats"' in line)

        for _ in range(4):  # whichever worker answers the scrape
            with httpx.Client(base_url=running.url, timeout=60) as fresh:
                assert stats_requests(fresh.get("/metrics").text) == sent
    finally:
        running.stop()
