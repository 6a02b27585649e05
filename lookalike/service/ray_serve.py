"""The service as Ray Serve replicas: ``lookalike serve --ray [--replicas N] [--ray-address ADDRESS]``.

Each replica is a whole server, the same FastAPI app as ``lookalike serve`` builds
(:func:`lookalike.service.app.create_app`): it loads its own model and index and follows the same journal,
so a write taken by one replica is served by the others within a follow (``min_seq`` reads wait for it).
Ray Serve's HTTP proxy listens on ``--host``/``--port`` on every node that runs a replica and routes each
request to a replica.

Serve runs the app's ASGI lifespan in each replica (uvicorn's lifespan code, at replica start and at its
graceful stop), so the catalogue keeper starts and stops there as under uvicorn. Replicas are built with
``wait_for_load``: a replica counts as started only once its catalogue is loaded, so the proxy never sends
a request to one that would answer 503 while loading (``serve.run`` returns once all are).

``/metrics`` on any replica answers the sum over every replica: each reports its values to one small actor
(:class:`MetricsBoard`, named, no CPU) every :data:`REPORT_SECONDS` and at each scrape, and the board sums the
latest of each (:func:`lookalike.service.app.sum_expositions`; a stopped replica's last values keep counting,
so counters never go back).

Ray is imported only here, and only by ``lookalike serve --ray``: nothing else in the project needs it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lookalike.live.journal import is_database_url
from lookalike.live.records import DB_ENV, resolve_db_path
from lookalike.service.settings import Settings

log = logging.getLogger("lookalike.service.ray_serve")

APP_NAME = "lookalike"  # the Serve application (and its one deployment) on the cluster
BOARD_NAME = f"{APP_NAME}-metrics"  # the actor that sums every replica's metrics (namespace BOARD_NAMESPACE)
BOARD_NAMESPACE = "lookalike"
REPORT_SECONDS = 1.0  # how often a replica reports its metrics to the board (a scrape reports at once too)
MAX_REPORTERS = 10_000  # replicas the board remembers (restarts included)
PROXY_LOCATION = "EveryNode"  # a proxy on every node with a replica: point a load balancer at all of them
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class RayServeError(ValueError):
    """A deployment that cannot work as asked (worded for the operator: the CLI prints it as one line)."""


class _Stopped(BaseException):
    """Raised in the main thread by SIGTERM or SIGINT, so a start-up still under way is left too; a
    BaseException, so no ``except Exception`` inside Ray swallows it before the shutdown runs."""


def replica_settings(settings: Settings) -> Settings:
    """``settings`` as every replica must see them, wherever Ray places it: the artifacts folder, the project
    root and a SQLite journal as absolute paths (a replica's working folder is Ray's, not ours), and
    ``wait_for_load`` (a replica joins the proxy's rotation once its catalogue is loaded)."""
    root = Path(settings.root).resolve()
    artifacts = Path(settings.artifacts).resolve() if settings.artifacts else root / "artifacts"
    location = settings.live_db or os.environ.get(DB_ENV)
    live_db = location if is_database_url(location) else str(resolve_db_path(location, root).resolve())
    return settings.model_copy(update={"root": root, "artifacts": str(artifacts), "live_db": live_db,
                                       "wait_for_load": True})


def application(settings: Settings, replicas: int = 1, replica_cpus: float = 1.0,
                log_level: str = "info") -> Any:
    """The Serve application: ``replicas`` copies of the service, each reserving ``replica_cpus`` CPUs, each
    building its app from ``settings`` (pickled to the replica as they are: every replica sees the same)."""
    from ray import serve

    from lookalike.service.app import create_app, liveness, one_blas_thread

    @serve.deployment(name=APP_NAME, num_replicas=replicas, ray_actor_options={"num_cpus": replica_cpus})
    @serve.ingress()  # the app is built in the replica (__serve_build_asgi_app__): its keeper thread lives there
    class LookalikeReplica:
        """One server in a Ray actor: the app of ``create_app``, its lifespan run by Serve."""

        def __init__(self, served: Settings, level: str) -> None:
            logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
            logging.getLogger("lookalike").setLevel(level.upper())
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # /metrics: this replica's own registry
            one_blas_thread()
            self.settings = served

        def __serve_build_asgi_app__(self) -> Any:
            app = create_app(self.settings)
            report_metrics(app)
            return app

        def check_health(self) -> None:
            """What /healthz checks (the keeper thread runs): Serve restarts a replica whose check raises."""
            problem = liveness(self.settings)(self.app.state.holder)
            if problem is not None:
                raise RuntimeError(problem)

    return LookalikeReplica.bind(settings, log_level)


class MetricsBoard:
    """The latest metrics of every replica, summed on request: a Ray actor (see :func:`report_metrics`)."""

    def __init__(self) -> None:
        self.latest: dict[str, bytes] = {}

    def report(self, replica: str, exposition: bytes) -> None:
        if replica in self.latest or len(self.latest) < MAX_REPORTERS:
            self.latest[replica] = exposition

    def exposition(self) -> bytes:
        from lookalike.service.app import sum_expositions

        return sum_expositions(self.latest.values())


def start_metrics_board() -> Any:
    """The board of this deployment (made once, kept by the process that serves; it uses no CPU)."""
    import ray

    return ray.remote(num_cpus=0)(MetricsBoard).options(
        name=BOARD_NAME, namespace=BOARD_NAMESPACE, get_if_exists=True).remote()


def report_metrics(app: Any) -> None:
    """In a replica: report ``app``'s metrics to the board every :data:`REPORT_SECONDS`, and make its /metrics
    the board's sum (after reporting its own, so a scrape counts itself). Without a board (an app built outside
    :func:`serve_on_ray`) /metrics stays this replica's own."""
    import ray

    try:
        board = ray.get_actor(BOARD_NAME, namespace=BOARD_NAMESPACE)
    except ValueError:
        log.warning("no metrics board: /metrics answers this replica's values only")
        return
    metrics, holder = app.state.metrics, app.state.holder
    replica = f"{socket.gethostname()}:{os.getpid()}"

    def gather(own: bytes) -> bytes:
        board.report.remote(replica, own)  # an actor runs one caller's calls in order: the sum holds this one
        return ray.get(board.exposition.remote(), timeout=10)

    def keep_reporting() -> None:
        while True:
            time.sleep(REPORT_SECONDS)
            try:
                metrics.observe(holder)
                board.report.remote(replica, metrics.own())
            except Exception:  # noqa: BLE001 - the board may be gone while the deployment stops
                log.debug("reporting metrics failed", exc_info=True)

    metrics.gather = gather
    threading.Thread(target=keep_reporting, name="lookalike-metrics", daemon=True).start()


def serve_on_ray(settings: Settings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
                 replicas: int = 1, address: str | None = None, replica_cpus: float = 1.0) -> None:
    """Deploy the service as ``replicas`` Ray Serve replicas behind Serve's proxy on ``host``:``port``, on the
    cluster at ``address`` (``auto``, ``host:6379``, ``ray://host:10001``) or on a local Ray started for it;
    block until SIGTERM or SIGINT, then take the deployment down (and the local Ray with it)."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format=LOG_FORMAT)
    if replicas < 1 or replica_cpus <= 0:
        raise RayServeError(f"--replicas must be at least 1 and --replica-cpus above 0, got {replicas} and "
                            f"{replica_cpus}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # as embed-ray: no usage report unless asked for
    import ray
    from ray import serve

    target = replica_settings(settings)
    with _stopped_by_signals():
        try:
            if address:
                ray.init(address=address)
            else:
                ray.init(address="local")  # a new Ray for this service, never one found by chance
            _listen_for_stop()  # again: ray.init sets a SIGTERM handler of its own
            _check_room(ray.cluster_resources().get("CPU", 0.0), replicas, replica_cpus, local=not address)
            board = start_metrics_board()  # noqa: F841 - held here: the board lives while this process serves
            serve.start(proxy_location=PROXY_LOCATION, http_options={"host": host, "port": port})
            serve.run(application(target, replicas, replica_cpus, log_level), name=APP_NAME, route_prefix="/")
            log.info("%d replica(s) serving on http://%s:%d (Ray Serve, %s); SIGTERM or Ctrl-C stops them",
                     replicas, host, port, address or "a local Ray")
            while True:
                time.sleep(3600)
        except _Stopped as stop:
            log.info("%s: shutting the deployment down", stop)
        finally:
            _ignore_more_stops()
            _take_down(ray, serve, local=not address)


def _check_room(cpus: float, replicas: int, replica_cpus: float, local: bool) -> None:
    """Replicas that cannot all be placed would leave the start waiting for ever: refused on a local Ray,
    a warning on a cluster (an autoscaler may add nodes)."""
    needed = replicas * replica_cpus
    if needed <= cpus:
        return
    message = (f"{replicas} replica(s) of {replica_cpus:g} CPU need {needed:g} CPUs; the Ray cluster has "
               f"{cpus:g}: lower --replicas or --replica-cpus")
    if local:
        raise RayServeError(message)
    log.warning("%s (or add nodes); the start waits until they fit", message)


def _take_down(ray: Any, serve: Any, local: bool) -> None:
    """Delete the application and shut Serve down; on a shared cluster Serve stays up while other
    applications run on it. Then leave Ray (which stops a local one)."""
    if not ray.is_initialized():
        return
    try:
        if local:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
            others = set(serve.status().applications) - {APP_NAME}
            if others:
                log.info("Serve keeps running for the cluster's other applications: %s", ", ".join(sorted(others)))
            else:
                serve.shutdown()
    except Exception:  # noqa: BLE001 - the shutdown goes on: Ray must still be left
        log.exception("shutting Ray Serve down failed")
    finally:
        ray.shutdown()


def _raise_stopped(signum: int, _frame: Any) -> None:
    raise _Stopped(signal.Signals(signum).name)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _listen_for_stop() -> None:
    if _in_main_thread():
        for number in STOP_SIGNALS:
            signal.signal(number, _raise_stopped)


def _ignore_more_stops() -> None:
    """While shutting down: SIGTERM waits for the shutdown; a second Ctrl-C interrupts it."""
    if _in_main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`_Stopped` meanwhile; the handlers found are put back after."""
    if not _in_main_thread():  # signals reach only the main thread: another caller stops it its own way
        yield
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    _listen_for_stop()
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
