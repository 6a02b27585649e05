"""The HTTP service: the live catalogue (:mod:`lookalike.live`) over FastAPI.

    app = create_app(Settings.from_env())       # loads the pinned build + live changes in the background
    uvicorn.run(app, host="127.0.0.1", port=8000)   # or: lookalike serve

Routers are thin: parse, check, hand the CPU-heavy work (decode, embed, search) to the thread pool,
shape the JSON. Every error is JSON ``{"error": <kind>, "detail": <for a person>}``: 4xx for anything
the client sent, a generic 500 (logged here, never a traceback to the client) otherwise. Writes need
the API key (``X-API-Key`` or ``Authorization: Bearer``), checked before the body is read; bodies
over the cap are refused with 413 from their Content-Length, and counted while streaming when they
have none.
"""

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import UnidentifiedImageError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.artifacts import ArtifactMismatchError
from lookalike.live import (
    METADATA_FIELDS,
    Hit,
    Item,
    LiveCatalogue,
    LiveError,
    LiveResponse,
    UnknownItemError,
    validate_item_id,
)
from lookalike.params import PROJECT_ROOT
from lookalike.preprocessing import InvalidImageError
from lookalike.search import FILTER_COLUMNS

log = logging.getLogger("lookalike.service")

API_KEY_ENV = "LOOKALIKE_API_KEY"
API_KEY_FILE_ENV = "LOOKALIKE_API_KEY_FILE"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the metadata fields around the image
ERROR_KINDS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "invalid_request", 429: "too_many_requests", 503: "not_ready"}


@dataclass
class Settings:
    """Everything the service needs to know; from flags, the environment or a test."""

    artifacts: str | None = None  # None: <root>/artifacts
    db: str | None = None  # None: $LOOKALIKE_LIVE_DB or <root>/live/live.db
    root: Path = PROJECT_ROOT
    api_key: str | None = None  # None: writes are refused (403)
    cors_origins: list[str] = field(default_factory=list)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_k: int = 100
    default_k: int = 5
    near_duplicate_cosine: float | None = None  # None: lookalike.duplicates.NEAR_DUPLICATE_COSINE

    @classmethod
    def from_env(cls, **overrides: Any) -> "Settings":
        """LOOKALIKE_API_KEY (or LOOKALIKE_API_KEY_FILE), LOOKALIKE_CORS_ORIGINS (comma-separated),
        LOOKALIKE_ARTIFACTS, LOOKALIKE_LIVE_DB, LOOKALIKE_MAX_UPLOAD_MB; ``overrides`` (not None) win."""
        env = os.environ
        values: dict[str, Any] = {
            "artifacts": env.get("LOOKALIKE_ARTIFACTS") or None,
            "db": env.get("LOOKALIKE_LIVE_DB") or None,
            "api_key": read_api_key(env.get(API_KEY_FILE_ENV)) if env.get(API_KEY_FILE_ENV) else env.get(API_KEY_ENV),
            "cors_origins": [o.strip() for o in env.get("LOOKALIKE_CORS_ORIGINS", "").split(",") if o.strip()],
        }
        if env.get("LOOKALIKE_MAX_UPLOAD_MB"):
            values["max_upload_bytes"] = int(float(env["LOOKALIKE_MAX_UPLOAD_MB"]) * 1024 * 1024)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.api_key is not None and len(settings.api_key) < 16:
            raise ValueError("the API key must be at least 16 characters")
        return settings


def read_api_key(path: str | Path) -> str:
    """The first line of a key file (a secret mounted as a file)."""
    key = Path(path).read_text().strip().splitlines()
    if not key or not key[0].strip():
        raise ValueError(f"the API key file {path} is empty")
    return key[0].strip()


class ServiceError(HTTPException):
    """An error answered as JSON {"error": error, "detail": detail} with ``status``."""

    def __init__(self, status: int, error: str, detail: str, headers: dict | None = None):
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.error = error


# ------------------------------------------------------------------------------ metrics


class Metrics:
    """Prometheus metrics in a registry of their own (one per app, so tests can build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("lookalike_http_requests", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("lookalike_http_request_seconds", "HTTP request latency by endpoint",
                                 ["endpoint", "method"], registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .075, .1, .15, .25, .5, 1, 2.5, 5, 10))
        self.errors = Counter("lookalike_http_errors", "Error responses by kind", ["kind"], registry=self.registry)
        self.catalogue_size = Gauge("lookalike_catalogue_items", "Items in the live catalogue",
                                    registry=self.registry)
        self.live_changes = Gauge("lookalike_live_changes", "Live changes since the pinned build",
                                  registry=self.registry)


class Guard:
    """Outermost ASGI layer: request metrics, the early 413 from Content-Length, write auth before the body."""

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics, max_body: int):
        self.app, self.settings, self.metrics, self.max_body = app, settings, metrics, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        received = 0

        async def receive_counted() -> Message:  # a body without Content-Length is counted as it streams
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise self._too_large(received)
            return message

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _json_error(refusal)(scope, receive, send_status)
                self.metrics.errors.labels(refusal.error).inc()
            else:
                await self.app(scope, receive_counted, send_status)
        except ServiceError as error:  # raised from receive where no handler caught it
            if status != 500:
                raise
            await _json_error(error)(scope, receive, send_status)
            self.metrics.errors.labels(error.error).inc()
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(endpoint, method, str(status)).inc()
            self.metrics.latency.labels(endpoint, method).observe(time.perf_counter() - started)

    def _too_large(self, size: int) -> ServiceError:
        return ServiceError(413, "payload_too_large", f"the request body is over {size / 1e6:.1f} MB; the limit "
                                                      f"is {self.max_body / 1e6:.1f} MB")

    def _refusal(self, scope: Scope) -> ServiceError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return ServiceError(400, "bad_request", "Content-Length is not a number")
            if int(length) > self.max_body:
                return self._too_large(int(length))
        if scope.get("method") in ("PUT", "DELETE", "PATCH") and scope.get("path", "").startswith("/v1/"):
            return check_api_key(self.settings, headers)
        return None


def check_api_key(settings: Settings, headers: dict[str, str]) -> ServiceError | None:
    """None if the request carries the API key; otherwise the refusal (401, or 403 with writes disabled)."""
    if settings.api_key is None:
        return ServiceError(403, "forbidden", f"writes are disabled: the server has no API key ({API_KEY_ENV})")
    offered = headers.get("x-api-key")
    authorization = headers.get("authorization", "")
    if offered is None and authorization.lower().startswith("bearer "):
        offered = authorization[7:].strip()
    if offered is None or not hmac.compare_digest(offered.encode("utf-8", "replace"),
                                                  settings.api_key.encode("utf-8")):
        return ServiceError(401, "unauthorized", "a valid API key is required (X-API-Key header)",
                            {"WWW-Authenticate": "Bearer"})
    return None


def _json_error(error: ServiceError) -> JSONResponse:
    return JSONResponse({"error": error.error, "detail": error.detail}, status_code=error.status_code,
                        headers=error.headers)


# ------------------------------------------------------------------------------ state


class State:
    """The loaded catalogue, or why it is not (yet) there."""

    def __init__(self, loader: Callable[[], LiveCatalogue] | None, catalogue: LiveCatalogue | None):
        self.loader, self.catalogue = loader, catalogue
        self.problem: str | None = None if catalogue else "loading the catalogue"
        self.thread: threading.Thread | None = None

    def start_loading(self) -> None:
        if self.catalogue is not None or self.loader is None:
            return

        def load() -> None:
            try:
                self.catalogue = self.loader()
                self.problem = None
                log.info("ready: %d items, build %s", len(self.catalogue), self.catalogue.build_id)
            except (ArtifactMismatchError, LiveError, OSError) as error:
                self.problem = f"cannot load the catalogue: {error}"
                log.error(self.problem)
            except Exception:  # noqa: BLE001 - logged with its traceback; /readyz says not ready
                self.problem = "cannot load the catalogue (see the server log)"
                log.exception(self.problem)

        self.thread = threading.Thread(target=load, name="lookalike-load", daemon=True)
        self.thread.start()


def catalogue_of(request: Request) -> LiveCatalogue:
    state: State = request.app.state.lookalike
    if state.catalogue is None:
        raise ServiceError(503, "not_ready", state.problem or "loading the catalogue", {"Retry-After": "5"})
    return state.catalogue


def item_id_of(item_id: Annotated[str, PathParam(description="the shop's id (SKU) or the build's decimal id",
                                                 max_length=128)]) -> str:
    try:
        return validate_item_id(item_id)
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


def _filters(gender: list[str], masterCategory: list[str], articleType: list[str],  # noqa: N803 - API names
             baseColour: list[str]) -> dict[str, list[str]]:
    filters = dict(zip(FILTER_COLUMNS, (gender, masterCategory, articleType, baseColour), strict=True))
    for column, values in filters.items():
        if len(values) > 100 or any(len(v) > 200 for v in values):
            raise ServiceError(422, "invalid_request", f"filter {column!r}: at most 100 values of 200 characters")
    return {c: v for c, v in filters.items() if v}


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(413, "payload_too_large", f"the image is over the {limit / 1e6:.1f} MB limit")
    return data


# ------------------------------------------------------------------------------ the app


def create_app(settings: Settings | None = None, catalogue: LiveCatalogue | None = None,
               loader: Callable[[], LiveCatalogue] | None = None) -> FastAPI:
    """The FastAPI app over ``catalogue``, or over what ``loader`` returns (called in the background at start-up,
    so /healthz answers at once and /readyz turns 200 when loading is done). Neither: load from ``settings``."""
    settings = settings or Settings.from_env()
    if catalogue is None and loader is None:
        def loader() -> LiveCatalogue:
            return LiveCatalogue.load(settings.artifacts, settings.db, root=settings.root,
                                      max_bytes=settings.max_upload_bytes,
                                      near_duplicate_cosine=settings.near_duplicate_cosine)
    state = State(loader, catalogue)
    metrics = Metrics()
    max_body = settings.max_upload_bytes + MULTIPART_OVERHEAD

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state.start_loading()
        yield

    app = FastAPI(title="lookalike", version="1", lifespan=lifespan,
                  form_limits={"max_fields": 64, "max_files": 1, "max_part_size": 16 * 1024},
                  description="Visual similarity search and 'more like this' over a live product catalogue. "
                              "Errors are JSON {error, detail}. Writes need the API key (X-API-Key).")
    app.state.lookalike = state
    app.state.metrics = metrics
    app.state.settings = settings
    install_error_handlers(app, metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"])
    app.add_middleware(Guard, settings=settings, metrics=metrics, max_body=max_body)
    Catalogue = Annotated[LiveCatalogue, Depends(catalogue_of)]  # noqa: N806
    ItemId = Annotated[str, Depends(item_id_of)]  # noqa: N806
    K = Annotated[int, Query(ge=1, le=settings.max_k, description="how many results")]  # noqa: N806
    KForm = Annotated[int, Form(ge=1, le=settings.max_k, description="how many results")]  # noqa: N806

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: the catalogue is loaded and the database answers")
    async def readyz() -> JSONResponse:
        if state.catalogue is None:
            raise ServiceError(503, "not_ready", state.problem or "loading the catalogue", {"Retry-After": "5"})
        try:
            last = await run_in_threadpool(state.catalogue.store.last_seq)
        except Exception as error:  # noqa: BLE001 - the database is what readiness checks
            log.exception("readiness: the live database does not answer")
            raise ServiceError(503, "not_ready", "the live database does not answer") from error
        return JSONResponse({"status": "ready", "build_id": state.catalogue.build_id, "last_seq": last,
                             "items": len(state.catalogue)})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus_metrics() -> Response:
        if state.catalogue is not None:
            metrics.catalogue_size.set(len(state.catalogue))
            metrics.live_changes.set(state.catalogue.applied_seq - state.catalogue.folded_seq)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/stats", tags=["operations"], summary="Catalogue size, build, model and index, live changes")
    async def stats(catalogue: Catalogue) -> dict:
        return await run_in_threadpool(catalogue.stats)

    @app.post("/v1/search", tags=["search"], summary="The k items most like an uploaded photo")
    async def search(catalogue: Catalogue, image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, ...")],
                     k: KForm = settings.default_k,
                     gender: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
                     masterCategory: Annotated[list[str], Form()] = [],  # noqa: B006, N803
                     articleType: Annotated[list[str], Form()] = [],  # noqa: B006, N803
                     baseColour: Annotated[list[str], Form()] = []) -> dict:  # noqa: B006, N803
        filters = _filters(gender, masterCategory, articleType, baseColour)
        data = await _read_upload(image, settings.max_upload_bytes)
        response = await run_in_threadpool(catalogue.search, data, k, filters)
        return response_json(response, k, filters)

    @app.get("/v1/items/{item_id}", tags=["items"], summary="One item: id, metadata, image URL")
    async def get_item(catalogue: Catalogue, item_id: ItemId) -> dict:
        return item_json(catalogue.item(item_id))

    @app.get("/v1/items/{item_id}/image", tags=["items"], summary="An item's photo",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def get_image(catalogue: Catalogue, item_id: ItemId) -> Response:
        source, content_type = await run_in_threadpool(catalogue.image, item_id)
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=60"}
        if isinstance(source, bytes):
            return Response(source, media_type=content_type, headers=headers)
        if not Path(source).is_file():  # a build's photo (from its manifest-pinned paths), never a client path
            raise ServiceError(404, "not_found", f"the photo of item {item_id!r} is missing on the server")
        return FileResponse(source, media_type=content_type, headers=headers)

    @app.get("/v1/items/{item_id}/similar", tags=["search"], summary="'More like this': never the item itself")
    async def similar(catalogue: Catalogue, item_id: ItemId, k: K = settings.default_k,
                      gender: Annotated[list[str], Query()] = [],  # noqa: B006
                      masterCategory: Annotated[list[str], Query()] = [],  # noqa: B006, N803
                      articleType: Annotated[list[str], Query()] = [],  # noqa: B006, N803
                      baseColour: Annotated[list[str], Query()] = []) -> dict:  # noqa: B006, N803
        filters = _filters(gender, masterCategory, articleType, baseColour)
        response = await run_in_threadpool(catalogue.similar, item_id, k, filters)
        return {"id": item_id, **response_json(response, k, filters)}

    @app.put("/v1/items/{item_id}", tags=["items"], status_code=200,
             summary="Add or replace an item (API key): photo + metadata; durable when answered",
             responses={201: {"description": "added"}, 200: {"description": "replaced"}})
    async def put_item(request: Request, catalogue: Catalogue, item_id: ItemId,
                       image: Annotated[UploadFile, File(description="the item's photo")],
                       articleType: Annotated[str, Form(max_length=200)],  # noqa: N803
                       productDisplayName: Annotated[str | None, Form(max_length=200)] = None,  # noqa: N803
                       baseColour: Annotated[str | None, Form(max_length=200)] = None,  # noqa: N803
                       gender: Annotated[str | None, Form(max_length=200)] = None,
                       masterCategory: Annotated[str | None, Form(max_length=200)] = None,  # noqa: N803
                       subCategory: Annotated[str | None, Form(max_length=200)] = None,  # noqa: N803
                       season: Annotated[str | None, Form(max_length=200)] = None,
                       year: Annotated[str | None, Form(max_length=200)] = None,
                       usage: Annotated[str | None, Form(max_length=200)] = None) -> JSONResponse:
        refusal = check_api_key(settings, {k.lower(): v for k, v in request.headers.items()})
        if refusal is not None:  # the Guard checked already; this keeps the route safe on its own
            raise refusal
        given = dict(zip(METADATA_FIELDS, (productDisplayName, articleType, baseColour, gender, masterCategory,
                                           subCategory, season, year, usage), strict=True))
        data = await _read_upload(image, settings.max_upload_bytes)
        result = await run_in_threadpool(catalogue.put, item_id, data, {k: v for k, v in given.items() if v})
        body = {**item_json(result.item), "created": result.created,
                "near_duplicates": [hit_json(h) for h in result.near_duplicates],
                "near_duplicate_cosine": catalogue.near_duplicate_cosine,
                "timings_ms": {"embed": round(result.embed_ms, 3), "write": round(result.write_ms, 3)}}
        return JSONResponse(body, status_code=201 if result.created else 200)

    @app.delete("/v1/items/{item_id}", tags=["items"], summary="Remove an item (API key); durable when answered")
    async def delete_item(request: Request, catalogue: Catalogue, item_id: ItemId) -> dict:
        refusal = check_api_key(settings, {k.lower(): v for k, v in request.headers.items()})
        if refusal is not None:
            raise refusal
        seq = await run_in_threadpool(catalogue.remove, item_id)
        return {"id": item_id, "removed": True, "seq": seq}

    return app


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def answer(status: int, error: str, detail: Any, headers: dict | None = None) -> JSONResponse:
        metrics.errors.labels(error).inc()
        return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        error = getattr(exc, "error", None) or ERROR_KINDS.get(exc.status_code, "http_error")
        detail = exc.detail
        if exc.status_code == 413 and not isinstance(exc, ServiceError):
            detail = "the request body is over the size limit"
        return answer(exc.status_code, error, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for problem in exc.errors()[:10]:
            where = ".".join(str(part) for part in problem.get("loc", ()) if part not in ("body", "query", "path"))
            problems.append(f"{where}: {problem.get('msg', 'invalid')}" if where else str(problem.get("msg")))
        return answer(422, "invalid_request", "; ".join(problems) or "invalid request")

    @app.exception_handler(InvalidImageError)
    async def invalid_image(_: Request, exc: InvalidImageError) -> JSONResponse:
        if isinstance(exc.__cause__, UnidentifiedImageError):
            return answer(415, "unsupported_media_type", str(exc))
        return answer(422, "invalid_image", str(exc))

    @app.exception_handler(LiveError)
    async def live_error(_: Request, exc: LiveError) -> JSONResponse:
        return answer(422, "invalid_request", str(exc))

    @app.exception_handler(UnknownItemError)
    async def unknown_item(_: Request, exc: UnknownItemError) -> JSONResponse:
        return answer(404, "not_found", str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return answer(500, "internal_error", "an unexpected error; it has been logged")


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          limit_concurrency: int = 256) -> None:
    """Run the service under uvicorn in this process (one model and index per process)."""
    import uvicorn

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, workers=1,
                limit_concurrency=limit_concurrency, timeout_graceful_shutdown=10, server_header=False)
