"""What the routes share: the catalogue served now, the API key, the id in the path, the JSON shapes of hits,
items and responses, and what a request asks for in the build's own columns (its filters, an item's metadata).

A build's columns are its catalogue's (``roles`` in its manifest: :class:`lookalike.catalogue.description.
CatalogueRoles`), so the filter and metadata parameters cannot be declared in the route signatures: they are read
from the query string or the form here, by the column's own name, and a name that is neither one of them nor a
parameter of the route is refused (422), never silently dropped.
"""

import asyncio
import time
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.dependencies.models import Dependant
from starlette.concurrency import run_in_threadpool

from lookalike.live import CatalogueHolder, Hit, Item, LiveCatalogue, LiveError, LiveResponse
from lookalike.live import validate_item_id as _validate_item_id
from lookalike.service.settings import ServiceError, check_api_key

RETRY = {"Retry-After": "5"}
MAX_FILTER_VALUES = 100
MAX_FILTER_CHARS = 200
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")  # the bodies whose fields may be filters
FILTERS_HELP = ("Filters: each of the build's filter columns, by the column's own name, repeatable "
                "(GET /v1/stats lists them and their values under catalogue.filters). Values of one column are "
                "alternatives, columns must all match: ?coarse_class=Apple&coarse_class=Pear&class=Granny-Smith. "
                f"At most {MAX_FILTER_VALUES} values of {MAX_FILTER_CHARS} characters per column; a parameter that "
                "is neither a filter column nor one of the route's is refused (422). A column named like one of the "
                "route's own parameters (k, q, similarity, ...) is asked as filter.<column> (filter.k=3); any "
                "column may be.")
FILTER_PREFIX = "filter."  # filter.<column>: always the filter column, even one named like a route parameter
METADATA_PREFIX = "metadata."  # metadata.<column>: always the metadata column (a column called image, say)
# OpenAPI for a GET route's filters: free-form query parameters (the build's columns are not known up front)
FILTER_QUERY_OPENAPI = {"parameters": [{
    "name": "filters", "in": "query", "required": False, "style": "form", "explode": True,
    "description": FILTERS_HELP,
    "schema": {"type": "object", "additionalProperties": {
        "type": "array", "maxItems": MAX_FILTER_VALUES, "items": {"type": "string", "maxLength": MAX_FILTER_CHARS}}},
}]}


def holder_of(request: Request) -> CatalogueHolder:
    return request.app.state.holder


def catalogue_of(request: Request) -> LiveCatalogue:
    """The catalogue served now, or 503 with why not (never a server path: see lookalike.service.app.describe)."""
    holder: CatalogueHolder = request.app.state.holder
    catalogue = holder.catalogue
    if catalogue is None:
        reason = holder.failure.reason if holder.failure else "loading the catalogue"
        raise ServiceError(503, "not_ready", reason, RETRY)
    return catalogue


READ_WAIT_SECONDS = 2.0  # how long a read asking for a journal position waits for this process to apply it
MIN_SEQ_HELP = ("read your writes: answer only once this server has applied the journal up to this position (the "
                "`seq` a write answered); waits up to 2 s, then 503 with Retry-After")


async def consistent_catalogue(
        request: Request,
        min_seq: Annotated[int | None, Query(ge=0, le=2**62, description=MIN_SEQ_HELP)] = None) -> LiveCatalogue:
    """The catalogue served now (:func:`catalogue_of`), once it has applied the journal up to ``min_seq``: a
    client that wrote through another worker or replica passes the ``seq`` it was answered and sees its write."""
    catalogue = catalogue_of(request)
    if min_seq is None or catalogue.applied_seq >= min_seq:
        return catalogue
    deadline = time.monotonic() + READ_WAIT_SECONDS
    while True:
        catalogue = catalogue_of(request)  # a swap meanwhile: the new build's catalogue follows the same journal
        if await run_in_threadpool(catalogue.caught_up_to, min_seq):
            return catalogue
        if time.monotonic() >= deadline:
            raise ServiceError(503, "behind", f"this server has applied the journal up to {catalogue.applied_seq}, "
                                              f"not yet {min_seq}: retry", {"Retry-After": "1"})
        await asyncio.sleep(0.02)


def require_api_key(request: Request) -> None:
    """Writes and admin calls: the Guard checked the key before the body was read; this keeps a route safe on its
    own (mounted without the Guard)."""
    refusal = check_api_key(request.app.state.settings, {k.lower(): v for k, v in request.headers.items()})
    if refusal is not None:
        raise refusal


def item_id_of(item_id: Annotated[str, PathParam(description="the shop's id (SKU) or the build's decimal id",
                                                 max_length=128)]) -> str:
    try:
        return _validate_item_id(item_id)
    except LiveError as error:
        raise ServiceError(422, "invalid_request", str(error)) from None


# ------------------------------------------------------------------------------ JSON shapes


def _image_url(hit: Hit | Item, seq: int | None = None) -> str:
    return f"/v1/items/{hit.id}/image" + (f"?v={seq}" if seq is not None else "")


def hit_json(hit: Hit) -> dict:
    return {"rank": hit.rank, "id": hit.id, "score": round(hit.score, 6), "source": hit.source,
            "metadata": hit.metadata, "image_url": _image_url(hit)}


def response_json(response: LiveResponse, k: int, filters: dict) -> dict:
    return {"k": k, "filters": filters, "build_id": response.build_id,
            "matches": [hit_json(h) for h in response.matches],
            "timings_ms": {"embed": round(response.embed_ms, 3), "search": round(response.search_ms, 3),
                           "total": round(response.total_ms, 3)}}


def item_json(item: Item) -> dict:
    return {"id": item.id, "source": item.source, "metadata": item.metadata, "seq": item.seq,
            "image_url": _image_url(item, item.seq)}


# ------------------------------------------------------------------------------ the build's columns


def _declared(dependant: Dependant) -> set[str]:
    """The parameter names a route (and its dependencies) declares itself: they are never filters."""
    names = {p.alias for p in (*dependant.query_params, *dependant.body_params, *dependant.path_params)}
    for sub in dependant.dependencies:
        names |= _declared(sub)
    return names


def _route_parameters(request: Request) -> set[str]:
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    return _declared(dependant) if dependant is not None else set()


async def _given(request: Request, query: bool = True) -> list[tuple[str, Any]]:
    """Every (name, value) of the query string (``query``) and, for a form request, of the form (FastAPI parsed
    it already for the route's own form fields: Starlette keeps it)."""
    given: list[tuple[str, Any]] = list(request.query_params.multi_items()) if query else []
    if request.method != "GET" and request.headers.get("content-type", "").startswith(FORMS):
        given += list((await request.form()).multi_items())
    return given


REPEATABLE_FILES = frozenset({"more_images"})  # a write's other photos; every other file field is one file


def refuse_repeated_files(given: list[tuple[str, Any]]) -> None:
    """A 422 for a file field sent more than once where the route reads one (the rest would be ignored)."""
    names = [name for name, value in given if not isinstance(value, str) and name not in REPEATABLE_FILES]
    for name in set(names):
        if names.count(name) > 1:
            raise ServiceError(422, "invalid_request", f"{name!r} is one file; {names.count(name)} were sent")


def check_filters(filters: dict[str, list[str]], columns: Iterable[str]) -> dict[str, list[str]]:
    """The non-empty filters, each a filter column (``columns``: the build's) within the limits; else a 422."""
    columns = tuple(columns)
    for column, values in filters.items():
        if column not in columns:
            known = ", ".join(columns) if columns else "none: this build has no filter columns"
            raise ServiceError(422, "invalid_request", f"unknown parameter {column!r}: not a filter of this build "
                                                       f"(filters: {known})")
        if len(values) > MAX_FILTER_VALUES or any(len(v) > MAX_FILTER_CHARS for v in values):
            raise ServiceError(422, "invalid_request", f"filter {column!r}: at most {MAX_FILTER_VALUES} values of "
                                                       f"{MAX_FILTER_CHARS} characters")
    return {c: v for c, v in filters.items() if v}


def _columns_given(given: list[tuple[str, Any]], own: set[str], prefix: str) -> list[tuple[str, Any]]:
    """(column, value) of the parameters that name the build's columns: ``<prefix><column>`` always (so a column
    named like one of the route's parameters can be asked), any other name the route does not declare itself."""
    return [(name[len(prefix):], value) if name.startswith(prefix) else (name, value)
            for name, value in given if name.startswith(prefix) or name not in own]


async def filters_of(request: Request, catalogue: Annotated[LiveCatalogue, Depends(catalogue_of)]
                     ) -> dict[str, list[str]]:
    """The filters a search asks for: every parameter that is not the route's own, by column name
    (:data:`FILTERS_HELP`), checked against the filter columns of the build being served."""
    filters: dict[str, list[str]] = {}
    given = await _given(request)
    refuse_repeated_files(given)
    for name, value in _columns_given(given, _route_parameters(request), FILTER_PREFIX):
        if not isinstance(value, str):
            raise ServiceError(422, "invalid_request", f"filter {name!r} must be text")
        filters.setdefault(name, []).append(value)
    return check_filters(filters, catalogue.roles.filters)


async def metadata_of(request: Request) -> dict[str, str]:
    """An item's metadata from a write's form: every field but the route's own, by column name (metadata.<column>
    for a column named like one of the route's fields, image say), each given once.
    Whether each is a metadata column of the build and the required one is there, the write itself checks
    (:meth:`lookalike.live.LiveCatalogue.put`, against the build it writes to; GET /v1/stats lists them under
    catalogue.metadata and catalogue.required)."""
    metadata: dict[str, str] = {}
    given = await _given(request, query=False)
    refuse_repeated_files(given)
    for name, value in _columns_given(given, _route_parameters(request), METADATA_PREFIX):
        if not isinstance(value, str):
            raise ServiceError(422, "invalid_request", f"metadata field {name!r} must be text")
        if name in metadata:
            raise ServiceError(422, "invalid_request", f"metadata field {name!r} is given more than once")
        metadata[name] = value
    return metadata
