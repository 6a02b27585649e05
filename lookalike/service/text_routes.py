"""The API's text search: ``GET /v1/search?q=...`` and the words, items and weights of ``POST /v1/search``.

Answers in the photo search's shape (:func:`lookalike.service.routes.response_json`) over the live catalogue, through
:class:`lookalike.text.search.LiveTextSearch` (one per loaded catalogue, made when the service loads the build:
:func:`lookalike.text.search.prepare_text_search`). A query the text search refuses is a 422 ``invalid_query``
with the reason (``similarity`` beside words among them); a build without a text tower, or whose text model could
not be read, a 503 ``no_text_model``.
(No ``from __future__ import annotations``: FastAPI reads the route signatures' types at run time.)
"""

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query
from starlette.concurrency import run_in_threadpool

from lookalike.artifacts import ArtifactMismatchError
from lookalike.live import LiveCatalogue, LiveResponse
from lookalike.service.deps import (
    FILTER_QUERY_OPENAPI,
    FILTERS_HELP,
    consistent_catalogue,
    filters_of,
    response_json,
)
from lookalike.service.settings import ServiceError
from lookalike.text.search import MAX_ITEMS, SIMILARITY_WITH_WORDS, LiveTextSearch, text_search_for
from lookalike.text.search import Query as TextQuery
from lookalike.text.tower import MAX_QUERY_CHARS, TextQueryError

SIMILARITY_HELP = ("what 'alike' means for a photo or items: overall (default: type, colour and style together), "
                   "colour, type, style, picture (the photos as they look, no labels), or weights over the build's "
                   "sub-spaces such as 'type:1,colour:0.5' (GET "
                   "/v1/stats lists them). Beside words (q, negative, text, negative_text) any value but overall is "
                   f"a 422 invalid_query: {SIMILARITY_WITH_WORDS}.")


def text_search_of(catalogue: LiveCatalogue) -> LiveTextSearch:
    """The catalogue's text search, made when the build was loaded (a swapped-in build is a new catalogue, so a new
    one); made here only for a catalogue mounted without the service's loader."""
    try:
        return text_search_for(catalogue)
    except ArtifactMismatchError as error:
        raise ServiceError(503, "no_text_model", str(error)) from None


def run_text_query(catalogue: LiveCatalogue, query: TextQuery, k: int, filters: dict,
                   similarity: str | None = None) -> LiveResponse:
    """The query's :class:`lookalike.live.LiveResponse`; refusals as 422 with the reason (called in a thread)."""
    search = text_search_of(catalogue)
    try:
        return search.search(query, k, filters, similarity)
    except TextQueryError as error:
        raise ServiceError(422, "invalid_query", str(error)) from None


@dataclass
class TextForm:
    """The words, items and weights a ``POST /v1/search`` may carry beside (or instead of) its photo."""

    text: str | None = None
    negative_text: str | None = None
    item_ids: list[str] = field(default_factory=list)
    negative_item_ids: list[str] = field(default_factory=list)
    text_weight: float = 1.0
    image_weight: float = 1.0
    item_weight: float = 1.0
    negative_weight: float = 0.5

    def asked(self) -> bool:
        return self.text is not None or self.negative_text is not None or bool(self.item_ids or
                                                                               self.negative_item_ids)

    def query(self, image: bytes | None) -> TextQuery:
        return TextQuery(text=self.text, image=image, item_ids=self.item_ids, negative_text=self.negative_text,
                         negative_item_ids=self.negative_item_ids, text_weight=self.text_weight,
                         image_weight=self.image_weight, item_weight=self.item_weight,
                         negative_weight=self.negative_weight)


Weight = Annotated[float, Form(ge=0, le=10)]


def text_form(text: Annotated[str | None, Form(max_length=MAX_QUERY_CHARS, description="words to look for")] = None,
              negative_text: Annotated[str | None, Form(max_length=MAX_QUERY_CHARS)] = None,
              item_ids: Annotated[list[str], Form(max_length=MAX_ITEMS)] = [],  # noqa: B006 - FastAPI copies
              negative_item_ids: Annotated[list[str], Form(max_length=MAX_ITEMS)] = [],  # noqa: B006
              text_weight: Weight = 1.0, image_weight: Weight = 1.0, item_weight: Weight = 1.0,
              negative_weight: Weight = 0.5) -> TextForm:
    """FastAPI dependency: the text part of a multipart ``POST /v1/search``."""
    return TextForm(text, negative_text, item_ids, negative_item_ids, text_weight, image_weight, item_weight,
                    negative_weight)


def text_router(max_k: int, default_k: int) -> APIRouter:
    """``GET /v1/search``: words (and optionally negative words and items) -> the k best items."""

    router = APIRouter(prefix="/v1")
    Catalogue = Annotated[LiveCatalogue, Depends(consistent_catalogue)]  # noqa: N806 - min_seq: read your writes
    Words = Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="what to look for")]  # noqa: N806
    Items = Annotated[list[str], Query(max_length=MAX_ITEMS)]  # noqa: N806

    @router.get("/search", tags=["search"],
                summary="The k items best matching words (BM25 over the items' words and the text tower, fused)",
                description=FILTERS_HELP, openapi_extra=FILTER_QUERY_OPENAPI)
    async def search_words(catalogue: Catalogue, q: Words,
                           filters: Annotated[dict[str, list[str]], Depends(filters_of)],
                           k: Annotated[int, Query(ge=1, le=max_k, description="how many results")] = default_k,
                           negative: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS,
                                                                 description="words to move away from")] = None,
                           like: Items = [],  # noqa: B006 - FastAPI copies defaults
                           unlike: Items = [],  # noqa: B006
                           similarity: Annotated[str | None, Query(max_length=200,
                                                                   description=SIMILARITY_HELP)] = None) -> dict:
        query = TextQuery(text=q, negative_text=negative, item_ids=like, negative_item_ids=unlike)
        response = await run_in_threadpool(run_text_query, catalogue, query, k, filters, similarity)
        return {"query": q, **response_json(response, k, filters)}

    return router
