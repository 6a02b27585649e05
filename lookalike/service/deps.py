"""What the routes share: the catalogue served now, the API key, the id in the path, the JSON shapes of hits,
items and responses, and the filters a request asks for."""

from typing import Annotated

from fastapi import Path as PathParam
from fastapi import Request

from lookalike.live import CatalogueHolder, Hit, Item, LiveCatalogue, LiveError, LiveResponse
from lookalike.live import validate_item_id as _validate_item_id
from lookalike.search.engine import FILTER_COLUMNS
from lookalike.service.settings import ServiceError, check_api_key

RETRY = {"Retry-After": "5"}


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
    return {"k": k, "filters": filters, "matches": [hit_json(h) for h in response.matches],
            "timings_ms": {"embed": round(response.embed_ms, 3), "search": round(response.search_ms, 3),
                           "total": round(response.total_ms, 3)}}


def item_json(item: Item) -> dict:
    return {"id": item.id, "source": item.source, "metadata": item.metadata, "seq": item.seq,
            "image_url": _image_url(item, item.seq)}


def filters_of(gender: list[str], masterCategory: list[str], articleType: list[str],  # noqa: N803 - API names
             baseColour: list[str]) -> dict[str, list[str]]:
    filters = dict(zip(FILTER_COLUMNS, (gender, masterCategory, articleType, baseColour), strict=True))
    for column, values in filters.items():
        if len(values) > 100 or any(len(v) > 200 for v in values):
            raise ServiceError(422, "invalid_request", f"filter {column!r}: at most 100 values of 200 characters")
    return {c: v for c, v in filters.items() if v}


