"""The ``lookalike`` command line: one entry point, one function per subcommand.

    lookalike query photo.jpg --k 5 [--json]
    lookalike similar 15970 --k 5
    lookalike related --k 10 --out related.csv
    lookalike evaluate-folder /path/to/catalogue [--baseline] [--out metrics.json]
    lookalike duplicates --out duplicates.csv [--threshold 0.99] [--build-only]
    lookalike serve [--port 8000] [--live-db live/live.db | postgresql://...] [--workers 2 | --ray --replicas 2]
    lookalike fold [--live-db live/live.db]      # then dvc repro; the service swaps the new build in
    lookalike compact [--live-db live/live.db]   # once the fold is in the published build
    lookalike embed-ray CATALOGUE --out shards/ [--address HEAD:6379] [--workers N]

Also ``python -m lookalike.cli``. Any failure prints exactly one line, ``error: <message>``, on
stderr and exits non-zero: 2 for a problem the user can fix (bad image, missing or mismatched
artifacts, unknown id, bad arguments or settings, a live database that cannot be used), 1 for
anything else: a bug or an environment problem, reported as "unexpected". ``--verbose`` adds the
traceback on stderr (otherwise it goes to the ``lookalike.cli`` logger at debug level).

Adding a subcommand is one decorated function, its arguments declared in the decorator::

    @subcommand("name", "one line of help", lambda p: p.add_argument("--flag"))
    def run_name(args: argparse.Namespace) -> int:
        ...
        return 0

Heavy imports (the inference runtime, FAISS) happen inside the subcommands, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lookalike.catalogue.description import CatalogueRoles

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import: no start-up chatter

log = logging.getLogger("lookalike.cli")

PROG = "lookalike"
ARTIFACTS_ENV = "LOOKALIKE_ARTIFACTS"
USER_ERROR = 2  # the user can fix it: input, arguments, artifacts
UNEXPECTED_ERROR = 1


class UsageError(Exception):
    """Bad command-line arguments (raised instead of argparse's usage-and-exit)."""


class UserError(Exception):
    """Something the user can fix, worded for them (an unknown id, a missing database, bad settings)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit; we want one line
        raise UsageError(f"{message} (see {self.prog} --help)")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def subcommand(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] = lambda _: None):
    """Register ``run(args) -> exit status`` as ``lookalike <name>``; ``configure`` adds its arguments."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in COMMANDS:
            raise RuntimeError(f"subcommand {name!r} registered twice")
        COMMANDS[name] = Command(name, help, configure, run)
        return run

    return register


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is meant for a person (imported lazily: they live beside the heavy imports)."""
    from lookalike.artifacts import ArtifactMismatchError
    from lookalike.catalogue.description import DescriptionError
    from lookalike.catalogue.reading import CatalogueError
    from lookalike.live import LiveError, UnknownItemError
    from lookalike.model.preprocessing import InvalidImageError
    from lookalike.text.tower import TextQueryError

    return (UsageError, UserError, InvalidImageError, ArtifactMismatchError, LiveError, UnknownItemError,
            TextQueryError, CatalogueError, DescriptionError)


@contextmanager
def native_stderr_quiet(verbose: bool = False) -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null meanwhile, unless ``verbose``.

    LiteRT's native start-up line ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    ignores every log-level setting and would surround the one ``error:`` line. Python exceptions
    are unaffected: they are printed after this returns.
    """
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def artifacts_dir(args: argparse.Namespace) -> Path:
    """--artifacts, else $LOOKALIKE_ARTIFACTS, else ./artifacts (works the same for an installed package)."""
    return Path(args.artifacts or os.environ.get(ARTIFACTS_ENV) or "artifacts")


def _load_searcher(args: argparse.Namespace):
    from lookalike.search.engine import Searcher

    directory = artifacts_dir(args)
    # image paths in a build are relative to its project: the folder that holds artifacts/
    with native_stderr_quiet(args.verbose):
        return Searcher.load(directory, root=directory.resolve().parent)


BUILD_ONLY_NOTICE = ("the published build only: live changes (items added, replaced or removed through the service "
                     "since the build) are not included; the service and the page include them")


def _print_response(response, as_json: bool, roles: CatalogueRoles) -> None:
    """The matches, one a line: rank, score, id, then the build's main label and title (``roles``: its catalogue
    roles, so each catalogue shows its own columns)."""
    if as_json:
        print(json.dumps({**response.to_dict(), "live_changes_included": False, "notice": BUILD_ONLY_NOTICE},
                         indent=2))
        return
    for match in response.matches:
        label = f"{match.metadata.get(roles.label, ''):<18} " if roles.label else ""
        title = match.metadata.get(roles.title, "") if roles.title else ""
        print(f"{match.rank:>3}  {match.score:.4f}  {match.id:>6}  {label}{title}")
    print(f"({response.total_ms:.1f} ms: embed {response.embed_ms:.1f}, search {response.search_ms:.1f}; "
          f"{BUILD_ONLY_NOTICE})")


def _write_out(path: str, data: bytes) -> None:
    """Write a result file; a folder that is missing or not writable is the user's to fix."""
    from lookalike.artifacts import write_bytes

    try:
        write_bytes(path, data)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from error


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _k_and_json(parser: argparse.ArgumentParser, k: int = 5) -> None:
    parser.add_argument("--k", type=_positive_int, default=k, help=f"number of results (default {k})")
    parser.add_argument("--json", action="store_true", help="print the whole response as JSON")


def _similarity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--similarity", default=None, metavar="MODE",
                        help="what 'alike' means: overall (default), colour, type, style, picture, or weights such as "
                             "'type:1,colour:0.5' over the build's sub-spaces")


def _searched(call):
    """A search call whose similarity the build cannot answer becomes a user error (one line, exit 2)."""
    from lookalike.search.similarity import SimilarityError

    try:
        return call()
    except SimilarityError as error:
        raise UserError(str(error)) from None


# ---------------------------------------------------------------------------------- subcommands


def _query_args(parser: argparse.ArgumentParser) -> None:
    from lookalike.text.search import add_query_arguments

    parser.add_argument("image", nargs="?", help="path of a photo (optional with --text or --like)")
    _k_and_json(parser)
    _similarity(parser)
    add_query_arguments(parser)


@subcommand("query", "catalogue items most similar to an image file, to words (--text), or to both", _query_args)
def run_query(args: argparse.Namespace) -> int:
    from lookalike.text.search import query_from_arguments, wants_text_search

    searcher = _load_searcher(args)
    if wants_text_search(args):  # words, items, weights: lookalike/text/search.py
        _print_response(query_from_arguments(searcher, args), args.json, searcher.roles)
        return 0
    if args.image is None:
        raise UserError("give a photo, --text words or --like item ids")
    _print_response(_searched(lambda: searcher.search(args.image, args.k, similarity=args.similarity)), args.json,
                    searcher.roles)
    return 0


@subcommand("similar", "'more like this' for a catalogue item id (never the item itself)",
            lambda p: (p.add_argument("item_id", type=int), _k_and_json(p), _similarity(p)))
def run_similar(args: argparse.Namespace) -> int:
    searcher = _load_searcher(args)
    try:
        searcher.row_of(args.item_id)
    except KeyError as error:
        raise UserError(error.args[0]) from None
    _print_response(_searched(lambda: searcher.similar_items(args.item_id, args.k, similarity=args.similarity)),
                    args.json, searcher.roles)
    return 0


def _related_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=_positive_int, default=10, help="related items per item (default 10)")
    parser.add_argument("--out", required=True, help="CSV file to write (columns id, rank, related_id, score)")


@subcommand("related", "export id -> k related ids with scores for the whole catalogue", _related_args)
def run_related(args: argparse.Namespace) -> int:
    table = _load_searcher(args).related_table(args.k)
    _write_out(args.out, table.to_csv(index=False).encode())
    print(f"wrote {len(table)} rows ({table['id'].nunique()} items x up to {args.k}) to {args.out}")
    return 0


def _catalogue_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalogue", help="the folder's catalogue description (default: data.catalogue of "
                                            "params.yaml, the project's own catalogue)")


def _description(args: argparse.Namespace):
    """The description --catalogue names, else the project's (params.yaml data.catalogue)."""
    from lookalike.catalogue.description import DescriptionError, load_description
    from lookalike.params import ParamsError, catalogue_description, load_params

    try:
        if args.catalogue:
            return load_description(args.catalogue)
        return catalogue_description(load_params())
    except (DescriptionError, ParamsError) as error:
        raise UserError(str(error)) from None


def _evaluate_folder_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="a catalogue folder, laid out as --catalogue describes")
    _catalogue_arg(parser)
    parser.add_argument("--out", help="also write the metrics to this JSON file")
    parser.add_argument("--baseline", action="store_true", help="also score the pretrained backbone features")


@subcommand("evaluate-folder", "evaluate the pinned model on another catalogue folder (no retraining)",
            _evaluate_folder_args)
def run_evaluate_folder(args: argparse.Namespace) -> int:
    from lookalike.artifacts import write_json
    from lookalike.evaluation.folder import evaluate_folder

    result = evaluate_folder(_load_searcher(args), args.folder, _description(args), with_baseline=args.baseline)
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return 0


def _cosine(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"the cosine threshold must be in (0, 1], got {value}")
    return value


def _duplicates_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="CSV file to write, one row per item in a group")
    parser.add_argument("--threshold", type=_cosine, help="cosine at or above which two items are candidates "
                                                          "(default: the build's calibrated threshold)")
    parser.add_argument("--live-db", help="live catalogue database (default: $LOOKALIKE_LIVE_DB or live/live.db "
                                          "beside the artifacts folder); its changes are included when it exists")
    parser.add_argument("--build-only", action="store_true", help="the published build alone, no live changes")


@subcommand("duplicates", "list the near-duplicate groups of the catalogue as served: the published build plus "
                          "the live changes (CSV)", _duplicates_args)
def run_duplicates(args: argparse.Namespace) -> int:
    from lookalike.catalogue.description import CatalogueRoles
    from lookalike.live import LiveCatalogue
    from lookalike.search.duplicates import (
        colour_differences,
        duplicate_groups,
        load_published,
        report_columns,
        rule_of,
    )

    directory = artifacts_dir(args)
    root = directory.resolve().parent
    if args.build_only or _missing_journal(args.live_db, root):
        embeddings, items, photos, manifest = load_published(directory)
        rule = rule_of(manifest)
        threshold = args.threshold or rule["cosine"]
        roles = CatalogueRoles.from_manifest(manifest)
        table = duplicate_groups(embeddings, items, threshold, photos, rule["max_pixel_difference"],
                                 report_columns(roles))
        scope, total = f"build {manifest['build_id']}", len(items)
    else:
        with native_stderr_quiet(args.verbose):
            catalogue = LiveCatalogue.load(directory, args.live_db, root=root, readonly=True,
                                           near_duplicate_cosine=args.threshold)
        table, threshold, roles = catalogue.duplicate_report(), catalogue.near_duplicate_cosine, catalogue.roles
        scope, total = f"build {catalogue.build_id} + live changes through {catalogue.applied_seq}", len(catalogue)
    _write_out(args.out, table.to_csv(index=False).encode())
    groups = table["group"].nunique() if len(table) else 0
    colourways = (f"; {colour_differences(table, roles.colour)} with another {roles.colour} than their closest "
                  f"member" if roles.colour else "")  # the build's colour column, when its catalogue has one
    print(f"{groups} near-duplicate groups ({len(table)} of {total} items{colourways}) in {scope} at cosine >= "
          f"{threshold} and the same picture, written to {args.out}")
    return 0


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=os.environ.get("LOOKALIKE_HOST", "127.0.0.1"),
                        help="address to bind (default: $LOOKALIKE_HOST or 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("LOOKALIKE_PORT", "8000")),
                        help="port (default: $LOOKALIKE_PORT or 8000)")
    parser.add_argument("--live-db", help="live catalogue database (default: $LOOKALIKE_LIVE_DB or live/live.db "
                                          "beside the artifacts folder)")
    parser.add_argument("--api-key-file", help="file whose first line is the API key for writes "
                                               "(default: $LOOKALIKE_API_KEY_FILE, or the key in $LOOKALIKE_API_KEY)")
    parser.add_argument("--cors-origin", action="append", help="browser origin allowed to call the API "
                                                                "(repeatable; default: $LOOKALIKE_CORS_ORIGINS)")
    parser.add_argument("--max-upload-mb", type=float, help="largest image accepted (default 10)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--workers", type=_positive_int, default=1,
                        help="server processes sharing the port and the live database (default 1); each loads "
                             "the model and index and follows the others' writes")
    parser.add_argument("--ray", action="store_true",
                        help="run the servers as Ray Serve replicas behind Serve's HTTP proxy on --host/--port "
                             "instead of uvicorn workers (docs/operations.md, Replicas on Ray Serve)")
    parser.add_argument("--replicas", type=_positive_int,
                        help="with --ray: replicas (default 1), each a whole server following the same journal")
    parser.add_argument("--ray-address", help="with --ray: an existing Ray cluster (auto, the head's host:6379, or "
                                              "ray://host:10001); default: a local Ray started for the service")
    parser.add_argument("--replica-cpus", type=float,
                        help="with --ray: CPUs each replica reserves (default 1; 0.5 puts two on one core)")


@subcommand("serve", "run the HTTP search service over the build and the live catalogue (FastAPI on uvicorn, or "
                     "on Ray Serve with --ray)",
            _serve_args)
def run_serve(args: argparse.Namespace) -> int:
    from lookalike.service.app import serve
    from lookalike.service.settings import Settings, SettingsError

    directory = artifacts_dir(args)
    try:
        settings = Settings.load(artifacts=str(directory), root=directory.resolve().parent, live_db=args.live_db,
                                 api_key_file=args.api_key_file, cors_origins=args.cors_origin,
                                 max_upload_mb=args.max_upload_mb)
    except SettingsError as error:
        raise UserError(str(error)) from None
    if not args.ray:
        if args.replicas or args.ray_address or args.replica_cpus is not None:
            raise UserError("--replicas, --ray-address and --replica-cpus need --ray")
        serve(settings, host=args.host, port=args.port, log_level=args.log_level, workers=args.workers)
        return 0
    if args.workers != 1:
        raise UserError("--workers runs uvicorn processes; with --ray, --replicas sets how many servers run")
    from lookalike.service.ray_serve import RayServeError, serve_on_ray

    try:
        serve_on_ray(settings, host=args.host, port=args.port, log_level=args.log_level, replicas=args.replicas or 1,
                     address=args.ray_address, replica_cpus=1.0 if args.replica_cpus is None else args.replica_cpus)
    except RayServeError as error:
        raise UserError(str(error)) from None
    return 0


def _fold_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--live-db", help="live catalogue database (default: $LOOKALIKE_LIVE_DB or live/live.db "
                                          "beside the artifacts folder)")
    parser.add_argument("--out", help="delta folder the sample_subset stage reads (default: data/live_delta "
                                      "beside the artifacts folder)")


@subcommand("fold", "write the live catalogue's changes as the delta the next dvc repro builds in", _fold_args)
def run_fold(args: argparse.Namespace) -> int:
    from lookalike.catalogue.reading import LIVE_DELTA_DIR
    from lookalike.live.fold import fold

    directory = artifacts_dir(args)
    root = directory.resolve().parent
    store = _existing_journal(args.live_db, root)
    print(fold(store, directory, Path(args.out) if args.out else root / LIVE_DELTA_DIR).line())
    return 0


def _missing_journal(location: str | None, root: Path) -> str | None:
    """Why there is no journal at ``location`` (a SQLite file or a PostgreSQL URL), or None when there is one;
    never creates one."""
    from lookalike.live.journal import open_journal

    try:
        open_journal(location, root, readonly=True).close()
    except FileNotFoundError as error:
        return str(error)
    return None


def _existing_journal(location: str | None, root: Path):
    """The journal at ``location``, opened for writing; a UserError where there is none: fold and compact never
    create one."""
    from lookalike.live.journal import open_journal

    missing = _missing_journal(location, root)
    if missing:
        raise UserError(missing)
    return open_journal(location, root)


def _compact_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--live-db", help="live catalogue database (default: $LOOKALIKE_LIVE_DB or live/live.db "
                                          "beside the artifacts folder)")


@subcommand("compact", "drop the live changes the published build's fold superseded, and reclaim the space",
            _compact_args)
def run_compact(args: argparse.Namespace) -> int:
    from lookalike.live.fold import compact

    directory = artifacts_dir(args)
    print(compact(_existing_journal(args.live_db, directory.resolve().parent), directory).line())
    return 0


def _describe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="the catalogue folder: a table (CSV, Parquet, JSON Lines) with photo paths, "
                                       "folders of photos per class, or a folder of photos")
    parser.add_argument("--out", help="where to write the description (default: catalogues/<folder name>.yaml)")
    parser.add_argument("--use", action="store_true", help="also point params.yaml (data.catalogue_dir and "
                                                           "data.catalogue) at it, so `dvc repro` builds it")


@subcommand("describe", "guess a catalogue's description (what each column is) for you to check, then dvc repro",
            _describe_args)
def run_describe(args: argparse.Namespace) -> int:
    from lookalike.catalogue.guess import description_yaml, guess_description, point_params_at
    from lookalike.params import PROJECT_ROOT

    description, notes = guess_description(args.folder)
    out = Path(args.out) if args.out else PROJECT_ROOT / "catalogues" / f"{Path(args.folder).resolve().name}.yaml"
    text = description_yaml(description, notes, args.folder)
    _write_out(str(out), text.encode())
    print(text, end="")
    print(f"wrote {out}: check each guess" + (", then dvc repro" if args.use else
                                              "; --use points params.yaml at it"))
    if args.use:
        point_params_at(PROJECT_ROOT / "params.yaml", args.folder, os.path.relpath(out, PROJECT_ROOT))
        print("params.yaml now builds this catalogue: dvc repro")
    return 0


def _embed_ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a catalogue folder (laid out as --catalogue describes), or a text file "
                                       "listing image files, one path a line")
    _catalogue_arg(parser)
    parser.add_argument("--out", required=True, help="folder for the Parquet shards and report.json; a rerun "
                                                     "into the same folder reuses the finished shards")
    parser.add_argument("--address", help="an existing Ray cluster: the head's host:6379, or auto (the one "
                                          "`ray start` or $RAY_ADDRESS names); default: a local Ray started "
                                          "for this job")
    parser.add_argument("--workers", type=_positive_int, help="model actors (default: one per core locally, "
                                                               "the cluster's CPUs / --threads with --address)")
    parser.add_argument("--threads", type=_positive_int, default=1, help="runtime threads per actor (default 1)")
    parser.add_argument("--batch-size", type=_positive_int, help="images per model call (default 32)")
    parser.add_argument("--shard-rows", type=_positive_int, help="catalogue rows per shard (default 1024)")
    parser.add_argument("--object-store-mb", type=_positive_int, help="object store of a local Ray (default 256)")


@subcommand("embed-ray", "embed a catalogue with the pinned model on Ray Data into Parquet shards (resumable)",
            _embed_ray_args)
def run_embed_ray(args: argparse.Namespace) -> int:
    from lookalike.model.distributed import catalogue_table, default_workers, embed_table, files_table, model_from_build

    model_path, spec, model_sha256 = model_from_build(artifacts_dir(args))
    source = Path(args.source)
    if source.is_dir():
        table, catalogue_report = catalogue_table(source, _description(args))
    elif source.is_file():
        table, catalogue_report = files_table([line.strip() for line in source.read_text().splitlines()
                                               if line.strip()]), {}
    else:
        raise FileNotFoundError(f"no catalogue folder or file list at {source}")
    workers = args.workers or (None if args.address else max(1, default_workers() // args.threads))
    sizes = {name: value for name, value in (("batch_size", args.batch_size), ("shard_rows", args.shard_rows),
                                             ("object_store_mb", args.object_store_mb)) if value}
    report = embed_table(table, args.out, model_path, spec, model_sha256=model_sha256, workers=workers,
                         threads=args.threads, address=args.address, catalogue_report=catalogue_report, **sizes)
    print(report.line())
    return 0


# ---------------------------------------------------------------------------------- entry point


def _common_options(parser: argparse.ArgumentParser, default) -> None:
    """Options accepted before and after the subcommand name (the subcommand's copy must not reset them)."""
    parser.add_argument("--artifacts", default=default,
                        help=f"artifacts folder of a build (default: ${ARTIFACTS_ENV} or ./artifacts)")
    parser.add_argument("--verbose", "-v", action="store_true", default=False if default is None else default,
                        help="on error also print the traceback on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Visual similarity search over a pinned catalogue build.",
                     epilog="Errors print one line 'error: ...' and exit 2 (usage, input, artifacts) or 1 "
                            "(unexpected).")
    _common_options(parser, None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        _common_options(sub, argparse.SUPPRESS)
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def _one_line(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(str(text).split()) or type(error).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (never raises, never prints a traceback unless --verbose)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "--verbose" in argv or "-v" in argv  # known before parsing, so a usage error honours it too
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except SystemExit as exit_:  # --help: argparse has printed what was asked
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place every failure becomes one line
        if verbose:
            import traceback

            traceback.print_exception(error, file=sys.stderr)
        else:
            log.debug("%s failed", PROG, exc_info=True)
        try:
            expected = isinstance(error, _user_errors())
        except Exception:  # noqa: BLE001 - even a broken install must not end in a traceback
            expected = isinstance(error, UsageError)
        if expected:
            print(f"error: {_one_line(error)}", file=sys.stderr)
            return USER_ERROR
        hint = "" if verbose else " (rerun with --verbose for details)"
        print(f"error: unexpected {type(error).__name__}: {_one_line(error)}{hint}", file=sys.stderr)
        return UNEXPECTED_ERROR


if __name__ == "__main__":
    sys.exit(main())
