"""The HTTP service: the live catalogue (:mod:`lookalike.live`) over FastAPI, kept current for months.

    app = create_app(Settings.load())               # loads the published build + live changes in the background
    uvicorn.run(app, host="127.0.0.1", port=8000)   # or: lookalike serve [--workers N]

This module is the service's frame: settings, the outer guard (metrics, the early 413, write auth before
the body is read), error shapes, and the app's lifecycle; the routes are :mod:`lookalike.service.routes`. Every
error is JSON ``{"error": <kind>, "detail": <for a person>}``: 4xx for anything the client sent, a
generic 500 (logged here, never a traceback to the client) otherwise, 503 while no catalogue is loaded
(the reason in words, never a server path).

The catalogue is held by a :class:`lookalike.live.CatalogueHolder`: it follows the journal (other
workers' writes), watches ``artifacts/current.json`` and swaps a new build in without a gap; SIGHUP
or ``POST /v1/admin/reload`` make it look at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from PIL import UnidentifiedImageError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.artifacts import ArtifactMismatchError, published_build_version
from lookalike.live import (
    CatalogueHolder,
    JournalBusyError,
    LiveCatalogue,
    LiveError,
    StaleDatabaseError,
    UnknownItemError,
)
from lookalike.live.records import MAX_PHOTOS_PER_ITEM
from lookalike.model.preprocessing import InvalidImageError
from lookalike.search.similarity import SimilarityError
from lookalike.service.routes import api_router, operations_router
from lookalike.service.settings import ServiceError, Settings, check_api_key
from lookalike.service.text_routes import text_router
from lookalike.text.search import prepare_text_search

log = logging.getLogger("lookalike.service.app")

MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the metadata fields around the image
ERROR_KINDS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "invalid_request", 429: "too_many_requests", 503: "not_ready"}

def describe(error: BaseException) -> str:
    """Why a catalogue cannot be loaded, for a client: the kind of problem, never a server path (the log has it)."""
    if isinstance(error, StaleDatabaseError):
        return ("the live database is older than the last fold the build holds (a backup from before it); "
                "the server log says which changes are missing")
    if isinstance(error, ArtifactMismatchError):
        return f"the build cannot be loaded: its artifacts are {error.kind}; the server log says which file"
    if isinstance(error, LiveError):
        return "the live database cannot be used; the server log says why"
    if isinstance(error, OSError):
        return "a file of the build or the live database cannot be read; the server log says which"
    return "the catalogue cannot be loaded; the server log says why"


# ------------------------------------------------------------------------------ metrics


MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set by ``serve --workers N``: every worker's metrics in one scrape


class Metrics:
    """Prometheus metrics in a registry of their own (one per app, so tests can build several). Under several
    workers (:data:`MULTIPROCESS_ENV` set) each worker writes its values to that folder and a scrape of any
    worker answers the sum over all of them (gauges: the largest value). Replicas that share no folder (Ray
    Serve, lookalike/service/ray_serve.py) set :attr:`gather`: this replica's exposition in, every replica's
    summed out (:func:`sum_expositions`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("lookalike_http_requests", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("lookalike_http_request_seconds", "HTTP request latency by endpoint",
                                 ["endpoint", "method"], registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .075, .1, .15, .25, .5, 1, 2.5, 5, 10))
        self.errors = Counter("lookalike_http_errors", "Error responses by kind", ["kind"], registry=self.registry)
        self.catalogue_size = Gauge("lookalike_catalogue_items", "Items in the live catalogue",
                                    registry=self.registry, multiprocess_mode="max")
        self.live_changes = Gauge("lookalike_live_changes", "Live changes since the pinned build",
                                  registry=self.registry, multiprocess_mode="max")
        self.build_swaps = Gauge("lookalike_build_swaps", "Builds swapped in since the process started",
                                 registry=self.registry, multiprocess_mode="max")
        self.gather: Callable[[bytes], bytes] | None = None

    def observe(self, holder: CatalogueHolder) -> None:
        """Set the gauges from what ``holder`` serves now (at each scrape, and before a replica reports)."""
        catalogue = holder.catalogue
        if catalogue is not None:
            self.catalogue_size.set(len(catalogue))
            self.live_changes.set(catalogue.applied_seq - catalogue.folded_seq)
        self.build_swaps.set(holder.swaps)

    def own(self) -> bytes:
        """This process's values, or every worker's when they share a multiprocess folder."""
        if os.environ.get(MULTIPROCESS_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def exposition(self) -> bytes:
        """The scrape: every worker's and replica's values where they are gathered, else this process's."""
        own = self.own()
        if self.gather is None:
            return own
        try:
            return self.gather(own)
        except Exception:  # noqa: BLE001 - the other replicas' values are out of reach: this one's still count
            log.warning("cannot gather the other replicas' metrics; answering this replica's", exc_info=True)
            return own


def sum_expositions(texts: Iterable[bytes]) -> bytes:
    """Prometheus text expositions of several processes as one: counters and histograms summed sample by sample
    (same name and labels), gauges their largest value, ``_created`` the earliest."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            found = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in found:
                    found[key] = sample.value
                elif sample.name.endswith("_created"):
                    found[key] = min(found[key], sample.value)
                elif family.type == "gauge":
                    found[key] = max(found[key], sample.value)
                else:
                    found[key] += sample.value

    class Summed:
        def collect(self) -> Iterable[Metric]:
            for name, family in families.items():
                for (sample_name, labels), value in values[name].items():
                    family.add_sample(sample_name, dict(labels), value)
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Summed())  # type: ignore[arg-type]
    return generate_latest(registry)


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
        path = scope.get("path", "")
        if (scope.get("method") in ("PUT", "DELETE", "PATCH") and path.startswith("/v1/")) or \
                path.startswith("/v1/admin/"):
            return check_api_key(self.settings, headers)
        return None


def _json_error(error: ServiceError) -> JSONResponse:
    return JSONResponse({"error": error.error, "detail": error.detail}, status_code=error.status_code,
                        headers=error.headers)


# ------------------------------------------------------------------------------ the app


def liveness(settings: Settings) -> Callable[[CatalogueHolder], str | None]:
    """What makes /healthz fail (so an orchestrator restarts the process): the keeper thread died, or no
    catalogue could be loaded for ``liveness_grace_seconds``. Answering at all shows the event loop runs."""

    def problem(holder: CatalogueHolder) -> str | None:
        if not holder.alive:
            return "the catalogue keeper thread is not running"
        waited = time.monotonic() - holder.started_at
        if holder.catalogue is None and holder.failure is not None and waited > settings.liveness_grace_seconds:
            return f"no catalogue loaded after {waited:.0f} s: {holder.failure.reason}"
        return None

    return problem


def create_app(settings: Settings | None = None, catalogue: LiveCatalogue | None = None,
               loader: Callable[[], LiveCatalogue] | None = None) -> FastAPI:
    """The FastAPI app over ``catalogue``, or over what ``loader`` returns (called in the background at start-up,
    so /healthz answers at once and /readyz turns 200 when loading is done). Neither: load from ``settings``."""
    settings = settings or Settings.load()
    directory = Path(settings.artifacts) if settings.artifacts else settings.root / "artifacts"
    watched = (loader is None and catalogue is None) or settings.artifacts is not None
    if loader is None:
        def loader() -> LiveCatalogue:
            return LiveCatalogue.load(directory, settings.live_db, root=settings.root,
                                      max_bytes=settings.max_upload_bytes,
                                      near_duplicate_cosine=settings.near_duplicate_cosine)
    load_catalogue = loader

    def load_with_text_search() -> LiveCatalogue:
        """A build is served with its text search made (tower, word index): beside the build still serving, in the
        keeper's thread, never in a request; and from the files the build was verified with."""
        loaded = load_catalogue()
        prepare_text_search(loaded)
        return loaded

    if catalogue is not None:
        prepare_text_search(catalogue)
    holder = CatalogueHolder(load_with_text_search,
                             (lambda: published_build_version(directory)) if watched else (lambda: None),
                             describe, settings.poll_seconds, settings.follow_seconds, catalogue=catalogue,
                             switch_delay_seconds=settings.switch_delay_seconds)
    metrics = Metrics()
    max_body = settings.max_upload_bytes + MULTIPART_OVERHEAD

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        holder.start()
        try:  # SIGHUP: look for a new build now (only the main thread's loop can take signals)
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, holder.request_reload)
        except (RuntimeError, ValueError, NotImplementedError):
            log.debug("SIGHUP not handled in this process")
        if settings.wait_for_load:
            await asyncio.to_thread(holder.wait_until_loaded)
        yield
        holder.stop()

    app = FastAPI(title="lookalike", version="1", lifespan=lifespan,
                  form_limits={"max_fields": 64, "max_files": MAX_PHOTOS_PER_ITEM, "max_part_size": 16 * 1024},
                  description="Visual similarity search and 'more like this' over a live product catalogue. "
                              "Filters and an item's metadata fields are the columns of the catalogue being "
                              "served, by their own names (GET /v1/stats lists them under catalogue). "
                              "Errors are JSON {error, detail}. Writes need the API key (X-API-Key).")
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.settings = settings
    install_error_handlers(app, metrics)
    app.include_router(operations_router(liveness(settings), metrics))
    app.include_router(api_router(settings.max_k, settings.default_k, settings.max_upload_bytes))
    app.include_router(text_router(settings.max_k, settings.default_k))  # GET /v1/search?q=
    app.add_middleware(Guard, settings=settings, metrics=metrics, max_body=max_body)
    if settings.cors_origins:  # outside the Guard: its 401/403/413 carry the CORS headers a browser needs
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"])
    return app


def one_blas_thread() -> None:
    """Limit this server process to one BLAS thread. Requests already run in parallel on threads of their own;
    a BLAS pool on top only spins: after each write's near-duplicate scan (a small numpy product) OpenBLAS's
    threads kept a core busy for ~100 ms (bench/replicas.py measured the CPU per write)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def app_from_environment() -> FastAPI:
    """The app a worker process builds (``uvicorn lookalike.service.app:app_from_environment --factory``): settings
    from the ``LOOKALIKE_*`` variables the parent set (:meth:`Settings.environ`)."""
    one_blas_thread()
    logging.basicConfig(level=os.environ.get("LOOKALIKE_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    return create_app(Settings.load())


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

    @app.exception_handler(SimilarityError)
    async def similarity_error(_: Request, exc: SimilarityError) -> JSONResponse:
        return answer(422, "invalid_request", str(exc))

    @app.exception_handler(JournalBusyError)
    async def journal_busy(_: Request, exc: JournalBusyError) -> JSONResponse:
        log.warning("write refused: %s", exc)
        return answer(503, "journal_busy", "the live catalogue cannot take writes right now; nothing was "
                                           "written: retry", {"Retry-After": "5"})

    @app.exception_handler(UnknownItemError)
    async def unknown_item(_: Request, exc: UnknownItemError) -> JSONResponse:
        return answer(404, "not_found", str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return answer(500, "internal_error", "an unexpected error; it has been logged")




def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          limit_concurrency: int = 256, workers: int = 1) -> None:
    """Run the service under uvicorn: in this process, or in ``workers`` processes sharing the port and the
    journal (each loads its own model and index, and follows the others' writes)."""
    import uvicorn

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    options = {"host": host, "port": port, "log_level": log_level, "limit_concurrency": limit_concurrency,
               "timeout_graceful_shutdown": 10, "server_header": False}
    if workers == 1:
        one_blas_thread()
        uvicorn.run(create_app(settings), workers=1, **options)
        return
    os.environ.update(settings.model_copy(update={"wait_for_load": True}).environ())
    metrics_dir = tempfile.mkdtemp(prefix="lookalike-metrics-")  # empty at start, as prometheus_client requires
    os.environ[MULTIPROCESS_ENV] = metrics_dir  # read by each worker's prometheus_client when it starts
    os.environ["LOOKALIKE_LOG_LEVEL"] = log_level.upper()
    # a worker is ready once its catalogue is loaded: SIGHUP's rolling restart waits that long for each one
    try:
        uvicorn.run("lookalike.service.app:app_from_environment", factory=True, workers=workers,
                    timeout_worker_healthcheck=300, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
