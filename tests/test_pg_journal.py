"""The journal in PostgreSQL (lookalike/live/pg_store.py) keeps every promise of the SQLite journal, shared by replicas.

The store's behaviours run on both backends (the ``location`` fixture: a fresh SQLite file, or a fresh database on
a throw-away PostgreSQL server, tests/pg_cluster.py); outages, kill -9 and the server's settings on PostgreSQL
alone. The live catalogue, fold and the service run over the scratch pipeline project of conftest.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pg_cluster import PgCluster, pg_cluster_fixture  # noqa: F401 - pytest finds the fixture (pg_cluster) here
from test_service import Server
from test_service import put as http_put

from lookalike.cli import main
from lookalike.live import (
    DB_ENV,
    Change,
    JournalBusyError,
    LiveCatalogue,
    LiveError,
    LiveStore,
    StaleDatabaseError,
    UnknownItemError,
)
from lookalike.live.fold import fold
from lookalike.live.journal import open_journal
from lookalike.live.pg_store import JournalAddress, PostgresStore
from lookalike.search.engine import Searcher

REPO = Path(__file__).resolve().parents[1]
DIM = 8
META = {"articleType": "Tshirts", "gender": "Men", "baseColour": "Blue", "masterCategory": "Apparel",
        "productDisplayName": "Live tee"}
BACKENDS = ("sqlite", "postgresql")


def vector(n: int) -> np.ndarray:
    values = np.random.default_rng(n).normal(size=DIM).astype(np.float32)
    return values / np.linalg.norm(values)


def put(store: LiveStore | PostgresStore, item_id: str, n: int, photos: int = 1, in_build: bool = False) -> Change:
    """Append a put of ``item_id``, version ``n`` (its name, vector and photo bytes say which), of ``photos`` photos."""
    more = [(vector(1000 * n + k), f"photo {n}-{k}".encode(), "image/png") for k in range(2, photos + 1)]
    return store.append("put", item_id, "build", "model", vector(n), {**META, "productDisplayName": str(n)},
                        f"photo {n}".encode(), "image/jpeg", more, in_build=in_build)


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a journal of its own is: a SQLite file, or a new database on the test server."""
    if request.param == "sqlite":
        return str(tmp_path / "live.db")
    return request.getfixturevalue("pg_cluster").new_database()


@pytest.fixture
def journal(location: str, tmp_path: Path) -> Iterator[LiveStore | PostgresStore]:
    store = open_journal(location, tmp_path)
    yield store
    store.close()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.new_database()


@pytest.fixture(scope="module")
def searcher(tiny_project: Path) -> Searcher:
    return Searcher.load(tiny_project / "artifacts", root=tiny_project)


def in_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run ``work(number)`` in ``count`` threads at once; the errors they raised."""
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            work(number)
        except BaseException as error:  # noqa: BLE001 - reported to the test
            errors.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


# ------------------------------------------------------------------------------ choosing the backend


def test_open_journal_picks_sqlite_by_default_and_postgresql_for_a_url(tmp_path: Path, pg_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(DB_ENV, raising=False)
    default = open_journal(None, tmp_path)
    assert isinstance(default, LiveStore) and default.path == tmp_path / "live" / "live.db"
    assert open_journal("other.db", tmp_path).path == tmp_path / "other.db"
    with pytest.raises(FileNotFoundError):  # a reader never creates a journal
        open_journal(pg_url, tmp_path, readonly=True)
    monkeypatch.setenv(DB_ENV, pg_url)
    store = open_journal(None, tmp_path)
    assert isinstance(store, PostgresStore) and store.path == pg_url and store.path.name == pg_url
    reader = open_journal(pg_url.replace("postgresql://", "postgres://"), tmp_path, readonly=True)
    assert isinstance(reader, PostgresStore) and reader.readonly and reader.store_id == store.store_id
    with pytest.raises(LiveError, match="read-only"):
        put(reader, "A", 1)
    reader.save_reembedding(1, "other", vector(1))  # a reader caches nothing, silently
    assert store.last_seq() == 0


def test_the_printed_address_never_shows_the_password():
    address = JournalAddress.of("postgresql://shop:s3cret@db.internal:5432/live?password=x&sslmode=require")
    assert address == "postgresql://shop@db.internal:5432/live?sslmode=require" and "s3cret" not in address.name


def test_a_database_of_another_schema_version_is_refused(pg_url: str, tmp_path: Path):
    open_journal(pg_url, tmp_path).close()
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LiveError, match="schema version 1"):
        open_journal(pg_url, tmp_path)


# ------------------------------------------------------------------------------ the change log, on both backends


def test_changes_replay_in_append_order_with_their_photos_and_answers(journal: LiveStore | PostgresStore):
    answers = [put(journal, "A", 1, photos=3).existed, put(journal, "B", 2).existed, put(journal, "A", 3).existed,
               journal.append("remove", "B", "build", "model").existed,
               put(journal, "15970", 4, in_build=True).existed,
               journal.append("remove", "4242", "build", "model", in_build=True).existed]
    assert answers == [False, False, True, True, True, True]  # existed just before: a build item exists unchanged
    changes = list(journal.changes_after(0))
    assert [(c.seq, c.op, c.item_id) for c in changes] == [
        (1, "put", "A"), (2, "put", "B"), (3, "put", "A"), (4, "remove", "B"), (5, "put", "15970"),
        (6, "remove", "4242")]
    first = changes[0]
    assert np.array_equal(first.embedding, vector(1)) and first.metadata["productDisplayName"] == "1"
    assert np.array_equal(first.more_embeddings, np.array([vector(1002), vector(1003)]))
    assert first.vectors().shape == (3, DIM) and changes[2].more_embeddings is None
    assert changes[3].embedding is None and changes[3].metadata is None
    assert journal.image(1) == (b"photo 1", "image/jpeg")
    assert journal.more_images(1) == [(b"photo 1-2", "image/png"), (b"photo 1-3", "image/png")]
    assert journal.more_images(3) == []
    with pytest.raises(UnknownItemError):
        journal.image(4)  # a remove has no photo
    assert [c.seq for c in journal.changes_after(1, through=3)] == [2, 3]
    assert journal.last_seq() == 6 and journal.count_after(4) == 2
    with pytest.raises(StaleDatabaseError, match="ends at change 6.*holds changes up to 9"):
        journal.check_holds(9, "some-build")
    journal.check_holds(6, "some-build")


def test_a_remove_of_a_missing_item_raises_and_writes_nothing(journal: LiveStore | PostgresStore):
    for item_id in ("never-added", "15970"):  # the second is no build item: in_build is False
        with pytest.raises(UnknownItemError, match=item_id):
            journal.append("remove", item_id, "build", "model")
    assert journal.last_seq() == 0
    put(journal, "A", 1)
    assert journal.append("remove", "A", "build", "model").existed
    with pytest.raises(UnknownItemError):
        journal.append("remove", "A", "build", "model")
    assert journal.last_seq() == 2 and [c.op for c in journal.changes_after(0)] == ["put", "remove"]


def test_two_replicas_creating_one_item_at_once_create_it_exactly_once(location: str, tmp_path: Path):
    """Two stores on one journal (two replicas), two threads each, every thread putting the same new id at the same
    moment: exactly one hears "created"; then all removing it at once: exactly one succeeds."""
    replicas = [open_journal(location, tmp_path), open_journal(location, tmp_path)]
    ids = [f"RACE-{n}" for n in range(10)]
    writers = 4
    start = threading.Barrier(writers)
    created: dict[str, list[bool]] = {item_id: [] for item_id in ids}
    removed: dict[str, list[bool]] = {item_id: [] for item_id in ids}
    lock = threading.Lock()

    def race(number: int) -> None:
        store = replicas[number % 2]
        try:
            for n, item_id in enumerate(ids):
                start.wait()
                change = put(store, item_id, 100 * number + n)
                start.wait()
                try:
                    store.append("remove", item_id, "build", "model")
                    gone = True
                except UnknownItemError:
                    gone = False
                with lock:
                    created[item_id].append(not change.existed)
                    removed[item_id].append(gone)
        except BaseException:
            start.abort()  # the others stop waiting for this thread
            raise

    assert in_threads(writers, race) == []
    assert all(sum(answers) == 1 and len(answers) == writers for answers in created.values()), created
    assert all(sum(answers) == 1 for answers in removed.values()), removed
    assert replicas[0].last_seq() == len(ids) * (writers + 1)
    for store in replicas:
        store.close()


def test_a_follower_never_skips_a_change_committed_after_it_read(location: str, tmp_path: Path):
    """Replicas append while another follows with changes_after(applied): it sees every change exactly once, in
    seq order (a seq committed after a larger one would be skipped for good)."""
    writers = [open_journal(location, tmp_path) for _ in range(3)]
    follower = open_journal(location, tmp_path)
    done = threading.Event()
    seen: list[int] = []

    def write(number: int) -> None:
        for n in range(25):
            put(writers[number], f"F{number}-{n % 4}", n)

    def follow() -> None:
        applied = 0
        while True:
            finished = done.is_set()  # read before the journal: the last pass sees every write
            for change in follower.changes_after(applied):
                seen.append(change.seq)
                applied = change.seq
            if finished:
                return
            done.wait(0.005)  # pacing, not timing: the last pass after done is what the test relies on

    reader = threading.Thread(target=follow)
    reader.start()
    errors = in_threads(3, write)
    done.set()
    reader.join()
    assert errors == []
    every = [c.seq for c in follower.changes_after(0)]
    assert len(every) == 75 and seen == every  # nothing skipped, nothing twice, in order


def test_reembeddings_are_cached_per_change_and_model(journal: LiveStore | PostgresStore):
    put(journal, "A", 1)
    put(journal, "B", 2, photos=3)
    assert journal.reembedding(1, "other-model") is None
    journal.save_reembedding(1, "other-model", vector(7))
    assert np.array_equal(journal.reembedding(1, "other-model"), vector(7))
    several = np.stack([vector(8), vector(9), vector(10)])
    journal.save_reembedding(2, "other-model", several)  # one blob of the photos' rows
    assert np.array_equal(journal.reembedding(2, "other-model").reshape(-1, DIM), several)
    journal.save_reembedding(1, "other-model", vector(11))  # saved again: replaced
    assert np.array_equal(journal.reembedding(1, "other-model"), vector(11))
    assert journal.reembedding(1, "third-model") is None
    journal.save_reembedding(99, "other-model", vector(12))  # no such change (compacted away): nothing cached
    assert journal.reembedding(99, "other-model") is None


def test_a_reload_requested_through_one_replica_is_seen_by_the_others(location: str, tmp_path: Path):
    first, second = open_journal(location, tmp_path), open_journal(location, tmp_path)
    assert first.reload_requests() == second.reload_requests() == 0
    assert first.request_reload() == 1 and second.request_reload() == 2
    assert first.reload_requests() == second.reload_requests() == 2 and first.last_seq() == 0  # no change written


def test_one_read_gives_a_follower_the_build_switch_and_the_reload_requests(location: str, tmp_path: Path):
    journal = open_journal(location, tmp_path)
    assert journal.signals() == (None, 0)
    journal.announce_build("build-v1", 1234.5)
    journal.request_reload()
    journal.request_reload()
    assert journal.signals() == (journal.build_switch(), journal.reload_requests()) == (("build-v1", 1234.5), 2)
    reads: list = []
    read = journal._read
    journal._read = lambda work: reads.append(work) or read(work)
    journal.signals()
    assert len(reads) == 1


def test_compaction_keeps_the_latest_change_of_every_item(journal: LiveStore | PostgresStore):
    for n in range(12):  # seq n + 1 puts ID-(n % 4) with 1 + n % 3 photos
        put(journal, f"ID-{n % 4}", n, photos=1 + n % 3)
    journal.save_reembedding(1, "other-model", vector(1))  # of a change compaction drops
    journal.save_reembedding(11, "other-model", vector(11))  # of one it keeps
    journal.append("remove", "ID-3", "build", "model")  # seq 13
    put(journal, "ID-0", 50)  # seq 14, after the fold: never dropped, and it supersedes ID-0's seq 9
    replay_before = {c.item_id: (c.op, c.seq) for c in journal.changes_after(0)}
    result = journal.compact(13)
    kept = list(journal.changes_after(0))
    assert result.changes_dropped == 10 and result.changes_kept == len(kept) == 4
    assert [c.seq for c in kept] == [10, 11, 13, 14]
    assert {c.item_id: (c.op, c.seq) for c in kept} == replay_before  # the same final state
    assert journal.image(10) == (b"photo 9", "image/jpeg")
    assert journal.more_images(11) == [(b"photo 10-2", "image/png")] and journal.more_images(9) == []
    assert journal.reembedding(1, "other-model") is None
    assert np.array_equal(journal.reembedding(11, "other-model"), vector(11))
    assert journal.last_seq() == 14 and result.bytes_before > 0 and result.bytes_after > 0
    assert "10 superseded changes dropped, 4 kept" in result.line()
    put(journal, "ID-9", 60)
    assert journal.last_seq() == 15  # seqs are never reused


def test_fold_and_the_command_line_read_the_journal_through_open_journal(tiny_project: Path, location: str,
                                                                        tmp_path: Path, request: pytest.FixtureRequest,
                                                                        capsys: pytest.CaptureFixture):
    store = open_journal(location, tmp_path)
    put(store, "SKU-A", 1, photos=2)
    put(store, "SKU-B", 2)
    store.append("remove", "SKU-B", "build", "model")
    put(store, "15970", 3, in_build=True)
    summary = fold(store, tiny_project / "artifacts", tmp_path / "delta")
    assert summary.through_seq == 4 and summary.items == 2 and summary.removed == 1
    assert summary.fold_id == f"{store.store_id}-4" and store.latest_fold()["through_seq"] == 4
    assert sorted(p.name for p in (tmp_path / "delta" / "images").iterdir()) == [
        "1000000000000000-2.png", "1000000000000000.jpg", "15970.jpg"]
    assert (tmp_path / "delta" / "images" / "1000000000000000-2.png").read_bytes() == b"photo 1-2"
    assert store.numeric_ids(["SKU-A", "SKU-C"], set(), 10**15) == {"SKU-A": 10**15, "SKU-C": 10**15 + 1}
    store.close()
    artifacts = ["--artifacts", str(tiny_project / "artifacts")]
    assert main([*artifacts, "fold", "--live-db", location, "--out", str(tmp_path / "again")]) == 0
    assert "changes 1..4 -> 2 items to add or replace, 1 catalogue ids to drop" in capsys.readouterr().out
    assert main([*artifacts, "compact", "--live-db", location]) == 2  # no build holds a fold of this journal
    assert "holds no fold of this live database" in capsys.readouterr().err
    missing = str(tmp_path / "absent.db")
    if location.startswith("postgresql://"):
        missing = request.getfixturevalue("pg_cluster").url()  # a database holding no journal
    assert main([*artifacts, "fold", "--live-db", missing, "--out", str(tmp_path / "none")]) == 2
    assert "no live catalogue database at" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------------------ the live catalogue on PostgreSQL


def test_a_put_through_one_catalogue_is_served_by_another_on_the_same_journal(tiny_project: Path,
                                                                             searcher: Searcher, pg_url: str,
                                                                             pg_cluster: PgCluster, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture):
    first = LiveCatalogue.load(tiny_project / "artifacts", pg_url, root=tiny_project)  # as `lookalike serve` does
    second = LiveCatalogue.open(searcher, open_journal(pg_url, tiny_project))
    image = Path(searcher.resolve_path(3)).read_bytes()
    result = first.put("SKU-PG", image, META)
    assert result.created and "SKU-PG" not in second
    assert second.caught_up_to(result.seq) and "SKU-PG" in second
    assert second.item("SKU-PG").metadata == META and second.image("SKU-PG") == (image, "image/jpeg")
    assert not second.put("SKU-PG", image, {**META, "gender": "Women"}).created  # it is the first one's item
    build_item = str(searcher.items["id"][5])
    removal = second.remove(build_item)
    assert first.caught_up_to(removal) and build_item not in first
    assert first.item("SKU-PG").metadata["gender"] == "Women"
    probe = searcher.embeddings[3]
    assert [h.id for h in first.search_vector(probe, 70).matches] == \
        [h.id for h in second.search_vector(probe, 70).matches]
    page = LiveCatalogue.for_page(searcher, pg_url)  # the search page: read-only
    assert page is not None and page.store.readonly and "SKU-PG" in page and build_item not in page
    assert LiveCatalogue.for_page(searcher, pg_cluster.url()) is None  # a database holding no journal yet
    duplicates = ["--artifacts", str(tiny_project / "artifacts"), "duplicates", "--out", str(tmp_path / "d.csv")]
    assert main([*duplicates, "--live-db", pg_url]) == 0  # the command line reads the same journal
    assert f"live changes through {removal}" in capsys.readouterr().out


# ------------------------------------------------------------------------------ outages and crashes (PostgreSQL)


def test_durability_settings_are_enforced_on_every_connection(pg_cluster: PgCluster, pg_url: str, tmp_path: Path):
    """A kill -9 of the client passes even with synchronous_commit=off: check the settings themselves, on the
    connections of two threads, when the database's own default is off; and a server without fsync is refused."""
    database = pg_url.split("?", 1)[0].rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute(f"ALTER DATABASE {database} SET synchronous_commit = off")
    store = open_journal(pg_url, tmp_path)
    expected = {"backend": "postgresql", "synchronous_commit": "on", "fsync": "on", "full_page_writes": "on"}
    seen: list[dict] = []
    assert in_threads(2, lambda _: seen.append(store.durability())) == []
    assert len(seen) == 2 and all(settings.items() >= expected.items() for settings in seen), seen
    pg_cluster.configure("fsync", "off")
    try:
        with pytest.raises(LiveError, match="fsync=off"):
            open_journal(pg_url, tmp_path)
    finally:
        pg_cluster.configure("fsync", None)


def test_a_stopped_server_refuses_writes_as_busy_and_loses_nothing(pg_cluster: PgCluster, pg_url: str,
                                                                    tmp_path: Path):
    store = open_journal(pg_url, tmp_path)
    acknowledged = [put(store, f"OUT-{n}", n).seq for n in range(5)]
    pg_cluster.stop("fast")
    try:
        with pytest.raises(JournalBusyError):
            put(store, "OUT-5", 5)
        with pytest.raises(JournalBusyError):
            store.append("remove", "OUT-0", "build", "model")
        with pytest.raises(JournalBusyError):  # reads too: the service keeps searching from memory
            store.last_seq()
        with pytest.raises(JournalBusyError):
            open_journal(pg_url, tmp_path)
    finally:
        pg_cluster.start()
    after = put(store, "OUT-6", 6)  # the same store: it connects again
    assert not after.existed and after.seq > acknowledged[-1]
    changes = list(open_journal(pg_url, tmp_path).changes_after(0))
    assert [c.item_id for c in changes] == [f"OUT-{n}" for n in (0, 1, 2, 3, 4, 6)]  # none of the refused ones
    assert [c.seq for c in changes][:5] == acknowledged


def test_a_writer_held_over_the_wait_is_refused_as_busy_and_writes_nothing(pg_url: str):
    """Another replica's transaction (a long compaction) holds the write lock past ``busy_seconds``: the write is
    refused as busy, its connection stays usable, and once the lock is free it goes through."""
    store = PostgresStore(pg_url, busy_seconds=0.2)
    put(store, "HELD-0", 0)
    with psycopg.connect(pg_url) as holder:  # not autocommit: the lock lasts until the transaction ends
        holder.execute("LOCK TABLE changes IN EXCLUSIVE MODE")
        with pytest.raises(JournalBusyError, match="lock timeout"):
            put(store, "HELD-1", 1)
        assert store.last_seq() == 1  # reads go on meanwhile
        holder.rollback()
    assert put(store, "HELD-1", 1).seq == 2 and [c.item_id for c in store.changes_after(0)] == ["HELD-0", "HELD-1"]


CHILD = r"""
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from lookalike.live.journal import open_journal
store = open_journal(sys.argv[1], sys.argv[2])
for n in range(1_000_000):
    change = store.append("put", f"K-{n % 7}", "build", "model", np.full(8, n, np.float32), {"n": str(n)},
                          b"photo %d" % n, "image/jpeg")
    sys.stdout.write(f"{change.seq} K-{n % 7} {n}\n")
    sys.stdout.flush()
"""


def test_kill_9_of_a_writer_then_a_server_crash_lose_no_acknowledged_change(pg_cluster: PgCluster, pg_url: str,
                                                                          tmp_path: Path):
    """A process appending in a loop, killed with SIGKILL mid-write; then the server itself crashes (pg_ctl stop -m
    immediate: no checkpoint, recovery from the WAL). Every change the writer printed as acknowledged is there."""
    open_journal(pg_url, tmp_path).close()  # the schema made beforehand
    with (tmp_path / "child.err").open("w") as errors:
        child = subprocess.Popen([sys.executable, "-c", CHILD, pg_url, str(REPO)], stdout=subprocess.PIPE,
                                 stderr=errors, text=True)
        lines = []
        while len(lines) < 40:
            line = child.stdout.readline()
            assert line, f"the writer stopped: {(tmp_path / 'child.err').read_text()[-2000:]}"
            lines.append(line)
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    lines += rest.split("\n")[:-1]  # complete lines only: the last one may have been cut by the kill
    acknowledged = {int(seq): (item_id, n) for seq, item_id, n in (line.split() for line in lines)}
    pg_cluster.stop("immediate")
    pg_cluster.start()
    journal = {c.seq: (c.item_id, c.metadata["n"]) for c in open_journal(pg_url, tmp_path).changes_after(0)}
    assert all(journal.get(seq) == answer for seq, answer in acknowledged.items())
    assert len(journal) - len(acknowledged) in (0, 1)  # at most the append in flight committed unannounced


# ------------------------------------------------------------------------------ the service on PostgreSQL


def test_two_servers_on_one_postgresql_journal_serve_each_others_writes(tiny_project: Path, searcher: Searcher,
                                                                       pg_cluster: PgCluster, pg_url: str,
                                                                       tmp_path: Path):
    """`lookalike serve --live-db postgresql://...` twice (two replicas): a write through one is read through the
    other (min_seq) and known to exist there; with the database down a write is a 503 with Retry-After, nothing
    stored, while reads answer from memory; once it is back, writes are taken again."""
    image = Path(searcher.resolve_path(3)).read_bytes()
    servers = []
    try:
        for n in range(2):
            servers.append(Server(tiny_project / "artifacts", pg_url, tmp_path / f"server-{n}.log"))
        first, second = servers
        written = http_put(first.client, "SKU-HTTP", image)
        assert written.status_code == 201, written.text
        read = second.client.get("/v1/items/SKU-HTTP", params={"min_seq": written.json()["seq"]})
        assert read.status_code == 200 and read.json()["source"] == "live", read.text
        assert http_put(second.client, "SKU-HTTP", image, gender="Women").status_code == 200  # replaced, not created
        misses = 0
        for n in range(200):  # read your writes: a put through A, then a get through B with A's position
            put_a = http_put(first.client, "SKU-RYW", image, productDisplayName=f"version {n}")
            got = second.client.get("/v1/items/SKU-RYW", params={"min_seq": put_a.json()["seq"]})
            misses += got.status_code != 200 or got.json()["metadata"]["productDisplayName"] != f"version {n}"
        assert misses == 0
        pg_cluster.stop("fast")
        try:
            refused = http_put(first.client, "SKU-DOWN", image)
            assert refused.status_code == 503 and refused.json()["error"] == "journal_busy", refused.text
            assert int(refused.headers["Retry-After"]) > 0
            assert first.client.get("/v1/items/SKU-HTTP").status_code == 200  # searches answer from memory
        finally:
            pg_cluster.start()
        taken = http_put(first.client, "SKU-DOWN", image)
        assert taken.status_code == 201, taken.text
        read = second.client.get("/v1/items/SKU-DOWN", params={"min_seq": taken.json()["seq"]})
        assert read.status_code == 200, read.text
        changed = [c.item_id for c in open_journal(pg_url, tmp_path).changes_after(0)]
        assert changed == ["SKU-HTTP", "SKU-HTTP", *["SKU-RYW"] * 200, "SKU-DOWN"]
    finally:
        for server in servers:
            server.stop()
