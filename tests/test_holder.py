"""The catalogue keeper (lookalike/live/holder.py): retries with backoff, swaps builds with no write lost.

Against the scratch pipeline project of conftest.py; the "builds" are the same searcher under other manifests.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from lookalike.live import CatalogueHolder, LiveCatalogue, LiveStore
from lookalike.search.engine import Searcher

META = {"articleType": "Tshirts", "gender": "Men", "baseColour": "Blue", "masterCategory": "Apparel"}


@pytest.fixture(scope="module")
def searcher(tiny_project: Path) -> Searcher:
    return Searcher.load(tiny_project / "artifacts", root=tiny_project)


def as_build(searcher: Searcher, build_id: str) -> Searcher:
    return dataclasses.replace(searcher, manifest={**searcher.manifest, "build_id": build_id})


def photo(searcher: Searcher, row: int) -> bytes:
    return Path(searcher.resolve_path(row)).read_bytes()


def test_a_failed_load_is_retried_with_backoff_and_reported(searcher: Searcher, tmp_path: Path):
    attempts = []

    def load() -> LiveCatalogue:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("/secret/server/path/faiss.index: No such file")
        return LiveCatalogue.open(searcher, LiveStore(tmp_path / "live.db"))

    holder = CatalogueHolder(load, lambda: "b1", lambda error: "the build cannot be read", backoff_seconds=(10, 40))
    assert holder.load_now() is False
    failure = holder.status()["reload_failure"]
    assert failure["attempts"] == 1 and failure["reason"] == "the build cannot be read"
    assert 9 < failure["next_attempt_in_s"] <= 10
    assert holder.load_now() is False and 19 < holder.status()["reload_failure"]["next_attempt_in_s"] <= 20
    assert holder.load_now() is True and holder.catalogue is not None and holder.failure is None
    assert len(attempts) == 3


def test_the_loop_waits_for_the_backoff_before_retrying(searcher: Searcher, tmp_path: Path):
    attempts = []

    def load() -> LiveCatalogue:
        attempts.append(1)
        raise OSError("no build yet")

    holder = CatalogueHolder(load, follow_seconds=0.01, backoff_seconds=(3600, 3600))
    holder.start()
    try:
        assert not holder.wait_until_loaded(0.5)
        assert len(attempts) == 1 and holder.alive  # one attempt, then the backoff: no busy retry loop
        holder.request_reload()  # told to: tries at once
        deadline = threading.Event()
        deadline.wait(0.3)
        assert len(attempts) == 2
    finally:
        holder.stop()
    assert not holder.alive


def test_a_swap_loses_no_write_made_while_the_new_build_loaded(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    builds = {"published": "b1"}
    loaded = threading.Event()
    proceed = threading.Event()

    def load() -> LiveCatalogue:
        catalogue = LiveCatalogue.open(as_build(searcher, builds["published"]), LiveStore(db))
        if builds["published"] == "b2":
            loaded.set()
            proceed.wait(30)  # writes land on the old catalogue meanwhile
        return catalogue

    holder = CatalogueHolder(load, lambda: builds["published"])
    assert holder.load_now()
    old = holder.catalogue
    holder.put("BEFORE", photo(searcher, 1), META)
    builds["published"] = "b2"
    swapper = threading.Thread(target=holder.check_build)
    swapper.start()
    assert loaded.wait(60)
    holder.put("DURING", photo(searcher, 2), META)  # on the old one: the new one replayed the journal before it
    holder.remove(str(searcher.items["id"][3]))
    proceed.set()
    swapper.join(60)
    new = holder.catalogue
    assert new is not old and new.build_id == "b2" and holder.swaps == 1
    assert {"BEFORE", "DURING"} <= set(new.live_ids()) and str(searcher.items["id"][3]) not in new
    assert holder.check_build() is False  # the published build is the one served: nothing to do
    holder.put("AFTER", photo(searcher, 4), META)
    assert "AFTER" in new and "AFTER" not in old


def test_a_write_racing_the_swap_is_visible_at_once(searcher: Searcher, tmp_path: Path):
    """A put that took the old catalogue just before the swap still shows on the new one when it returns."""
    db = tmp_path / "live.db"
    holder = CatalogueHolder(lambda: LiveCatalogue.open(searcher, LiveStore(db)))
    assert holder.load_now()
    old = holder.catalogue
    new = LiveCatalogue.open(as_build(searcher, "b2"), LiveStore(db))
    original_put = old.put

    def put_then_swap(*args, **kwargs):
        result = original_put(*args, **kwargs)
        holder.catalogue = new  # the swap lands between this write and the holder's return
        return result

    old.put = put_then_swap  # type: ignore[method-assign]
    holder.put("RACE", photo(searcher, 5), META)
    assert "RACE" in holder.catalogue and holder.catalogue is new


def test_a_failed_reload_keeps_the_old_build_serving(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    state = {"published": "b1", "broken": False}

    def load() -> LiveCatalogue:
        if state["broken"]:
            raise ValueError("index damaged")
        return LiveCatalogue.open(as_build(searcher, state["published"]), LiveStore(db))

    holder = CatalogueHolder(load, lambda: state["published"], backoff_seconds=(3600, 3600))
    assert holder.load_now()
    state.update(published="b2", broken=True)
    assert holder.check_build() is False and holder.catalogue.build_id == "b1"
    assert holder.status()["reload_failure"]["build_id"] == "b2"
    assert holder.check_build() is False and holder.status()["reload_failure"]["attempts"] == 1  # backoff holds
    state["broken"] = False
    assert holder.check_build(forced=True) is True and holder.catalogue.build_id == "b2"
    assert holder.failure is None


def test_a_build_republished_under_its_id_with_another_manifest_is_swapped_in(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    state = {"version": "b1:aaaa", "threshold": 0.97}

    def load() -> LiveCatalogue:
        build = dataclasses.replace(searcher, manifest={**searcher.manifest, "build_id": "b1",
                                                        "near_duplicates": {"cosine": state["threshold"]}})
        return LiveCatalogue.open(build, LiveStore(db))

    holder = CatalogueHolder(load, lambda: state["version"])
    assert holder.load_now() and holder.check_build() is False  # the same version: nothing to do
    state.update(version="b1:bbbb", threshold=0.95)  # recalibrated, republished under the same build id
    assert holder.check_build() is True
    assert holder.catalogue.searcher.manifest["near_duplicates"]["cosine"] == 0.95 and holder.swaps == 1
    assert holder.check_build() is False


def test_a_swap_that_fails_to_catch_up_is_reported_and_retried(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    state = {"published": "b1", "refresh_fails": False}

    class FailingCatalogue(LiveCatalogue):
        def refresh(self) -> int:
            if state["refresh_fails"]:
                raise RuntimeError("database is locked")
            return super().refresh()

    def load() -> LiveCatalogue:
        return FailingCatalogue.open(as_build(searcher, state["published"]), LiveStore(db))

    holder = CatalogueHolder(load, lambda: state["published"], backoff_seconds=(0.0, 0.0))
    assert holder.load_now()
    state.update(published="b2", refresh_fails=True)
    assert holder.check_build() is False and holder.catalogue.build_id == "b1"  # the old build keeps serving
    assert holder.status()["reload_failure"]["reason"] == "database is locked"
    state["refresh_fails"] = False
    assert holder.check_build() is True and holder.catalogue.build_id == "b2"  # retried, not forgotten
    assert holder.failure is None


def test_an_admin_reload_reaches_every_process_on_the_journal(searcher: Searcher, tmp_path: Path):
    db = tmp_path / "live.db"
    loads = {"first": 0, "second": 0}

    def loader(name: str):
        def load() -> LiveCatalogue:
            loads[name] += 1
            return LiveCatalogue.open(as_build(searcher, "b1"), LiveStore(db))
        return load

    first, second = CatalogueHolder(loader("first")), CatalogueHolder(loader("second"), follow_seconds=0.02)
    assert first.load_now() and second.load_now()
    second.start()
    try:
        threading.Event().wait(0.2)  # the second has read the journal's reload count
        first.request_reload_everywhere(here=False)
        deadline = threading.Event()
        for _ in range(100):
            if loads["second"] == 2:
                break
            deadline.wait(0.05)
        assert loads["second"] == 2 and loads["first"] == 1  # the other process reloaded; this one was not told to
    finally:
        second.stop()


class Clock:
    """A wall clock the test moves by hand: the agreed switch instant is then exact, not raced."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_every_server_on_one_journal_switches_to_a_new_build_at_the_same_agreed_instant(searcher: Searcher,
                                                                                         tmp_path: Path):
    """The first server to load a new build announces an instant in the journal; the others load it beside their
    old one and switch at that instant too, in the request path; a server started meanwhile waits for it (so no
    client sees the new build on one server and then the old one on another); one that loads late switches at
    once and says so."""
    db, clock = tmp_path / "live.db", Clock()
    builds = {"published": "b1"}

    def load() -> LiveCatalogue:
        return LiveCatalogue.open(as_build(searcher, builds["published"]), LiveStore(db))

    def server() -> CatalogueHolder:
        return CatalogueHolder(load, lambda: builds["published"], switch_delay_seconds=10, clock=clock)

    first, second = server(), server()
    assert first.load_now() and second.load_now()
    builds["published"] = "b2"
    assert first.check_build() is True  # loaded and announced, not yet served
    assert first.catalogue.build_id == "b1" and first.status()["pending_build"] == {"build_id": "b2",
                                                                                    "switch_in_s": 10.0}
    assert LiveStore(db).build_switch()[1] == clock.now + 10
    clock.now += 4
    second._follow_reload_requests(second.catalogue)  # the journal tells the other server before its own poll
    assert second._look_now
    assert second.check_build() is True and second.catalogue.build_id == "b1"
    assert second.status()["pending_build"]["switch_in_s"] == 6.0  # the same instant, not its own delay
    started = server()
    assert started.load_now() is False and started.catalogue is None  # the others still serve b1: not ready yet
    first.put("DURING", photo(searcher, 1), META)  # written to b1 while b2 waits
    for other in (second, started):
        other._pending.catalogue.refresh()  # what each keeper does every round
    clock.now += 5.99
    assert {first.catalogue.build_id, second.catalogue.build_id} == {"b1"}
    clock.now += 0.01
    for holder in (first, second, started):  # the first request at the instant switches, whichever server
        assert holder.catalogue.build_id == "b2"
        assert "DURING" in holder.catalogue
    assert first.swaps == second.swaps == 1 and first.late_switches == 0
    late = server()  # loaded b1's successor only after the instant: switches at once, counted
    builds["published"] = "b1"
    assert late.load_now()
    builds["published"] = "b2"
    assert late.check_build() is True and late.catalogue.build_id == "b2" and late.late_switches == 1
