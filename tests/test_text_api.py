"""GET /v1/search?q=...: words over the tiny build's live catalogue, in the photo search's answer shape."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lookalike.live import LiveCatalogue, LiveStore
from lookalike.search.engine import Searcher
from lookalike.service.app import Metrics, install_error_handlers
from lookalike.service.routes import api_router
from lookalike.service.text_routes import text_router


@pytest.fixture(scope="module")
def client(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory):
    searcher = Searcher.load(tiny_project / "artifacts", root=tiny_project)
    catalogue = LiveCatalogue.open(searcher, LiveStore(tmp_path_factory.mktemp("live") / "live.db"))
    app = FastAPI()
    app.state.holder = SimpleNamespace(catalogue=catalogue, failure=None)
    install_error_handlers(app, Metrics())
    app.include_router(text_router(max_k=50, default_k=5))
    app.include_router(api_router(max_k=50, default_k=5, max_upload_bytes=10_000_000))
    with TestClient(app) as test_client:
        test_client.searcher = searcher
        yield test_client


def test_words_find_the_named_item_in_the_photo_search_shape(client: TestClient) -> None:
    title = next(t for t in client.searcher.items["productDisplayName"] if t)
    answer = client.get("/v1/search", params={"q": title, "k": 3})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["query"] == title and body["k"] == 3 and len(body["matches"]) == 3
    first = body["matches"][0]
    assert first["metadata"]["productDisplayName"] == title and first["image_url"].startswith("/v1/items/")
    assert set(body["timings_ms"]) == {"embed", "search", "total"}


def test_filters_negatives_and_items_are_applied(client: TestClient) -> None:
    items = client.searcher.items
    kind = str(items["articleType"][0])
    body = client.get("/v1/search", params={"q": "casual", "k": 5, "articleType": kind}).json()
    assert body["matches"] and {m["metadata"]["articleType"] for m in body["matches"]} == {kind}
    named = str(int(items["id"][0]))
    body = client.get("/v1/search", params={"q": "blue", "k": 50, "like": named}).json()
    assert named not in [m["id"] for m in body["matches"]]


@pytest.mark.parametrize("params, status, error", [
    ({"q": ""}, 422, "invalid_request"), ({"q": "x" * 501}, 422, "invalid_request"),
    ({"q": "???"}, 422, "invalid_query"), ({"q": "\u200b\u200b"}, 422, "invalid_query"),
    ({"q": "red", "k": 0}, 422, "invalid_request"), ({"q": "red", "like": "NOPE"}, 422, "invalid_query"),
    ({"q": "red\u0000"}, 422, "invalid_query"), ({"q": "red", "negative": "!!"}, 422, "invalid_query")])
def test_bad_queries_get_a_json_4xx(client: TestClient, params: dict, status: int, error: str) -> None:
    answer = client.get("/v1/search", params=params)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error


def test_post_search_mixes_a_photo_words_and_items(client: TestClient) -> None:
    searcher = client.searcher
    photo = searcher.resolve_path(4).read_bytes()
    own = str(int(searcher.items["id"][4]))
    plain = client.post("/v1/search", files={"image": ("p.jpg", photo, "image/jpeg")}, data={"k": "3"}).json()
    assert plain["matches"][0]["id"] == own  # a photo alone: the photo search as before
    mixed = client.post("/v1/search", files={"image": ("p.jpg", photo, "image/jpeg")},
                        data={"k": "3", "text": "black", "text_weight": "0.5", "negative_item_ids": [own]})
    assert mixed.status_code == 200, mixed.text
    assert own not in [m["id"] for m in mixed.json()["matches"]]
    words = client.post("/v1/search", data={"k": "2", "text": str(searcher.items["productDisplayName"][4])})
    assert words.status_code == 200 and words.json()["matches"][0]["id"] == own
    for data, error in (({"k": "2"}, "invalid_request"), ({"text": "red", "text_weight": "11"}, "invalid_request"),
                        ({"item_ids": ["NOPE"]}, "invalid_query")):
        answer = client.post("/v1/search", data=data)
        assert answer.status_code == 422 and answer.json()["error"] == error, answer.text


def test_filters_are_the_builds_filter_columns_and_any_other_parameter_is_refused(client: TestClient) -> None:
    """Filters are read by the build's own column names (its roles), repeatable, on GET and in a POST's form; a
    parameter that is neither a filter of the build nor one of the route's is a 422 naming the filters."""
    filters = client.searcher.roles.filters
    assert filters == ("gender", "masterCategory", "articleType", "baseColour")  # the fashion description's
    body = client.get("/v1/search", params={"q": "casual", "k": 10, "gender": ["Men", "Women"]}).json()
    assert body["filters"] == {"gender": ["Men", "Women"]}
    assert body["matches"] and {m["metadata"]["gender"] for m in body["matches"]} <= {"Men", "Women"}
    posted = client.post("/v1/search", data={"k": "5", "text": "casual", "masterCategory": "Footwear"}).json()
    assert {m["metadata"]["masterCategory"] for m in posted["matches"]} == {"Footwear"}
    for params in ({"season": "Summer"}, {"colour": "Red"}, {"Gender": "Men"}, {"coarse_class": "Apple"}):
        for answer in (client.get("/v1/search", params={"q": "casual", **params}),
                       client.post("/v1/search", data={"text": "casual", **params})):
            assert answer.status_code == 422 and answer.json()["error"] == "invalid_request", answer.text
            assert f"unknown parameter {next(iter(params))!r}" in answer.json()["detail"]
            assert ", ".join(filters) in answer.json()["detail"]
    too_many = client.get("/v1/search", params={"q": "casual", "gender": ["Men"] * 101})
    assert too_many.status_code == 422 and "at most 100 values" in too_many.json()["detail"]
    too_long = client.get("/v1/search", params={"q": "casual", "baseColour": "x" * 201})
    assert too_long.status_code == 422 and too_long.json()["error"] == "invalid_request"


def test_openapi_documents_filters_as_the_builds_columns(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/v1/search", "/v1/items/{item_id}/similar"):
        parameters = schema["paths"][path]["get"]["parameters"]
        free = [p for p in parameters if p["name"] == "filters"]
        assert free and free[0]["style"] == "form" and free[0]["explode"] is True
        assert free[0]["schema"]["additionalProperties"]["type"] == "array"
        assert "filter columns" in schema["paths"][path]["get"]["description"]
        assert not {"gender", "articleType", "baseColour", "masterCategory"} & {p["name"] for p in parameters}
    assert "filter columns" in schema["paths"]["/v1/search"]["post"]["description"]
    put = schema["paths"]["/v1/items/{item_id}"]["put"]
    assert "metadata column" in put["description"] and "articleType" not in str(put)
