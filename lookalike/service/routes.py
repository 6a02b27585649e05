"""The HTTP routes of the service: parse, check, call one library function, shape the JSON.

Every search route ends in :meth:`lookalike.live.LiveCatalogue.search_vector` (an upload is embedded
first; "more like this" starts from the item's vector), so a new kind of query is one more route that
computes a vector. CPU-heavy work (decode, embed, search) runs in the thread pool.
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from lookalike.live import CatalogueHolder, LiveCatalogue
from lookalike.live.records import MAX_FIELD_CHARS, MAX_PHOTOS_PER_ITEM
from lookalike.service.deps import (
    FILTER_QUERY_OPENAPI,
    FILTERS_HELP,
    catalogue_of,
    consistent_catalogue,
    filters_of,
    hit_json,
    holder_of,
    item_id_of,
    item_json,
    metadata_of,
    require_api_key,
    response_json,
)
from lookalike.service.settings import ServiceError
from lookalike.service.text_routes import SIMILARITY_HELP, TextForm, run_text_query, text_form

log = logging.getLogger("lookalike.service")


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(413, "payload_too_large", f"the image is over the {limit / 1e6:.1f} MB limit")
    return data


# ------------------------------------------------------------------------------ routes


def operations_router(liveness: Callable[[CatalogueHolder], str | None], metrics: Any) -> APIRouter:
    """/healthz, /readyz, /metrics."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process and its event loop answer, its catalogue keeper runs")
    async def healthz(request: Request) -> JSONResponse:
        problem = liveness(holder_of(request))
        if problem:
            return JSONResponse({"status": "failing", "detail": problem}, status_code=503)
        return JSONResponse({"status": "ok"})

    @router.get("/readyz", summary="Readiness: a catalogue is loaded and the live database answers")
    async def readyz(request: Request) -> JSONResponse:
        catalogue = catalogue_of(request)  # 503 until a catalogue is loaded
        try:
            last, journal = await run_in_threadpool(catalogue.store.last_seq), "ok"
        except Exception as error:  # noqa: BLE001 - a journal that is down stops writes, not searches
            log.warning("readiness: the live journal does not answer: %s", error)
            last, journal = catalogue.applied_seq, "unreachable: searches answer from this server's state, " \
                                                     "writes answer 503 until it is back"
        return JSONResponse({"status": "ready", "build_id": catalogue.build_id, "last_seq": last,
                             "items": len(catalogue), "journal": journal})

    @router.get("/metrics", summary="Prometheus metrics")
    async def prometheus_metrics(request: Request) -> Response:
        metrics.observe(holder_of(request))
        return Response(await run_in_threadpool(metrics.exposition), media_type=CONTENT_TYPE_LATEST)

    return router


def api_router(max_k: int, default_k: int, max_upload_bytes: int) -> APIRouter:
    """The /v1 routes: search, items, writes, stats and the admin reload."""
    router = APIRouter(prefix="/v1")
    Catalogue = Annotated[LiveCatalogue, Depends(consistent_catalogue)]  # noqa: N806 - min_seq: read your writes
    Holder = Annotated[CatalogueHolder, Depends(holder_of)]  # noqa: N806
    ItemId = Annotated[str, Depends(item_id_of)]  # noqa: N806
    K = Annotated[int, Query(ge=1, le=max_k, description="how many results")]  # noqa: N806
    KForm = Annotated[int, Form(ge=1, le=max_k, description="how many results")]  # noqa: N806
    alike = ("what 'alike' means: overall (default: type, colour and style together), colour, type, style, "
             "picture (the photos as they look, no labels), or "
             "weights over the build's sub-spaces such as 'type:1,colour:0.5' (GET /v1/stats lists them)")
    SimilarityQuery = Annotated[str | None, Query(max_length=200, description=alike)]  # noqa: N806
    SimilarityForm = Annotated[str | None, Form(max_length=200, description=SIMILARITY_HELP)]  # noqa: N806
    Filters = Annotated[dict[str, list[str]], Depends(filters_of)]  # noqa: N806 - the build's filter columns

    @router.get("/stats", tags=["operations"],
                summary="Catalogue size, build (id, model, index, near-duplicate threshold), its columns (filters "
                        "and their values, metadata fields), live changes, swaps")
    async def stats(catalogue: Catalogue, holder: Holder) -> dict:
        return {**await run_in_threadpool(catalogue.stats), "serving": holder.status()}

    @router.post("/admin/reload", tags=["operations"], dependencies=[Depends(require_api_key)],
                 summary="Load the published build now and swap it in, in every worker and replica on the same "
                         "journal, all at one agreed instant (API key): answers once this server serves it; "
                         "wait=false: only ask")
    async def reload(holder: Holder, wait: bool = True) -> dict:
        await run_in_threadpool(holder.request_reload_everywhere, not wait)  # every worker and replica
        if not wait:
            return {"requested": True, "build_id": holder.catalogue.build_id if holder.catalogue else None}
        swapped = await run_in_threadpool(holder.check_build, True)
        await holder.wait_for_switch()  # every server switches at the instant the journal agreed: so does this one
        current = holder.catalogue
        return {"swapped": swapped, "build_id": current.build_id if current else None, **holder.status()}

    @router.post("/search", tags=["search"],
                 summary="The k items most like an uploaded photo, words, items, or a weighted mix of them",
                 description=f"Multipart form. {FILTERS_HELP} Here the filters are form fields.")
    async def search(catalogue: Catalogue, filters: Filters,
                     image: Annotated[UploadFile | None, File(description="JPEG, PNG, WebP, ...")] = None,
                     words: Annotated[TextForm, Depends(text_form)] = None,  # text, item_ids, weights: text_routes
                     k: KForm = default_k,
                     similarity: SimilarityForm = None) -> dict:
        data = await _read_upload(image, max_upload_bytes) if image is not None else None
        if words is not None and words.asked():  # similarity: applied to a photo and items, refused beside words
            response = await run_in_threadpool(run_text_query, catalogue, words.query(data), k, filters, similarity)
            return response_json(response, k, filters)
        if data is None:
            raise ServiceError(422, "invalid_request", "give an image, text or item_ids")
        response = await run_in_threadpool(catalogue.search, data, k, filters, similarity)
        return response_json(response, k, filters)

    @router.get("/items/{item_id}", tags=["items"], summary="One item: id, metadata, image URL")
    async def get_item(catalogue: Catalogue, item_id: ItemId) -> dict:
        return item_json(catalogue.item(item_id))

    @router.get("/items/{item_id}/image", tags=["items"], summary="An item's photo",
                response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def get_image(catalogue: Catalogue, item_id: ItemId) -> Response:
        source, content_type = await run_in_threadpool(catalogue.image, item_id)
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=60"}
        if isinstance(source, bytes):
            return Response(source, media_type=content_type, headers=headers)
        if not Path(source).is_file():  # a build's photo (from its manifest-pinned paths), never a client path
            raise ServiceError(404, "not_found", f"the photo of item {item_id!r} is missing on the server")
        return FileResponse(source, media_type=content_type, headers=headers)

    @router.get("/items/{item_id}/similar", tags=["search"], summary="'More like this': never the item itself",
                description=FILTERS_HELP, openapi_extra=FILTER_QUERY_OPENAPI)
    async def similar(catalogue: Catalogue, item_id: ItemId, filters: Filters, k: K = default_k,
                      similarity: SimilarityQuery = None) -> dict:
        response = await run_in_threadpool(catalogue.similar, item_id, k, filters, similarity)
        return {"id": item_id, **response_json(response, k, filters)}

    @router.put("/items/{item_id}", tags=["items"], status_code=200, dependencies=[Depends(require_api_key)],
                summary="Add or replace an item (API key): photo + metadata; durable when answered",
                description="Multipart form: the photo (`image`), optionally the item's other photos (`more_images`, "
                            f"repeated; at most {MAX_PHOTOS_PER_ITEM} photos in all, each under the upload limit: "
                            "every photo is searched, the item found by its best) and the item's metadata, one "
                            "form field per metadata column of the build, by the column's own name (GET /v1/stats "
                            "lists them under catalogue.metadata; metadata.<column> for a column named like a "
                            "field of this form, image say; catalogue.required must be given, a column in "
                            f"catalogue.numbers takes a number), at most {MAX_FIELD_CHARS} characters each. "
                            "Another field is refused (422).",
                responses={201: {"description": "added"}, 200: {"description": "replaced"}})
    async def put_item(catalogue: Catalogue, holder: Holder, item_id: ItemId,
                       metadata: Annotated[dict[str, str], Depends(metadata_of)],
                       image: Annotated[UploadFile, File(description="the item's photo")],
                       more_images: Annotated[list[UploadFile] | None, File(
                           description="the item's other photos (several photos per item)")] = None) -> JSONResponse:
        others = more_images or []
        if 1 + len(others) > MAX_PHOTOS_PER_ITEM:
            raise ServiceError(422, "invalid_request", f"an item has at most {MAX_PHOTOS_PER_ITEM} photos; "
                                                       f"{1 + len(others)} were sent")
        data = await _read_upload(image, max_upload_bytes)
        more = [await _read_upload(other, max_upload_bytes) for other in others]
        result = await run_in_threadpool(holder.put, item_id, data, metadata, more)
        body = {**item_json(result.item), "created": result.created,
                "near_duplicates": [hit_json(h) for h in result.near_duplicates],
                "near_duplicate_cosine": catalogue.near_duplicate_cosine,
                "timings_ms": {"embed": round(result.embed_ms, 3), "write": round(result.write_ms, 3)}}
        return JSONResponse(body, status_code=201 if result.created else 200)

    @router.delete("/items/{item_id}", tags=["items"], dependencies=[Depends(require_api_key)],
                   summary="Remove an item (API key); durable when answered")
    async def delete_item(catalogue: Catalogue, holder: Holder, item_id: ItemId) -> dict:
        seq = await run_in_threadpool(holder.remove, item_id)
        return {"id": item_id, "removed": True, "seq": seq}

    return router
